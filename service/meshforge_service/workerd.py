"""Worker processes: ``meshforge worker`` (or ``meshforge-worker``).

- one worker process = one Dramatiq worker with one thread and a prefetch of one, so a
  busy GPU never holds a second job another worker could start;
- ``--gpus 0,1`` (or ``MESHFORGE_GPUS``) supervises one worker per GPU, each started with
  ``CUDA_VISIBLE_DEVICES`` set to its GPU before anything initialises CUDA, and restarts a
  worker that dies (Dramatiq's own master stops everything when a child dies);
- each worker publishes, every few seconds, which reconstructors it can run and why not
  (``GET /models`` merges these), from the same plugin discovery as everything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from .settings import Settings

log = logging.getLogger("meshforge.workerd")
REGISTRY_TTL_S = 20.0


def run_worker(settings: Settings, gpu: str | None = None) -> int:
    """Run one Dramatiq worker in this process until SIGTERM/SIGINT."""
    os.environ["dramatiq_queue_prefetch"] = "1"
    import dramatiq

    from meshforge.manager import get_manager

    from .store import JobStore, connect
    from .tasks import broker
    from .worker import WORKER_ID

    b = broker(settings)
    store = JobStore(connect(settings.redis_url), settings.namespace)
    described = get_manager().describe()
    info = {"worker_id": WORKER_ID, "pid": os.getpid(), "gpu": gpu,
            "reconstructors": [{k: r.get(k) for k in ("name", "available", "reason", "version", "low_memory")}
                               for r in described["reconstructors"]]}
    stop = threading.Event()

    def announce():
        while not stop.is_set():
            try:
                store.register_worker(WORKER_ID, info, REGISTRY_TTL_S)
            except Exception:
                log.exception("could not register the worker")
            stop.wait(REGISTRY_TTL_S / 4)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    b.emit_after("process_boot")  # arms TimeLimit and the other boot-time middleware
    worker = dramatiq.Worker(b, queues={settings.queue}, worker_threads=1)
    worker.start()
    log.info("worker %s ready on queue %s (gpu %s)", WORKER_ID, settings.queue, gpu)
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    stop.set()
    worker.stop(timeout=int(settings.cancel_grace_s * 1000) + 1000)
    store.r.delete(store.key("worker", WORKER_ID))
    return 0


THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_share(workers: int) -> dict[str, str]:
    """Thread counts that split the machine's cores between ``workers`` worker processes.

    A job is not only GPU work: decoding, fusion's initial shape, scoring and previews run
    on the CPU with numba and torch, which each start one thread per core. Several workers
    on one machine would oversubscribe the cores (on 2 × H200, 2 workers ran each job 14 %
    slower than 1); each gets its share instead. One worker keeps the defaults."""
    if workers <= 1:
        return {}
    share = str(max(1, (os.cpu_count() or 1) // workers))
    return {name: share for name in THREAD_VARIABLES}


class Supervisor:
    """Keeps one worker process per GPU (or one CPU worker) running."""

    def __init__(self, settings: Settings, gpus: list[str | None], extra_env: dict | None = None):
        self.settings, self.gpus, self.extra_env = settings, gpus, extra_env or {}
        self.procs: dict[str | None, subprocess.Popen] = {}
        self._stopping = False

    def _start(self, gpu: str | None) -> subprocess.Popen:
        env = {**os.environ, **self.settings.to_env(), **self.extra_env}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        for name, value in cpu_share(len(self.gpus)).items():
            env.setdefault(name, value)  # an operator's own setting wins
        args = [sys.executable, "-m", "meshforge_service.workerd", "--single"]
        if gpu is not None:
            args += ["--gpu-label", gpu]
        from .runner import die_with_parent

        proc = subprocess.Popen(args, env=env, preexec_fn=lambda: die_with_parent(signal.SIGTERM))
        log.info("started worker pid %d for gpu %s", proc.pid, gpu)
        return proc

    def start(self) -> "Supervisor":
        for gpu in self.gpus:
            self.procs[gpu] = self._start(gpu)
        threading.Thread(target=self._watch, name="worker-supervisor", daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._stopping:
            for gpu, proc in list(self.procs.items()):
                if proc.poll() is not None and not self._stopping:
                    log.warning("worker pid %d (gpu %s) exited with %s; restarting", proc.pid, gpu, proc.returncode)
                    time.sleep(1.0)
                    self.procs[gpu] = self._start(gpu)
            time.sleep(0.5)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="meshforge-worker", description="meshforge worker process(es)")
    ap.add_argument("--gpus", help="comma-separated GPU indices: one worker per GPU (default MESHFORGE_GPUS; "
                                   "none: one CPU worker)")
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gpu-label", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    if not settings.redis_url:
        print("meshforge worker: set MESHFORGE_REDIS_URL (redis://... or unix://...)", file=sys.stderr)
        return 2
    if args.single:
        return run_worker(settings, args.gpu_label)
    gpus = [g.strip() for g in (args.gpus.split(",") if args.gpus else settings.gpus) if g.strip()] or [None]
    sup = Supervisor(settings, gpus).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    done.wait()
    sup.stop()
    print(json.dumps({"stopped": len(gpus)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
