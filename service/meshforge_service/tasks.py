"""The Dramatiq broker and the one actor. Imported by workers (and by the API to enqueue).

The broker lives in Redis under ``<namespace>-dramatiq``. Retries are off: delivery
attempts are counted in the job store instead, because Dramatiq does not count the
redeliveries of a killed worker's message (guides/service.md §1).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from .settings import Settings

_broker: RedisBroker | None = None
_actor = None


def broker(settings: Settings) -> RedisBroker:
    """The process's broker (created once, bound to ``settings``)."""
    global _broker, _actor
    if _broker is None:
        _broker = RedisBroker(url=settings.redis_url, namespace=f"{settings.namespace}-dramatiq",
                              heartbeat_timeout=60_000)
        dramatiq.set_broker(_broker)

        @dramatiq.actor(actor_name="process_job", queue_name=settings.queue, max_retries=0,
                        time_limit=7 * 24 * 3600 * 1000, broker=_broker)
        def process_job(job_id: str) -> None:
            from .store import JobStore, connect
            from .worker import process_job as run

            store = JobStore(connect(settings.redis_url, settings.redis_patience_s), settings.namespace)
            try:
                run(settings, store, job_id)
            finally:
                store.r.close()

        _actor = process_job
    return _broker


def enqueue(settings: Settings, job_id: str) -> str:
    """Queue a job for the workers -> the message id."""
    broker(settings)
    return _actor.send(job_id).message_id
