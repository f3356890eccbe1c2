"""Jobs per hour with one worker per GPU (issue 8), against ``meshforge serve --gpus``.

For each GPU count N (``--counts 1,2``) the whole service is started on one machine (the
embedded Redis, one worker per GPU, the API), N warm-up jobs are run (one per worker: the
first job of a worker pays for imports and for loading nvdiffrast's plugin), then
``N × --jobs-per-gpu`` jobs are submitted at once and timed from the first submission to the
last terminal status. While they run, ``nvidia-smi`` is sampled every second: every process
on a GPU must descend from the worker that was started for that GPU. After the largest N, a
drill kills one busy worker with SIGKILL: its job must be redelivered (and succeed) or fail
with a reason, and no job may stay running.

    python benchmarks/multigpu_bench.py --counts 1,2 --out benchmarks/results/multigpu.json

``--counts 0`` runs one CPU worker (no GPU), to try the script anywhere (use ``--model fusion``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve import TERMINAL, Serve  # noqa: E402
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))
MESHES = {"spot": "spot/spot.obj", "bob": "bob/bob_tri.obj", "ycb_banana": "ycb_banana/textured_simple_reoriented.obj",
          "water_bottle": "water_bottle/WaterBottle.gltf"}


class GpuSampler(threading.Thread):
    """Which processes use which GPU, sampled from nvidia-smi once a second."""

    def __init__(self, owner):
        super().__init__(daemon=True)
        self.owner = owner  # pid → GPU of the worker it descends from, resolved while it lives
        self.seen: dict[int, set[str]] = {}  # pid → GPU indices it was seen on
        self.owners: dict[int, str | None] = {}
        self.stop = threading.Event()
        self.bus_to_index = {}
        if self.available():
            for line in self._query("--query-gpu=index,pci.bus_id"):
                index, bus = (x.strip() for x in line.split(","))
                self.bus_to_index[bus] = index

    @staticmethod
    def available() -> bool:
        try:
            return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
        except FileNotFoundError:
            return False

    @staticmethod
    def _query(what: str) -> list[str]:
        out = subprocess.run(["nvidia-smi", what, "--format=csv,noheader"], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for line in self._query("--query-compute-apps=pid,gpu_bus_id"):
                pid, bus = (x.strip() for x in line.split(","))
                self.seen.setdefault(int(pid), set()).add(self.bus_to_index.get(bus, bus))
                if self.owners.get(int(pid)) is None:
                    self.owners[int(pid)] = self.owner(int(pid))


def worker_gpu(pid: int, workers: list[psutil.Process]) -> str | None:
    """The GPU (CUDA_VISIBLE_DEVICES) of the worker that ``pid`` is or descends from."""
    try:
        proc = psutil.Process(pid)
        chain = [proc] + proc.parents()
    except psutil.NoSuchProcess:
        return None
    for w in workers:
        if any(p.pid == w.pid for p in chain):
            return w.environ().get("CUDA_VISIBLE_DEVICES")
    return None


def summary(job: dict, model: str) -> dict:
    m = job["models"].get(model, {})
    return {"status": job["status"], "error": (job.get("error") or {}).get("code"),
            "quality": (m.get("quality") or {}).get("status"), "psnr": (m.get("quality") or {}).get("psnr")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,2", help="GPU counts to measure (0: one CPU worker)")
    ap.add_argument("--jobs-per-gpu", type=int, default=3)
    ap.add_argument("--model", default="nvdiffrec")
    ap.add_argument("--options", default="{}", help="job options JSON {model: {...}}")
    ap.add_argument("--meshes", default="spot,bob,ycb_banana")
    ap.add_argument("--data", default=str(SHARED / "data" / "meshes"))
    ap.add_argument("--work", default="/tmp/multigpu-bench")
    ap.add_argument("--no-drill", action="store_true")
    ap.add_argument("--job-timeout", type=float, default=600)
    ap.add_argument("--out")
    args = ap.parse_args()

    import meshforge

    work = Path(args.work)
    captures = []
    for name in args.meshes.split(","):
        path = work / "captures" / f"{name}.zip"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            meshforge.render_capture(Path(args.data) / MESHES[name], path)
        captures.append(path)
    options = json.loads(args.options)
    env = {"PYTHONUNBUFFERED": "1", "MESHFORGE_HEARTBEAT_S": "1", "MESHFORGE_STALE_AFTER_S": "10",
           "MESHFORGE_REDELIVER_AFTER_S": "5", "MESHFORGE_JANITOR_INTERVAL_S": "1"}
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    for n in counts:
        gpus = ",".join(str(i) for i in range(n)) or None
        service = Serve(work / f"run-{n}-{int(time.time())}", {**os.environ, **env}, gpus)
        row: dict = {"gpus": n, "workers": max(n, 1)}
        try:
            t_start = time.monotonic()
            service.wait_ready(args.model, max(n, 1))
            row["startup_s"] = round(time.monotonic() - t_start, 1)
            warm = [service.submit(captures[i % len(captures)], args.model, options) for i in range(max(n, 1))]
            service.wait_all(warm, args.job_timeout)
            row["warmup_s"] = round(time.monotonic() - t_start - row["startup_s"], 1)

            sampler = GpuSampler(lambda pid: worker_gpu(pid, service.workers())) if n else None
            if sampler:
                sampler.start()
            count = max(n, 1) * args.jobs_per_gpu
            t0 = time.monotonic()
            ids = [service.submit(captures[i % len(captures)], args.model, options) for i in range(count)]
            submitted = time.monotonic() - t0
            done = service.wait_all(ids, args.job_timeout)
            elapsed = max(j["seen_done_s"] for j in done.values()) - t0 if done else float("nan")
            placement = {}
            if sampler:
                sampler.stop.set()
                for pid, on in sampler.seen.items():
                    placement[pid] = {"on_gpus": sorted(on), "worker_gpu": sampler.owners.get(pid)}
            jobs = [summary(done[i], args.model) if i in done else {"status": "not finished"} for i in ids]
            row.update({
                "jobs": count, "submit_s": round(submitted, 2), "elapsed_s": round(elapsed, 1),
                "jobs_per_hour": round(3600 * count / elapsed, 1),
                "succeeded": sum(j["status"] == "succeeded" for j in jobs),
                "statuses": jobs,
                "gpu_processes": placement,
                "each_process_on_its_workers_gpu": all(
                    v["on_gpus"] == [v["worker_gpu"]] for v in placement.values() if v["worker_gpu"] is not None),
                "gpu_processes_not_traced_to_a_worker": sum(v["worker_gpu"] is None for v in placement.values()),
            })
            if not args.no_drill and n == max(counts):
                row["kill_drill"] = kill_drill(service, captures, args, options)
        finally:
            service.stop()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("statuses", "gpu_processes")}), flush=True)

    base = next((r for r in rows if r["gpus"] == 1), None)
    for r in rows:
        if base and r["gpus"] > 1:
            r["scaling_vs_linear"] = round(r["jobs_per_hour"] / (base["jobs_per_hour"] * r["gpus"]), 3)
    import torch

    result = {"benchmark": "multigpu", "model": args.model, "options": options, "rows": rows,
              "machine": {"gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                          "cores": os.cpu_count(), "python": platform.python_version()},
              "command": "python benchmarks/multigpu_bench.py " + " ".join(sys.argv[1:])}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({r["gpus"]: {k: r.get(k) for k in ("jobs_per_hour", "scaling_vs_linear", "succeeded", "jobs",
                                                       "each_process_on_its_workers_gpu")} for r in rows}))


def kill_drill(service: Serve, captures: list[Path], args, options: dict) -> dict:
    """SIGKILL a worker while it runs a job: the job must be redelivered or fail with a reason."""
    ids = [service.submit(captures[i % len(captures)], args.model, options) for i in range(len(service.workers()))]
    victim_job, victim = None, None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim is None:
        for job_id in ids:
            if service.http.get(f"/jobs/{job_id}").json()["status"] == "running":
                victim_job = job_id
                break
        if victim_job:
            time.sleep(3.0)  # well inside the model run
            busy = [w for w in service.workers() if w.children(recursive=True)]
            victim = busy[0] if busy else None
        time.sleep(0.2)
    if victim is None:
        return {"error": "no busy worker found to kill"}
    victim_gpu = victim.environ().get("CUDA_VISIBLE_DEVICES")
    victim.kill()
    t_kill = time.monotonic()
    done = service.wait_all(ids, args.job_timeout)
    jobs = {i: summary(done[i], args.model) if i in done else {"status": "not finished"} for i in ids}
    return {"killed_worker_gpu": victim_gpu, "jobs": jobs, "all_terminal": len(done) == len(ids),
            "none_running": all(j["status"] in TERMINAL for j in jobs.values()),
            "failed_have_reason": all(j["error"] for j in jobs.values() if j["status"] == "failed"),
            "last_terminal_after_kill_s": round(max(j["seen_done_s"] for j in done.values()) - t_kill, 1)
            if done else None,
            "workers_after": len(service.workers())}


if __name__ == "__main__":
    main()
