"""Fault drills of issue 7, against real API and worker processes on loopback.

- ``kill``: kill -9 the worker at a random moment of a fusion job; the job must end terminal
  (succeeded after redelivery, or failed with a reason); a bundle served as succeeded must be
  complete (report says succeeded, GLB/OBJ/texture whole, no temporary or partial files);
- ``redis``: restart a Redis of our own (append-only file, fsync always) mid-job, by SIGTERM
  and by SIGKILL in turn; the job must not be lost;
- ``api``: kill -9 the API mid-job and mid-upload and start it again; the job must not be lost
  and the half-received upload must be swept;
- ``race``: status pollers, downloaders and cancellers on one running job at once; answers must
  be consistent (see ``race_drill``);
- ``disk``: the data directory on a small tmpfs, filled: a refused upload (507 STORAGE_FULL)
  and a job whose results do not fit (failed, STORAGE_FULL, no corrupt bundle).

    python benchmarks/reliability.py --kills 50 --redis 5 --api 5 --races 5 --disk \\
        --out benchmarks/results/reliability.json

service/tests/test_faults.py runs a few of each in CI with the same functions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "service" / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from servicekit import FAST, Service, free_port  # noqa: E402

#: a fusion job of a few seconds, so that a random kill lands in every stage
DRILL_OPTIONS = ('{"fusion": {"resolution": 160, "target_faces": 20000}, '
                 '"previews": {"size": 128, "contact_sheet": false}}')
TERMINAL = ("succeeded", "failed", "cancelled")


# ── checks ───────────────────────────────────────────────────────────────────────────────

def status_of(svc: Service, job_id: str, headers=None) -> dict | None:
    """The job, or None while the API answers 503 or is down (a restart in progress)."""
    try:
        r = svc.http.get(f"/jobs/{job_id}", headers=headers or {}, timeout=10)
    except httpx.HTTPError:
        return None
    if r.status_code == 503:
        return None
    if r.status_code != 200:
        raise AssertionError(f"GET /jobs/{job_id}: {r.status_code} {r.text[:300]}")
    return r.json()


def wait_terminal(svc: Service, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        job = status_of(svc, job_id)
        if job is not None:
            last = job
            if job["status"] in TERMINAL:
                return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} not terminal after {timeout} s: {last}")


def check_glb(data: bytes) -> str | None:
    if len(data) < 20 or data[:4] != b"glTF":
        return "mesh.glb has no glTF header"
    if int.from_bytes(data[8:12], "little") != len(data):
        return f"mesh.glb declares {int.from_bytes(data[8:12], 'little')} bytes, has {len(data)}"
    return None


def verify_bundle(svc: Service, job: dict, headers=None) -> list[str]:
    """Problems with the bundle of a terminal job (empty list: consistent)."""
    from PIL import Image

    job_id, problems = job["job_id"], []
    r = svc.http.get(f"/jobs/{job_id}/download", headers=headers or {}, timeout=60)
    if r.status_code != 200:
        return [f"download: {r.status_code} {r.text[:200]}"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        if zf.testzip() is not None:
            problems.append("a member of the bundle fails its CRC")
        names = zf.namelist()
        bad = [n for n in names if ".partial" in n or n.endswith(".tmp") or "/." in n]
        if bad:
            problems.append(f"temporary or partial files in the bundle: {bad[:5]}")
        report = json.loads(zf.read(f"{job_id}/report.json"))
        if report.get("status") != job["status"]:
            problems.append(f"report says {report.get('status')}, the job {job['status']}")
        model_files = {n.split("/", 2)[2] for n in names if n.startswith(f"{job_id}/fusion/")}
        if job["status"] == "succeeded" or model_files:
            # a model folder in a bundle is published whole or not at all
            for f in ("mesh.glb", "mesh.obj", "mesh.mtl", "texture.png"):
                if f not in model_files:
                    problems.append(f"fusion/{f} missing from a published model folder")
            if "mesh.glb" in model_files and (err := check_glb(zf.read(f"{job_id}/fusion/mesh.glb"))):
                problems.append(err)
            if "texture.png" in model_files:
                try:
                    Image.open(io.BytesIO(zf.read(f"{job_id}/fusion/texture.png"))).load()
                except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
                    problems.append(f"texture.png does not decode: {exc}")
    if job["status"] == "failed" and not (job.get("error") or {}).get("code"):
        problems.append(f"failed without a reason: {job}")
    return problems


def orphans() -> list[int]:
    """Model processes whose worker is gone (re-parented to init)."""
    out = []
    for p in psutil.process_iter(["cmdline", "ppid"]):
        try:
            if "spawn_main" in " ".join(p.info["cmdline"] or []) and p.info["ppid"] == 1:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


# ── drills ───────────────────────────────────────────────────────────────────────────────

def kill_worker_drill(svc: Service, capture: Path, rng: random.Random, max_delay: float = 6.0) -> dict:
    """Submit, wait a random time, kill -9 the worker; the job must end consistently."""
    svc.wait_until(lambda: svc.worker_pids(), 60, "no worker")
    job_id = svc.submit(capture, options=DRILL_OPTIONS)["job_id"]
    time.sleep(rng.uniform(0, max_delay))
    at = status_of(svc, job_id) or {}
    pids = svc.worker_pids()
    if pids:
        os.kill(pids[0], signal.SIGKILL)
    t0 = time.monotonic()
    job = wait_terminal(svc, job_id)
    problems = verify_bundle(svc, job)
    return {"job_id": job_id, "killed_at": {"status": at.get("status"),
                                            "stage": (at.get("models", {}).get("fusion") or {}).get("stage"),
                                            "progress": at.get("progress")},
            "status": job["status"], "error": (job.get("error") or {}).get("code"),
            "attempts": job.get("attempts"), "recovery_s": round(time.monotonic() - t0, 2), "problems": problems}


def exhaust_drill(svc: Service, capture: Path, rng: random.Random) -> dict:
    """Kill -9 the worker every time it runs the job: after the attempt limit (3) the job must
    fail with WORKER_LOST, not stay queued or running."""
    job_id = svc.submit(capture, options=DRILL_OPTIONS)["job_id"]
    kills, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 300:
        job = status_of(svc, job_id) or {}
        if job.get("status") in TERMINAL:
            break
        if job.get("status") == "running" and svc.model_processes():
            time.sleep(rng.uniform(0, 1.5))
            pids = svc.worker_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                kills += 1
                svc.wait_until(lambda: (status_of(svc, job_id) or {}).get("status") != "running"
                               or not svc.model_processes(), 60, "the killed run did not stop")
        time.sleep(0.1)
    job = wait_terminal(svc, job_id)
    problems = verify_bundle(svc, job)
    if job["status"] != "failed" or (job.get("error") or {}).get("code") != "WORKER_LOST":
        problems.append(f"after {kills} kills: {job['status']} {job.get('error')}")
    return {"job_id": job_id, "kills": kills, "status": job["status"], "error": (job.get("error") or {}).get("code"),
            "recovery_s": round(time.monotonic() - t0, 2), "problems": problems}


class OwnRedis:
    """A redis-server of our own on a free port, append-only file with fsync always."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", str(self.root / "redis.log")])
        import redis

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def redis_restart_drill(svc: Service, own: OwnRedis, capture: Path, rng: random.Random, sig) -> dict:
    svc.wait_until(lambda: svc.worker_pids(), 60, "no worker")
    job_id = svc.submit(capture, options=DRILL_OPTIONS)["job_id"]
    svc.wait_until(lambda: (status_of(svc, job_id) or {}).get("status") == "running", 60, "job not running")
    time.sleep(rng.uniform(0, 2))
    own.stop(sig)
    down = rng.uniform(0.5, 3.0)
    time.sleep(down)
    own.start()
    t0 = time.monotonic()
    job = wait_terminal(svc, job_id)
    return {"job_id": job_id, "signal": signal.Signals(sig).name, "down_s": round(down, 2), "status": job["status"],
            "error": (job.get("error") or {}).get("code"), "recovery_s": round(time.monotonic() - t0, 2),
            "problems": verify_bundle(svc, job)}


