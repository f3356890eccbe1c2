"""Load (issue 7): N concurrent clients submit, poll and download against `meshforge serve`.

Each client loops for ``--seconds``: submit a small capture (fusion, fast options), poll
``GET /jobs/{id}`` every 0.5 s until the job ends, download the bundle, start again. An error
is any transport failure, any 5xx, any status other than the expected one (202, 200) and any
job that fails. Jobs still running at the deadline are counted, not errors. Reported:
requests/s, jobs done, latency percentiles per endpoint, the API process's memory (sampled
every 50 ms; `meshforge serve` runs the API in its main process, Redis and the worker beside it).

    python benchmarks/load.py --clients 50 --seconds 120 --out benchmarks/results/load.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from reliability import _capture, _cpu  # noqa: E402
from serve import Serve  # noqa: E402

OPTIONS = '{"fusion": {"resolution": 64, "target_faces": 5000}, "previews": {"size": 64, "contact_sheet": false}}'


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"n": len(values), "p50_ms": round(q[49] * 1000, 1), "p90_ms": round(q[89] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="issue 7 load")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="meshforge-load-"))
    capture = _capture(work).read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHFORGE_")}
    serve = Serve(work / "data", env)
    base = serve.url
    try:
        serve.wait_ready("fusion", timeout=90)
        api = psutil.Process(serve.proc.pid)  # `meshforge serve` runs the API (uvicorn) in its own process
        rss, stop = [api.memory_info().rss], threading.Event()

        def sample():
            while not stop.wait(0.05):
                try:
                    rss.append(api.memory_info().rss)
                except psutil.Error:
                    return

        lat: dict[str, list[float]] = {"submit": [], "status": [], "download": []}
        errors, counts, lock = [], {"jobs_done": 0, "jobs_unfinished": 0, "bytes_downloaded": 0}, threading.Lock()
        end = time.monotonic() + args.seconds

        def timed(kind, fn):
            t0 = time.monotonic()
            r = fn()
            with lock:
                lat[kind].append(time.monotonic() - t0)
            return r

        def client(i: int):
            with httpx.Client(base_url=base, timeout=60) as c:
                while time.monotonic() < end:
                    try:
                        r = timed("submit", lambda: c.post("/jobs", files={"file": (f"c{i}.zip", capture)},
                                                           data={"options": OPTIONS}))
                        if r.status_code != 202:
                            raise AssertionError(f"submit {r.status_code} {r.text[:200]}")
                        job_id = r.json()["job_id"]
                        while True:
                            time.sleep(0.5)
                            r = timed("status", lambda: c.get(f"/jobs/{job_id}"))
                            if r.status_code != 200:
                                raise AssertionError(f"status {r.status_code} {r.text[:200]}")
                            status = r.json()["status"]
                            if status in ("succeeded", "failed", "cancelled") or time.monotonic() >= end:
                                break
                        if status not in ("succeeded", "failed", "cancelled"):
                            with lock:
                                counts["jobs_unfinished"] += 1
                            return
                        if status != "succeeded":
                            raise AssertionError(f"job {job_id} {status}: {r.json().get('error')}")
                        r = timed("download", lambda: c.get(f"/jobs/{job_id}/download"))
                        if r.status_code != 200:
                            raise AssertionError(f"download {r.status_code} {r.text[:200]}")
                        with lock:
                            counts["jobs_done"] += 1
                            counts["bytes_downloaded"] += len(r.content)
                    except (AssertionError, httpx.HTTPError) as exc:
                        with lock:
                            errors.append(f"client {i}: {type(exc).__name__}: {exc}")

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        stop.set()
        requests = sum(len(v) for v in lat.values())
        result = {
            "machine": {"nproc": os.cpu_count(), "cpu": _cpu(), "python": platform.python_version()},
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "clients": args.clients,
            "seconds": round(elapsed, 1), "requests": requests, "requests_per_s": round(requests / elapsed, 1),
            "errors": len(errors), "error_samples": errors[:10], **counts,
            "jobs_per_min": round(counts["jobs_done"] / elapsed * 60, 1),
            "latency": {k: percentiles(v) for k, v in lat.items()},
            "api_rss_mib": {"start": round(rss[0] / 2**20, 1), "peak": round(max(rss) / 2**20, 1),
                            "end": round(rss[-1] / 2**20, 1)},
        }
    finally:
        serve.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
