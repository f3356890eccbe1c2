"""The service under test: API and worker processes on loopback, against the real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import redis

REDIS_URL = os.environ.get("MESHFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FAST = '{"fusion": {"resolution": 96, "target_faces": 20000}, "previews": {"size": 128, "contact_sheet": false}}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """An API process and a worker supervisor, against one namespace and data directory."""

    def __init__(self, root: Path, env: dict):
        self.root = root
        self.port = free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "MESHFORGE_REDIS_URL": REDIS_URL,
                    "MESHFORGE_NAMESPACE": f"test-{uuid.uuid4().hex[:10]}", "MESHFORGE_DATA_DIR": str(root / "data"),
                    "MESHFORGE_HEARTBEAT_S": "1", "MESHFORGE_STALE_AFTER_S": "6", "MESHFORGE_REDELIVER_AFTER_S": "4",
                    "MESHFORGE_JANITOR_INTERVAL_S": "1", "MESHFORGE_CANCEL_GRACE_S": "5", **env}
        self.api: subprocess.Popen | None = None
        self.workers: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=60)

    @property
    def namespace(self) -> str:
        return self.env["MESHFORGE_NAMESPACE"]

    def _log(self, name: str):
        return open(self.root / f"{name}.log", "ab")

    def _sandbox(self) -> dict:
        """Its own empty working directory and TMPDIR, so that a stray write would show (issue 7)."""
        for name in ("cwd", "tmp"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        return {"cwd": self.root / "cwd", "env": {**self.env, "TMPDIR": str(self.root / "tmp")}}

    def start_api(self, wait: bool = True, **env) -> None:
        box = self._sandbox()
        self.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "meshforge_service.api:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            env={**box["env"], **env}, cwd=box["cwd"], stdout=self._log("api"), stderr=subprocess.STDOUT)
        if wait:
            self.wait_until(lambda: self._up("/health"), 30, "the API did not start")

    def start_workers(self, *args: str, wait: bool = True) -> None:
        box = self._sandbox()
        self.workers = subprocess.Popen([sys.executable, "-m", "meshforge_service.workerd", *args], env=box["env"],
                                        cwd=box["cwd"], stdout=self._log("workers"), stderr=subprocess.STDOUT)
        if wait:
            self.wait_until(lambda: self.worker_pids(), 60, "no worker registered")
            self.wait_until(lambda: self.models()["reconstructors"][0]["available"], 30, "workers not visible")

    def _up(self, path: str) -> bool:
        try:
            return self.http.get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the supervisor)."""
        if self.workers is None or self.workers.poll() is not None:
            return []
        out = []
        for p in psutil.Process(self.workers.pid).children():
            try:
                if "workerd" in " ".join(p.cmdline()):
                    out.append(p.pid)
            except psutil.Error:  # a killed worker not reaped yet (zombie) or gone meanwhile
                pass
        return out

    def model_processes(self) -> list[psutil.Process]:
        """Processes running a model right now (spawned children of the workers)."""
        out = []
        for pid in self.worker_pids():
            try:
                out += [c for c in psutil.Process(pid).children(recursive=True)
                        if "spawn_main" in " ".join(c.cmdline())]
            except psutil.NoSuchProcess:
                pass
        return out

    def stop_api(self, sig=signal.SIGTERM) -> None:
        if self.api and self.api.poll() is None:
            self.api.send_signal(sig)
            self.api.wait(30)

    def stop_workers(self, sig=signal.SIGTERM) -> None:
        if self.workers and self.workers.poll() is None:
            self.workers.send_signal(sig)
            try:
                self.workers.wait(30)
            except subprocess.TimeoutExpired:
                self.workers.kill()

    def stop(self) -> None:
        self.stop_workers()
        self.stop_api()
        self.http.close()

    # ── HTTP helpers ──────────────────────────────────────────────────────────────────────
    def submit(self, capture: Path, models: str | None = None, options: str | None = FAST, headers=None,
               expect: int = 202) -> dict:
        data = {}
        if models is not None:
            data["models"] = models
        if options is not None:
            data["options"] = options
        with open(capture, "rb") as fh:
            r = self.http.post("/jobs", files={"file": (capture.name, fh, "application/zip")}, data=data,
                               headers=headers or {})
        assert r.status_code == expect, r.text
        return r.json()

    def job(self, job_id: str, headers=None) -> dict:
        r = self.http.get(f"/jobs/{job_id}", headers=headers or {})
        assert r.status_code == 200, r.text
        return r.json()

    def models(self) -> dict:
        return self.http.get("/models").json()

    def wait_for(self, job_id: str, statuses, timeout: float = 180, headers=None) -> dict:
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id, headers)
            if job["status"] in statuses:
                return job
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout} s: {self.job(job_id, headers)}")

    def wait_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what} within {timeout} s; see {self.root}/*.log")


