"""What a worker does with one job message: claim it, run its models one by one, finish it.

At-least-once delivery means a job can arrive twice (a killed worker's message is
redelivered), so processing is idempotent: a job is claimed with a lock that its
heartbeat keeps alive, finished models are not re-run, a terminal job is skipped, and
every delivery counts as an attempt; past ``max_attempts`` the job fails with
WORKER_LOST instead of crashing workers forever.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from meshforge import bundle
from meshforge.errors import MeshforgeError, StorageFull, WorkerLost, is_storage_full
from meshforge.pipeline import ModelOutcome, job_status, make_report

from .runner import run_in_child
from .settings import Settings
from .store import TERMINAL, JobStore, iso

log = logging.getLogger("meshforge.worker")
WORKER_ID = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Heartbeat:
    """Refreshes the job's heartbeat and lock every ``interval`` seconds, in a thread.

    ``lost`` is set when another worker holds the job's lock (ours expired while this worker
    could not reach Redis, and the job was handed on): this delivery must stop writing.
    """

    def __init__(self, store: JobStore, job_id: str, interval: float, lock_ttl: float):
        self.store, self.job_id, self.interval, self.lock_ttl = store, job_id, interval, lock_ttl
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                if not self.store.renew(self.job_id, WORKER_ID, self.lock_ttl):
                    log.error("job %s: another worker holds it now; stopping this delivery", self.job_id)
                    self.lost.set()
                    return
                self.store.heartbeat(self.job_id)
            except Exception:  # Redis hiccup beyond the client's patience: the next beat retries
                log.exception("heartbeat failed for %s", self.job_id)

    def __enter__(self):
        self.store.heartbeat(self.job_id)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)


def process_job(settings: Settings, store: JobStore, job_id: str) -> str:
    """Run a job to its end; returns what happened (for logs and tests)."""
    raw = store.raw(job_id)
    if raw is None:
        return "unknown job"
    if raw["status"] in TERMINAL:
        return f"already {raw['status']}"
    # three missed beats free the job: a killed worker's message, redelivered after
    # redeliver_after_s, then finds it free instead of waiting for the stale-job sweep
    lock_ttl = min(settings.stale_after_s, 3 * settings.heartbeat_s)
    if not store.acquire(job_id, WORKER_ID, lock_ttl):
        return "held by another worker"
    try:
        attempts = store.r.hincrby(store.key("job", job_id), "attempts", 1)
        names = json.loads(raw["models"])
        if attempts > settings.max_attempts:
            err = WorkerLost(model=",".join(names), reason=f"the job was started {attempts - 1} times and its worker "
                                                          f"was lost each time (max {settings.max_attempts})")
            for name in names:
                state = json.loads(raw.get(f"model:{name}", "{}"))
                if state.get("status") not in TERMINAL:
                    store.set_model(job_id, name, publish=False, status="failed", error=err.to_dict())
            _finish(settings, store, job_id, names, forced_error=err.to_dict())
            return "failed: too many attempts"
        if raw["status"] == "queued" and store.cancel_requested(job_id):
            return "cancelled before start"
        if not store.transition(job_id, "running", ("queued", "running"),
                                started_at=float(raw.get("started_at") or time.time()), worker=WORKER_ID):
            status = store.raw(job_id)["status"]
            if status in TERMINAL:  # cancelled while this delivery was on its way
                return f"already {status}"
        options = store.options(job_id)
        with Heartbeat(store, job_id, settings.heartbeat_s, lock_ttl) as beat:
            for name in names:
                state = json.loads(store.r.hget(store.key("job", job_id), f"model:{name}") or "{}")
                if state.get("status") in TERMINAL:
                    continue  # finished in an earlier delivery
                if store.cancel_requested(job_id):
                    store.set_model(job_id, name, status="cancelled", stage="cancelled",
                                    error={"code": "CANCELLED", "message": "cancelled before it started",
                                           "details": {}})
                    continue
                store.set_model(job_id, name, status="running", stage="starting", progress=0.0)
                outcome = run_in_child(settings, store, job_id, name, options["models"][name], options["components"],
                                       score=options.get("score", True), holdout=options.get("holdout", False),
                                       lost=beat.lost.is_set)
                outcome = _retry_after_oom(settings, store, job_id, name, options, outcome, beat)
                if outcome["status"] == "lost":
                    return "lost to another worker"
                store.set_model(job_id, name, status=outcome["status"],
                                stage="done" if outcome["status"] == "succeeded" else outcome["status"],
                                progress=1.0 if outcome["status"] == "succeeded" else state.get("progress", 0.0),
                                error=outcome.get("error"), quality=outcome.get("quality"),
                                timings=outcome.get("timings", {}), warnings=outcome.get("warnings", []))
                _remember(settings, job_id, outcome)
            _finish(settings, store, job_id, names)
        return "finished"
    finally:
        store.release(job_id, WORKER_ID)


def _retry_after_oom(settings, store, job_id, name, options, outcome, beat) -> dict:
    error = outcome.get("error") or {}
    low = options.get("low_memory", {}).get(name)
    if error.get("code") != "MODEL_OOM" or not low:
        return outcome
    log.warning("%s: %s ran out of memory; retrying once with %s", job_id, name, low)
    store.set_model(job_id, name, stage="retrying with less memory", progress=0.0)
    retry = run_in_child(settings, store, job_id, name, {**options["models"][name], **low}, options["components"],
                         score=options.get("score", True), holdout=options.get("holdout", False),
                         lost=beat.lost.is_set)
    retry.setdefault("warnings", []).append(f"ran out of memory at first; retried with {low}")
    return retry


def _remember(settings: Settings, job_id: str, outcome: dict) -> None:
    """Keep each model's outcome beside the results, for the final report (best-effort: on a
    full disk the report falls back to what the job store holds)."""
    folder = settings.jobs_dir / job_id / "outcomes"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        bundle.write_json(folder / f"{outcome['name']}.json", outcome)
    except (OSError, ValueError, StorageFull) as exc:
        log.warning("%s: could not keep the outcome of %s (%s)", job_id, outcome["name"], exc)


def _clear_leftovers(result: Path) -> None:
    """Unpublished model folders and temporary files of killed deliveries (never in a bundle, but disk)."""
    for p in result.glob(".*"):
        if p.is_dir() and p.name.endswith(".partial"):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


def _finish(settings: Settings, store: JobStore, job_id: str, names: list[str], forced_error: dict | None = None):
    """Write report.json and move the job to its terminal status."""
    job_dir = settings.jobs_dir / job_id
    outcomes = []
    for name in names:
        path = job_dir / "outcomes" / f"{name}.json"
        data = json.loads(path.read_text()) if path.exists() else \
            {"name": name, "status": json.loads(store.r.hget(store.key("job", job_id), f"model:{name}")
                                                or "{}").get("status", "failed")}
        known = {k: v for k, v in data.items() if k in ModelOutcome.__dataclass_fields__}
        outcomes.append(ModelOutcome(**known))
    status = "cancelled" if store.cancel_requested(job_id) and any(o.status == "cancelled" for o in outcomes) \
        else job_status(outcomes)
    raw = store.raw(job_id)
    input_summary = json.loads((job_dir / "input.json").read_text()) if (job_dir / "input.json").exists() else \
        json.loads(raw.get("input", "null"))
    finished = time.time()
    report = make_report(outcomes, None, job_id=job_id, created=iso(float(raw["created_at"])),
                         started=iso(float(raw["started_at"])) if raw.get("started_at") else None,
                         finished=iso(finished))
    report["input"] = input_summary
    if forced_error:
        report["error"] = forced_error
    result = job_dir / "result"
    try:
        result.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(result)
        bundle.write_json(result / bundle.REPORT, report)
    except (OSError, MeshforgeError) as exc:
        # the job ends anyway, with the reason: no job stays running because its report cannot be written
        err = exc if isinstance(exc, MeshforgeError) else (
            StorageFull(what="the job's report") if is_storage_full(exc) else
            MeshforgeError(reason=f"the job's report could not be written ({type(exc).__name__}: {exc})"))
        log.error("%s: %s", job_id, err.message)
        status, report["error"] = "failed", err.to_dict()
    store.transition(job_id, status, ("queued", "running", "cancelling"), finished_at=finished,
                     error=report["error"])
