"""Service configuration, read from the environment once.

| variable | default | meaning |
|---|---|---|
| ``MESHFORGE_DATA_DIR`` | ``./meshforge-data`` | jobs' inputs and results (and the embedded Redis) |
| ``MESHFORGE_REDIS_URL`` | (embedded) | ``redis://host:port/db`` or ``unix:///path/redis.sock`` |
| ``MESHFORGE_NAMESPACE`` | ``meshforge`` | prefix of every Redis key (several services can share a Redis) |
| ``MESHFORGE_MAX_UPLOAD_BYTES`` | 1 GiB | largest accepted upload |
| ``MESHFORGE_API_KEYS`` | (off) | ``key1,key2`` or ``alice=key1,bob=key2``: keys required on every endpoint but /health |
| ``MESHFORGE_DEFAULT_MODELS`` | ``fusion`` | models used when a job names none |
| ``MESHFORGE_CONFIRM_TTL_S`` | 60 | lifetime of a cancel confirmation token |
| ``MESHFORGE_CANCEL_GRACE_S`` | 5 | how long a model may take to stop cooperatively before it is killed |
| ``MESHFORGE_HEARTBEAT_S`` | 5 | how often a worker refreshes a running job's heartbeat |
| ``MESHFORGE_STALE_AFTER_S`` | 60 | a running job whose heartbeat is older is presumed lost |
| ``MESHFORGE_MAX_ATTEMPTS`` | 3 | deliveries of one job before it fails with WORKER_LOST |
| ``MESHFORGE_REDELIVER_AFTER_S`` | 15 | a silent worker's unfinished message is handed to another worker after this |
| ``MESHFORGE_JANITOR_INTERVAL_S`` | 5 | how often the janitor runs |
| ``MESHFORGE_MODEL_TIME_LIMIT_S`` | 3600 | hard limit of one model run (MODEL_TIMEOUT) |
| ``MESHFORGE_BODY_IDLE_TIMEOUT_S`` | 60 | an upload that sends nothing for this long is refused (408) |
| ``MESHFORGE_UPLOAD_TIME_LIMIT_S`` | 3600 | an upload still arriving after this long is refused (408; 1 GiB at 300 kB/s) |
| ``MESHFORGE_STALE_UPLOAD_S`` | 900 | the janitor deletes unfinished uploads untouched for this long |
| ``MESHFORGE_REDIS_PATIENCE_S`` | 60 | how long workers retry Redis through an outage or restart before giving up |
| ``MESHFORGE_QUEUE`` | ``meshforge`` | the Dramatiq queue jobs go to |
| ``MESHFORGE_GPUS`` | (none) | ``0,1``: one worker process per listed GPU |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _parse_keys(text: str) -> dict:
    """``"alice=k1,k2"`` -> ``{"k1": "alice", "k2": "key2"}`` (unnamed keys are named by position)."""
    keys = {}
    for i, item in enumerate(filter(None, (t.strip() for t in text.split(",")))):
        name, sep, key = item.partition("=")
        if not sep:
            name, key = f"key{i + 1}", item
        keys[key] = name
    return keys


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("meshforge-data")
    redis_url: str | None = None
    namespace: str = "meshforge"
    max_upload_bytes: int = 1 << 30
    api_keys: dict = field(default_factory=dict)
    default_models: str = "fusion"
    confirm_ttl_s: float = 60.0
    cancel_grace_s: float = 5.0
    heartbeat_s: float = 5.0
    stale_after_s: float = 60.0
    max_attempts: int = 3
    redeliver_after_s: float = 15.0
    janitor_interval_s: float = 5.0
    model_time_limit_s: float = 3600.0
    queue: str = "meshforge"
    gpus: tuple = ()
    max_form_field_bytes: int = 64 << 10
    body_idle_timeout_s: float = 60.0
    upload_time_limit_s: float = 3600.0
    stale_upload_s: float = 900.0
    redis_patience_s: float = 60.0

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ
        values = dict(
            data_dir=Path(env.get("MESHFORGE_DATA_DIR", "meshforge-data")).resolve(),
            redis_url=env.get("MESHFORGE_REDIS_URL") or None,
            namespace=env.get("MESHFORGE_NAMESPACE", "meshforge"),
            max_upload_bytes=int(env.get("MESHFORGE_MAX_UPLOAD_BYTES", 1 << 30)),
            api_keys=_parse_keys(env.get("MESHFORGE_API_KEYS", "")),
            default_models=env.get("MESHFORGE_DEFAULT_MODELS", "fusion"),
            confirm_ttl_s=float(env.get("MESHFORGE_CONFIRM_TTL_S", 60)),
            cancel_grace_s=float(env.get("MESHFORGE_CANCEL_GRACE_S", 5)),
            heartbeat_s=float(env.get("MESHFORGE_HEARTBEAT_S", 5)),
            stale_after_s=float(env.get("MESHFORGE_STALE_AFTER_S", 60)),
            max_attempts=int(env.get("MESHFORGE_MAX_ATTEMPTS", 3)),
            redeliver_after_s=float(env.get("MESHFORGE_REDELIVER_AFTER_S", 15)),
            janitor_interval_s=float(env.get("MESHFORGE_JANITOR_INTERVAL_S", 5)),
            model_time_limit_s=float(env.get("MESHFORGE_MODEL_TIME_LIMIT_S", 3600)),
            queue=env.get("MESHFORGE_QUEUE", "meshforge"),
            gpus=tuple(g.strip() for g in env.get("MESHFORGE_GPUS", "").split(",") if g.strip()),
            body_idle_timeout_s=float(env.get("MESHFORGE_BODY_IDLE_TIMEOUT_S", 60)),
            upload_time_limit_s=float(env.get("MESHFORGE_UPLOAD_TIME_LIMIT_S", 3600)),
            stale_upload_s=float(env.get("MESHFORGE_STALE_UPLOAD_S", 900)),
            redis_patience_s=float(env.get("MESHFORGE_REDIS_PATIENCE_S", 60)),
        )
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict:
        """The environment that reproduces these settings in a child process."""
        env = {"MESHFORGE_DATA_DIR": str(self.data_dir), "MESHFORGE_NAMESPACE": self.namespace,
               "MESHFORGE_MAX_UPLOAD_BYTES": str(self.max_upload_bytes),
               "MESHFORGE_DEFAULT_MODELS": self.default_models, "MESHFORGE_CONFIRM_TTL_S": str(self.confirm_ttl_s),
               "MESHFORGE_CANCEL_GRACE_S": str(self.cancel_grace_s), "MESHFORGE_HEARTBEAT_S": str(self.heartbeat_s),
               "MESHFORGE_STALE_AFTER_S": str(self.stale_after_s), "MESHFORGE_MAX_ATTEMPTS": str(self.max_attempts),
               "MESHFORGE_REDELIVER_AFTER_S": str(self.redeliver_after_s),
               "MESHFORGE_JANITOR_INTERVAL_S": str(self.janitor_interval_s),
               "MESHFORGE_MODEL_TIME_LIMIT_S": str(self.model_time_limit_s), "MESHFORGE_QUEUE": self.queue,
               "MESHFORGE_GPUS": ",".join(self.gpus), "MESHFORGE_BODY_IDLE_TIMEOUT_S": str(self.body_idle_timeout_s),
               "MESHFORGE_UPLOAD_TIME_LIMIT_S": str(self.upload_time_limit_s),
               "MESHFORGE_STALE_UPLOAD_S": str(self.stale_upload_s),
               "MESHFORGE_REDIS_PATIENCE_S": str(self.redis_patience_s)}
        if self.redis_url:
            env["MESHFORGE_REDIS_URL"] = self.redis_url
        if self.api_keys:
            env["MESHFORGE_API_KEYS"] = ",".join(f"{name}={key}" for key, name in self.api_keys.items())
        return env

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"
