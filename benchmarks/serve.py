"""``meshforge serve`` in a child process, for the benchmarks that measure the whole service.

The embedded Redis, the workers and the API (which runs in the child's main process, so its
memory is ``psutil.Process(serve.proc.pid)``) start in a new process session; :meth:`Serve.stop`
ends the whole group. Used by load.py (issue 7) and multigpu_bench.py (issue 8).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from meshforge_service.store import TERMINAL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service" / "tests"))
from servicekit import free_port  # noqa: E402


class Serve:
    """``meshforge serve --data-dir DATA_DIR [--gpus GPUS]`` with exactly ``env`` as its environment."""

    def __init__(self, data_dir: Path, env: dict, gpus: str | None = None, timeout: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "meshforge.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        if gpus:
            cmd += ["--gpus", gpus]
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "serve.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def wait_ready(self, model: str, workers: int = 1, timeout: float = 180) -> None:
        """Until /ready answers and ``workers`` workers can run ``model``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"meshforge serve exited; see {self.log_path}")
            try:
                models = self.http.get("/models").json()
                ok = [r for r in models["reconstructors"] if r["name"] == model and r.get("available")]
                if ok and self.http.get("/ready").status_code == 200 and len(self.workers()) >= workers:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{workers} worker(s) able to run {model} did not register in {timeout} s; "
                           f"see {self.log_path}")

    def workers(self) -> list[psutil.Process]:
        """The worker processes (on GPUs they carry theirs in CUDA_VISIBLE_DEVICES)."""
        out = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if "meshforge_service.workerd" in p.cmdline() and "--single" in p.cmdline():
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def submit(self, capture: Path, model: str, options: dict) -> str:
        with open(capture, "rb") as fh:
            r = self.http.post("/jobs", files={"file": (capture.name, fh, "application/zip")},
                               data={"models": model, "options": json.dumps(options)})
        r.raise_for_status()
        return r.json()["job_id"]

    def wait_all(self, ids: list[str], timeout: float) -> dict[str, dict]:
        """Poll until every job is terminal (or ``timeout``) -> {id: job, with ``seen_done_s`` added}."""
        deadline = time.monotonic() + timeout
        done: dict[str, dict] = {}
        while time.monotonic() < deadline and len(done) < len(ids):
            for job_id in ids:
                if job_id not in done:
                    job = self.http.get(f"/jobs/{job_id}").json()
                    if job["status"] in TERMINAL:
                        done[job_id] = job | {"seen_done_s": time.monotonic()}
            time.sleep(0.25)
        return done

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.http.close()
        self.log.close()
