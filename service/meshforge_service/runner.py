"""One model run in a child process of the worker.

The child loads the capture, runs :func:`meshforge.pipeline.run_model` and writes its
outcome to a file; it reports progress to the job store itself and polls the job's
cancel flag between steps (cooperative cancellation). The worker only watches:

- cancel requested: the child normally stops within a second or two; after
  ``cancel_grace_s`` it is killed, with its own children;
- time limit exceeded: killed, ``MODEL_TIMEOUT``;
- the child vanished (killed by the kernel's OOM killer, a segfault in a native
  library): ``WORKER_LOST``;
- ``MODEL_OOM`` from a model that declares lower-memory options: one retry with them;
- the worker lost its claim on the job (another worker holds it now): killed, nothing written.

The outcome comes back through a pipe, not a file, so that a full disk is reported as
STORAGE_FULL rather than as a vanished process. Progress writes and cancel polls are
best-effort: a Redis restart pauses the reports, never the model. Whatever way
``run_in_child`` is left (even by an exception), the child does not outlive it.

Children are started with *spawn* (not fork: the worker has threads and sockets open) and
ask the kernel to kill them when the worker dies, so a killed worker leaves no orphan
computing on the GPU.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import psutil

from meshforge.bundle import write_json
from meshforge.errors import ModelTimeout, StorageFull, WorkerLost

from .settings import Settings
from .store import JobStore, connect


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent exits (PR_SET_PDEATHSIG).

    A spawned child only gets here after its interpreter has started (a second or more): if the
    parent was killed meanwhile, the child has been re-parented and the signal will never come,
    so with ``parent_pid`` it exits at once instead (the worker-kill test caught such an orphan
    finishing its model next to the redelivered run)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))
        except OSError:
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


class _Throttle:
    """Calls ``fn`` at most every ``interval`` seconds (always for the final value)."""

    def __init__(self, interval: float):
        self.interval, self.last = interval, 0.0

    def ready(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            return True
        return False


def _child(env: dict, job_id: str, model: str, options: dict, component_options: dict, score: bool,
           holdout: bool, job_dir: str, conn, parent_pid: int | None = None) -> None:
    die_with_parent(parent_pid=parent_pid)
    os.environ.update(env)
    import redis

    from meshforge.capture import load_capture
    from meshforge.errors import MeshforgeError
    from meshforge.pipeline import ModelOutcome, run_model
    from meshforge.progress import Progress

    settings = Settings.from_env()
    store = JobStore(connect(settings.redis_url), settings.namespace)
    write_throttle, cancel_throttle = _Throttle(0.5), _Throttle(0.25)
    cancelled = [False]

    def on_update(event):
        if write_throttle.ready(event.fraction >= 1.0):
            try:
                store.set_model(job_id, model, stage=event.stage, progress=round(event.fraction, 4))
            except redis.RedisError:  # Redis restarting: this report is dropped, the next one goes through
                pass

    def is_cancelled():
        if not cancelled[0] and cancel_throttle.ready():
            try:
                cancelled[0] = store.cancel_requested(job_id)
            except redis.RedisError:
                pass
        return cancelled[0]

    progress = Progress(on_update, is_cancelled)
    folder = Path(job_dir)
    try:
        capture = load_capture(folder / "input.zip", progress=progress.slice(0.0, 0.05, "loading the capture"))
        _write_summary(folder, capture.summary())
        outcome = run_model(capture, model, options, folder / "result", score=score, holdout=holdout,
                            progress=progress.slice(0.05, 1.0), component_options=component_options)
        data = outcome.to_dict()
    except MeshforgeError as exc:  # the capture could not be loaded: this model fails with its code
        data = ModelOutcome(model, status="failed", error=exc.to_dict(), options=options).to_dict()
    conn.send(json.loads(json.dumps(data, default=str)))
    conn.close()


def _write_summary(folder: Path, summary: dict) -> None:
    """input.json for the report (best-effort: the job store keeps the upload's own summary)."""
    target = folder / "input.json"
    if target.exists():
        return
    try:
        write_json(target, summary)
    except (OSError, ValueError, StorageFull):  # a full disk, or a value JSON cannot hold
        pass


def _kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
    except psutil.NoSuchProcess:
        pass


def run_in_child(settings: Settings, store: JobStore, job_id: str, model: str, options: dict,
                 component_options: dict, *, score: bool = True, holdout: bool = False,
                 on_child=None, lost=None) -> dict:
    """Run one model in a child process and return its outcome (``ModelOutcome.to_dict()``).

    ``lost()``, polled with the cancel flag, says the worker no longer holds the job: the
    child is killed and the outcome's status is ``lost`` (the caller writes nothing).
    """
    import redis

    job_dir = settings.jobs_dir / job_id
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, name=f"meshforge-{model}-{job_id[:8]}",
                       args=(settings.to_env(), job_id, model, options, component_options, score, holdout,
                             str(job_dir), sender, os.getpid()))
    proc.start()
    sender.close()  # the child holds the only writing end: its death is EOF here
    try:
        if on_child is not None:
            on_child(proc.pid)
        started = time.monotonic()
        cancel_seen, error, outcome = None, None, None
        while outcome is None:
            if receiver.poll(0.25):
                try:
                    outcome = receiver.recv()
                except (EOFError, OSError):  # the child died before it could answer
                    proc.join()
                    break
                continue
            if proc.exitcode is not None and not receiver.poll(0):
                break
            now = time.monotonic()
            if lost is not None and lost():
                return {"name": model, "status": "lost", "options": options}
            if cancel_seen is None:
                try:
                    if store.cancel_requested(job_id):
                        cancel_seen = now
                except redis.RedisError:  # Redis restarting: ask again at the next turn
                    pass
            if cancel_seen is not None and now - cancel_seen > settings.cancel_grace_s:
                return {"name": model, "status": "cancelled", "options": options,
                        "error": {"code": "CANCELLED", "message": f"cancelled by request; the model did not stop "
                                                                  f"within {settings.cancel_grace_s:g} s and was killed",
                                  "details": {"killed": True}}}
            if now - started > settings.model_time_limit_s:
                error = ModelTimeout(model=model, limit_s=settings.model_time_limit_s)
                break
        if outcome is not None:
            return outcome
        if error is None:
            proc.join(5)
            if cancel_seen is not None:
                return {"name": model, "status": "cancelled", "options": options,
                        "error": {"code": "CANCELLED", "message": "cancelled by request", "details": {}}}
            how = (f"killed by signal {-proc.exitcode}" if proc.exitcode and proc.exitcode < 0
                   else f"exit code {proc.exitcode} without a result")
            error = WorkerLost(model=model, reason=f"the model's process vanished ({how})", exit_code=proc.exitcode)
        return {"name": model, "status": "failed", "options": options, "error": error.to_dict()}
    finally:
        if proc.is_alive():
            _kill_tree(proc.pid)
        proc.join()
        receiver.close()
