"""The service's targets (issue 4), against a real API process on loopback.

1. Accepting a 60 MB+ capture (``POST /jobs`` until the 202) takes ≤ 1 s.
2. ``GET /jobs/{id}`` sustains ≥ 500 requests per second on 2 cores (wrk, 10 s).
3. The API process's memory stays flat while a 1 GiB upload streams in.

The API runs as ``uvicorn --factory meshforge_service.api:create_app`` (one process) on the
Redis at ``--redis-url``; no worker is started, so jobs stay queued and only the API is
measured.

    python benchmarks/service_bench.py --out benchmarks/results/service.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))


def big_capture(path: Path) -> int:
    """The sneaker sample with its views stored as uncompressed PNGs in a STORED ZIP: a valid ~75 MB capture."""
    sample = SHARED / "data" / "samples" / "sneaker"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for folder in ("multi_views", "depth_renders"):
            for png in sorted((sample / folder).glob("*.png")):
                buf = io.BytesIO()
                Image.open(png).save(buf, format="PNG", compress_level=0)
                zf.writestr(f"{folder}/{png.name}", buf.getvalue())
    return path.stat().st_size


class Api:
    def __init__(self, redis_url: str, work: Path):
        self.port = 18000 + os.getpid() % 1000
        self.env = {**os.environ, "MESHFORGE_REDIS_URL": redis_url, "MESHFORGE_DATA_DIR": str(work / "data"),
                    "MESHFORGE_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}", "MESHFORGE_MAX_UPLOAD_BYTES": str(1 << 30)}
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "meshforge_service.api:create_app",
                                      "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                                      "--no-access-log"], env=self.env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the API did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


def measure_accept(api: Api, capture: Path, runs: int) -> dict:
    times = []
    with httpx.Client(base_url=api.url, timeout=120) as client:
        for _ in range(runs + 1):
            t0 = time.perf_counter()
            with open(capture, "rb") as fh:
                r = client.post("/jobs", files={"file": ("big.zip", fh, "application/zip")})
            times.append(time.perf_counter() - t0)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
    times = times[1:]  # the first request warms the API up (plugin discovery, imports)
    return {"capture_bytes": capture.stat().st_size, "seconds_median": round(statistics.median(times), 3),
            "seconds_max": round(max(times), 3), "runs": [round(t, 3) for t in times], "job_id": job_id}


def measure_rate(api: Api, job_id: str, seconds: int, connections: int) -> dict:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the request-rate figure (apt-get install wrk)")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"{api.url}/jobs/{job_id}"],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"\s+(50|90|99)%\s+([\d.]+\w+)", out))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_second": rate, "latency": {f"p{k}": v for k, v in lat.items()},
            "non_2xx": int(errors.group(1)) if errors else 0, "wrk": f"wrk -t1 -c{connections} -d{seconds}s"}


def measure_upload_memory(api: Api, size: int) -> dict:
    proc = psutil.Process(api.proc.pid)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(proc.memory_info().rss)
            time.sleep(0.05)

    def body():
        boundary = b"----meshforge-bench"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="huge.zip"\r\n' \
              b"Content-Type: application/zip\r\n\r\n"
        chunk = os.urandom(1 << 20)
        sent = 0
        while sent < size:
            n = min(len(chunk), size - sent)
            yield chunk[:n]
            sent += n
        yield b"\r\n--" + boundary + b"--\r\n"

    before = proc.memory_info().rss
    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    r = httpx.post(api.url + "/jobs", content=body(), timeout=600,
                   headers={"content-type": "multipart/form-data; boundary=----meshforge-bench"})
    elapsed = time.perf_counter() - t0
    stop.set()
    return {"upload_bytes": size, "status": r.status_code, "code": r.json()["error"]["code"],
            "rss_before_mb": round(before / 2**20, 1), "rss_peak_mb": round(max(samples) / 2**20, 1),
            "rss_growth_mb": round((max(samples) - before) / 2**20, 1), "seconds": round(elapsed, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="meshforge-service-bench-"))
    capture = work / "big.zip"
    big_capture(capture)
    api = Api(args.redis_url, work)
    try:
        accept = measure_accept(api, capture, runs=5)
        rate = measure_rate(api, accept["job_id"], seconds=10, connections=16)
        memory = measure_upload_memory(api, (1 << 30) - (4 << 20))
    finally:
        api.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "service", "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                                                   "python": platform.python_version()},
              "accept_60mb": accept, "get_job_rate": rate, "upload_1gib_memory": memory,
              "command": "python benchmarks/service_bench.py"}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