def api_restart_drill(svc: Service, capture: Path, rng: random.Random) -> dict:
    """Kill -9 the API mid-job and mid-upload, start it again."""
    job_id = svc.submit(capture, options=DRILL_OPTIONS)["job_id"]
    time.sleep(rng.uniform(0, 3))
    # a second client is half-way through an upload when the API dies
    body = (b"--bb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.zip\"\r\n\r\n"
            + capture.read_bytes() + b"\r\n--bb--\r\n")
    sock = socket.create_connection(("127.0.0.1", svc.port))
    sock.sendall(f"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=bb\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    time.sleep(0.3)
    svc.stop_api(signal.SIGKILL)
    sock.close()
    svc.start_api()
    t0 = time.monotonic()
    job = wait_terminal(svc, job_id)
    uploads = svc.root / "data" / "uploads"
    deadline = time.monotonic() + 30
    while any(uploads.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.5)
    problems = verify_bundle(svc, job)
    if any(uploads.iterdir()):
        problems.append(f"a half-received upload was not swept: {[p.name for p in uploads.iterdir()]}")
    return {"job_id": job_id, "status": job["status"], "error": (job.get("error") or {}).get("code"),
            "recovery_s": round(time.monotonic() - t0, 2), "problems": problems}


def race_drill(svc: Service, capture: Path, cancel_after: float = 1.0) -> dict:
    """Status, download and cancel on one job at once, from 10 threads.

    Consistent means: no 5xx; statuses seen by each poller never leave a terminal state and
    never go backwards (queued < running < cancelling < terminal); a download is 409
    JOB_NOT_FINISHED before the end and afterwards a bundle whose report has the job's final
    status; of all confirmations of one token at most one succeeds; the job ends cancelled
    (or succeeded when it finished first)."""
    order = {"queued": 0, "running": 1, "cancelling": 2, "succeeded": 3, "failed": 3, "cancelled": 3}
    job_id = svc.submit(capture, options='{"fusion": {"resolution": 256}}')["job_id"]
    svc.wait_until(lambda: (status_of(svc, job_id) or {}).get("status") == "running", 60, "job not running")
    stop, problems, counts = threading.Event(), [], {}
    lock = threading.Lock()
    token_wins: dict[str, int] = {}

    def note(kind, r):
        with lock:
            counts[f"{kind} {r.status_code}"] = counts.get(f"{kind} {r.status_code}", 0) + 1
            if r.status_code >= 500:
                problems.append(f"{kind}: {r.status_code} {r.text[:200]}")

    def poller():
        with httpx.Client(base_url=svc.url, timeout=30) as c:
            last = -1
            while not stop.is_set():
                r = c.get(f"/jobs/{job_id}")
                note("status", r)
                if r.status_code == 200:
                    rank = order[r.json()["status"]]
                    if rank < last:
                        problems.append(f"status went backwards to {r.json()['status']}")
                    last = rank

    def downloader():
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            while not stop.is_set():
                before = c.get(f"/jobs/{job_id}").json()["status"]
                r = c.get(f"/jobs/{job_id}/download")
                note("download", r)
                if r.status_code == 409:
                    if r.json()["error"]["code"] != "JOB_NOT_FINISHED":
                        problems.append(f"download 409 {r.text[:200]}")
                elif r.status_code == 200:
                    if before not in TERMINAL:
                        # the job may have ended between the two requests; the bundle must say how
                        before = c.get(f"/jobs/{job_id}").json()["status"]
                    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
                        status = json.loads(zf.read(f"{job_id}/report.json"))["status"]
                    if status not in TERMINAL:
                        problems.append(f"a bundle was served with status {status}")

    def canceller():
        time.sleep(cancel_after)
        with httpx.Client(base_url=svc.url, timeout=30) as c:
            for _ in range(3):
                r = c.post(f"/jobs/{job_id}/cancel")
                note("cancel-ask", r)
                if r.status_code != 202:
                    continue
                token = r.json()["confirm_token"]
                results = []

                def confirm():
                    results.append(c2.post(f"/jobs/{job_id}/cancel", json={"confirm_token": token}))

                with httpx.Client(base_url=svc.url, timeout=30) as c2:
                    threads = [threading.Thread(target=confirm) for _ in range(3)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                for res in results:
                    note("cancel-confirm", res)
                    if res.status_code not in (200, 400, 409):
                        problems.append(f"cancel confirm {res.status_code} {res.text[:200]}")
                with lock:
                    token_wins[token] = sum(res.status_code == 200 for res in results)

    threads = [threading.Thread(target=f) for f in [poller] * 4 + [downloader] * 3 + [canceller] * 3]
    for t in threads:
        t.start()
    final = wait_terminal(svc, job_id, 120)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    if any(wins > 1 for wins in token_wins.values()):
        problems.append(f"a token confirmed more than once: {token_wins}")
    if final["status"] not in ("cancelled", "succeeded"):
        problems.append(f"ended {final['status']}: {final.get('error')}")
    problems += verify_bundle(svc, final)
    return {"job_id": job_id, "status": final["status"], "counts": counts, "problems": problems}


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (root only); False where this is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def fill(path: Path, leave: int) -> Path:
    """Write a filler file so that only about ``leave`` bytes stay free on ``path``'s file system."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free
    with open(filler, "wb") as fh:
        remaining = max(0, free - leave)
        block = b"\xa5" * (1 << 20)
        while remaining > 0:
            n = min(remaining, len(block))
            try:
                fh.write(block[:n])
            except OSError:
                break
            remaining -= n
    return filler


def disk_full_drill(svc: Service, capture: Path) -> dict:
    """The data directory is a small tmpfs (svc.root/'data'); the API and worker are running."""
    data = svc.root / "data"
    size = capture.stat().st_size
    problems, out = [], {}
    # 1. no room for the upload: 507 STORAGE_FULL, nothing left behind, the API still answers
    filler = fill(data, size // 2)
    r = svc.http.post("/jobs", files={"file": ("c.zip", capture.read_bytes(), "application/zip")},
                      data={"options": FAST})
    out["upload"] = {"status": r.status_code, "code": (r.json().get("error") or {}).get("code"),
                     "free_bytes": shutil.disk_usage(data).free}
    if r.status_code != 507 or out["upload"]["code"] != "STORAGE_FULL":
        problems.append(f"upload on a full disk: {r.status_code} {r.text[:300]}")
    if any((data / "uploads").iterdir()):
        problems.append(f"left in uploads/: {[p.name for p in (data / 'uploads').iterdir()]}")
    if svc.http.get("/health").status_code != 200:
        problems.append("the API does not answer /health on a full disk")
    ready = svc.http.get("/ready")
    out["ready"] = {"status": ready.status_code, "code": (ready.json().get("error") or {}).get("code")}
    filler.unlink()
    # 2. room for the upload but not for the results: the job fails with STORAGE_FULL
    filler = fill(data, 2 * size + (64 << 10))
    job_id = svc.submit(capture, options=DRILL_OPTIONS)["job_id"]
    job = wait_terminal(svc, job_id)
    codes = {(job.get("error") or {}).get("code"), ((job["models"].get("fusion") or {}).get("error") or {}).get("code")}
    out["job"] = {"status": job["status"], "codes": sorted(c for c in codes if c)}
    if job["status"] != "failed" or "STORAGE_FULL" not in codes:
        problems.append(f"job on a full disk: {job['status']} {codes}")
    leftovers = [p.name for p in (data / "jobs" / job_id / "result").glob(".*")] if (
        data / "jobs" / job_id / "result").exists() else []
    if leftovers:
        problems.append(f"partial files left in the result folder: {leftovers}")
    filler.unlink()
    # 3. space again: the bundle is consistent and a new job succeeds
    problems += verify_bundle(svc, job)
    again = svc.submit(capture, options=FAST)["job_id"]
    done = wait_terminal(svc, again)
    if done["status"] != "succeeded":
        problems.append(f"after the disk was freed a job ended {done['status']}: {done.get('error')}")
    out["problems"] = problems
    return out


# ── the benchmark ────────────────────────────────────────────────────────────────────────

def _service(root: Path, **env) -> Service:
    svc = Service(root, {k: str(v) for k, v in env.items()})
    svc.root.mkdir(parents=True, exist_ok=True)
    return svc


def _capture(work: Path) -> Path:
    from meshforge.synthetic import render_capture

    shared = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))
    return render_capture(shared / "data" / "meshes" / "spot" / "spot.obj", work / "spot" / "capture.zip",
                          rgb_size=512, depth_size=256).capture


def _summary(drills: list[dict]) -> dict:
    statuses: dict = {}
    for d in drills:
        key = d["status"] + (f" ({d['error']})" if d.get("error") else "")
        statuses[key] = statuses.get(key, 0) + 1
    return {"drills": len(drills), "outcomes": statuses,
            "with_problems": sum(bool(d["problems"]) for d in drills),
            "recovery_s_max": max((d.get("recovery_s", 0) for d in drills), default=0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="issue 7 fault drills")
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--exhaust", type=int, default=0, help="jobs killed on every run until WORKER_LOST")
    parser.add_argument("--redis", type=int, default=5)
    parser.add_argument("--api", type=int, default=5)
    parser.add_argument("--races", type=int, default=5)
    parser.add_argument("--disk", action="store_true", help="the disk-full drill (needs root to mount a tmpfs)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reliability.json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="meshforge-drills-"))
    capture = _capture(work)
    results = {"machine": {"nproc": os.cpu_count(), "cpu": _cpu(), "python": platform.python_version()},
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "seed": args.seed}
    started = []

    def series(name: str, count: int, drill, describe, **env) -> tuple[Service, list[dict]]:
        """A fresh service (API + worker) and ``count`` runs of ``drill(svc, i)`` against it."""
        svc = _service(work / name, **env)
        started.append(svc)
        svc.start_api()
        svc.start_workers()
        drills = []
        for i in range(count):
            drills.append(drill(svc, i))
            print(f"{name} {i + 1}/{count}: {describe(drills[-1])}", flush=True)
        return svc, drills

    try:
        if args.kills:
            svc, drills = series("kill", args.kills, lambda svc, i: kill_worker_drill(svc, capture, rng),
                                 lambda d: f"{d['killed_at']} -> {d['status']} {d['error'] or ''} {d['problems'] or ''}")
            stuck = [j for j in svc.http.get("/jobs", params={"limit": 100}).json()["jobs"] if j["status"] not in TERMINAL]
            results["kill"] = {**_summary(drills), "left_running": len(stuck), "orphans": orphans(), "runs": drills}
            svc.stop()
        if args.exhaust:
            svc, drills = series("exhaust", args.exhaust, lambda svc, i: exhaust_drill(svc, capture, rng), str)
            results["exhaust"] = {**_summary(drills), "runs": drills}
            svc.stop()
        if args.redis:
            own = OwnRedis(work / "own-redis")
            own.start()
            svc, drills = series("redis", args.redis, lambda svc, i: redis_restart_drill(
                svc, own, capture, rng, signal.SIGTERM if i % 2 == 0 else signal.SIGKILL), str,
                MESHFORGE_REDIS_URL=own.url)
            results["redis"] = {**_summary(drills), "runs": drills}
            svc.stop()
            own.stop()
        if args.api:
            svc, drills = series("api", args.api, lambda svc, i: api_restart_drill(svc, capture, rng), str,
                                 MESHFORGE_STALE_UPLOAD_S=3)
            results["api"] = {**_summary(drills), "runs": drills}
            svc.stop()
        if args.races:
            svc, drills = series("race", args.races,
                                 lambda svc, i: race_drill(svc, capture, cancel_after=rng.uniform(0.2, 3.0)),
                                 lambda d: f"{d['status']} {d['counts']} {d['problems'] or ''}")
            results["race"] = {**_summary(drills), "runs": drills}
            svc.stop()
        if args.disk:
            root = work / "disk"
            root.mkdir()
            if not mount_tmpfs(root / "data", "32m"):
                results["disk"] = {"skipped": "could not mount a tmpfs (not root?)"}
            else:
                try:
                    svc = _service(root)
                    started.append(svc)
                    svc.start_api()
                    svc.start_workers()
                    results["disk"] = disk_full_drill(svc, capture)
                    print(f"disk: {results['disk']}", flush=True)
                    svc.stop()
                finally:
                    subprocess.run(["umount", "-l", str(root / "data")])
    finally:
        for svc in started:
            svc.stop()
            _forget(svc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    problems = sum(results[k].get("with_problems", 0) for k in ("kill", "exhaust", "redis", "api", "race") if k in results)
    problems += len(results.get("disk", {}).get("problems", []))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "runs"} if isinstance(v, dict) else v
                      for k, v in results.items()}, indent=1))
    return 1 if problems else 0


def _forget(svc: Service) -> None:
    """Delete the drill's keys from the shared Redis (its own Redis goes with its folder)."""
    import redis

    try:
        client = redis.Redis.from_url(svc.env["MESHFORGE_REDIS_URL"], socket_timeout=5)
        for key in client.scan_iter(f"{svc.namespace}*", count=1000):
            client.delete(key)
    except redis.RedisError:
        pass


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
