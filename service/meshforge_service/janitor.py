"""Prompt redelivery and no job left running forever.

- **Redelivery.** A killed worker's message stays in its broker's "acks" set until a live
  broker runs maintenance on that queue, which by default happens on 0.1 % of commands
  and only for brokers silent for 60 s: minutes to never (guides/service.md §1). The
  janitor runs maintenance on every queue every ``janitor_interval_s`` with its own broker
  (``maintenance_chance`` = always, ``heartbeat_timeout`` = ``redeliver_after_s``): a dead
  worker's message is back within about that time. Live workers beat about once a second,
  so they are never mistaken for dead ones.
- **Stale jobs.** A running job whose heartbeat is older than ``stale_after_s`` and whose
  lock has expired has lost its worker. If its message was lost too (a Redis restart
  without persistence), it is queued again; the worker counts attempts and fails the job
  with WORKER_LOST after ``max_attempts``.
- **Abandoned uploads.** An API process killed while a capture streams in leaves its
  ``uploads/*.part`` file; files there untouched for ``stale_upload_s`` are deleted.
"""

from __future__ import annotations

import logging
import threading
import time

from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

from .settings import Settings
from .store import JobStore

log = logging.getLogger("meshforge.janitor")


class Janitor:
    def __init__(self, settings: Settings, store: JobStore):
        self.settings, self.store, self.interval = settings, store, settings.janitor_interval_s
        self.maintenance = RedisBroker(url=settings.redis_url, namespace=f"{settings.namespace}-dramatiq",
                                       maintenance_chance=MAINTENANCE_SCALE,
                                       heartbeat_timeout=int(settings.redeliver_after_s * 1000))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._requeued: dict[str, float] = {}

    def tick(self) -> None:
        from .uploads import sweep_stale_uploads

        for name in sweep_stale_uploads(self.settings, self.settings.stale_upload_s):
            log.warning("removed the abandoned upload %s", name)
        for queue in (self.settings.queue, f"{self.settings.queue}.DQ"):
            self.maintenance.do_qsize(queue)
        now = time.time()
        for job_id, raw in self.store.running_jobs():
            beat = float(raw.get("heartbeat_at") or raw.get("started_at") or raw["created_at"])
            if now - beat < self.settings.stale_after_s or self.store.lock_holder(job_id):
                continue
            # lost worker and (after redelivery had its chance) lost message: queue it again, once per period
            if now - self._requeued.get(job_id, 0) > 3 * self.settings.stale_after_s:
                from .tasks import enqueue

                log.warning("job %s: no heartbeat for %.0f s and no lock; queueing it again", job_id, now - beat)
                self._requeued[job_id] = now
                enqueue(self.settings, job_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("janitor tick failed")

    def start(self) -> "Janitor":
        self._thread = threading.Thread(target=self._run, name="meshforge-janitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
