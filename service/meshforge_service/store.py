"""Job state in Redis: the single source of truth shared by API processes, workers and their children.

One hash per job (``<ns>:job:<id>``) with one field per writer, so that writers never
overwrite each other: the API writes ``status`` for queued/cancelling transitions and
``cancel_requested``; the worker writes ``status`` (guarded transitions), ``started_at``,
``finished_at``, ``heartbeat_at``, ``attempts``; the process running a model writes only
``model:<name>``. Status changes go through one Lua script that refuses to leave a
terminal state, so a late writer can never resurrect a cancelled job.

Every change is appended to a per-job stream (``<ns>:job:<id>:events``) that the SSE
endpoint reads, which also gives Last-Event-ID resumption for free. Listing uses sorted
sets by creation time (all jobs, and per API-key owner). Cancel tokens and idempotency
keys are plain keys with a TTL.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime, timezone

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")

# lock keys hold the owner's worker id; renew re-takes a lock that expired meanwhile (a Redis
# outage longer than its TTL) unless another worker took it; release deletes only one's own
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
for i = 2, #ARGV do
  if ARGV[i] == status then
    redis.call('HSET', KEYS[1], 'status', ARGV[1])
    return 1
  end
end
return 0
"""


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    """128 random bits, URL-safe: job ids cannot be guessed or enumerated."""
    return secrets.token_urlsafe(16)


def owner_of(api_key: str | None) -> str:
    """A stable, non-reversible owner id for an API key ('' when keys are off)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:24] if api_key else ""


def connect(url: str, patience_s: float = 0.0) -> redis.Redis:
    """A client for ``url``. With ``patience_s``, every command is retried through a Redis outage
    or restart for about that long (workers: a job should survive a Redis restart); without,
    commands fail fast (the API answers 503 at once rather than hanging)."""
    if patience_s > 0:
        retry = Retry(ConstantBackoff(0.5), retries=max(1, int(patience_s / 0.5)))
        return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                    health_check_interval=30, retry=retry,
                                    retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=30)


class JobStore:
    """Typed access to the job keys of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str = "meshforge"):
        self.r = client
        self.ns = namespace
        self._transition = self.r.register_script(_TRANSITION)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    def key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    # ── creation and reading ────────────────────────────────────────────────────────────
    def create(self, job_id: str, owner: str, models: list[str], options: dict, input_summary: dict) -> dict:
        now = time.time()
        fields = {"status": "queued", "created_at": now, "owner": owner, "models": json.dumps(models),
                  "options": json.dumps(options), "input": json.dumps(input_summary), "attempts": 0,
                  "cancel_requested": 0}
        for name in models:
            fields[f"model:{name}"] = json.dumps({"status": "queued", "stage": "", "progress": 0.0, "error": None,
                                                  "quality": None})
        pipe = self.r.pipeline()
        pipe.hset(self.key("job", job_id), mapping=fields)
        pipe.zadd(self.key("jobs"), {job_id: now})
        pipe.zadd(self.key("jobs", "owner", owner), {job_id: now})
        pipe.execute()
        self.publish(job_id, "status")
        return self.get(job_id)

    def discard(self, job_id: str, owner: str) -> None:
        """Undo :meth:`create` for a job whose message could not be queued (it would stay queued forever)."""
        pipe = self.r.pipeline()
        pipe.delete(self.key("job", job_id), self.key("job", job_id, "events"))
        pipe.zrem(self.key("jobs"), job_id)
        pipe.zrem(self.key("jobs", "owner", owner), job_id)
        pipe.execute()

    def raw(self, job_id: str) -> dict | None:
        data = self.r.hgetall(self.key("job", job_id))
        return data or None

    def get(self, job_id: str, owner: str | None = None) -> dict | None:
        """The job object of the API (shared/spec/api.md), or None if unknown or not the owner's."""
        raw = self.raw(job_id)
        if raw is None or (owner is not None and raw.get("owner", "") != owner):
            return None
        return self.job_object(job_id, raw)

    def job_object(self, job_id: str, raw: dict) -> dict:
        names = json.loads(raw.get("models", "[]"))
        models = {n: json.loads(raw.get(f"model:{n}", "{}")) for n in names}
        status = raw["status"]
        progress = 1.0 if status == "succeeded" else (
            round(sum(m.get("progress", 0.0) for m in models.values()) / max(len(models), 1), 4))
        error = json.loads(raw["error"]) if raw.get("error") else None
        base = f"/jobs/{job_id}"
        return {
            "job_id": job_id,
            "status": status,
            "created_at": iso(float(raw["created_at"])),
            "started_at": iso(float(raw["started_at"])) if raw.get("started_at") else None,
            "finished_at": iso(float(raw["finished_at"])) if raw.get("finished_at") else None,
            "progress": progress,
            "models": models,
            "error": error,
            "links": {"self": base, "download": f"{base}/download", "cancel": f"{base}/cancel",
                      "events": f"{base}/events"},
        }

    def options(self, job_id: str) -> dict:
        return json.loads(self.r.hget(self.key("job", job_id), "options") or "{}")

    def list(self, owner: str | None, limit: int = 20, before: float | None = None,
             status: str | None = None) -> tuple[list[dict], float | None]:
        """Newest first, ``limit`` ids per page from the creation-time index; ``before`` is the
        cursor from the previous page. A status filter may leave a page short; the cursor
        still moves on. -> (jobs, next cursor or None at the end)."""
        index = self.key("jobs") if owner is None else self.key("jobs", "owner", owner)
        top = f"({before}" if before is not None else "+inf"
        batch = self.r.zrevrangebyscore(index, top, "-inf", start=0, num=limit + 1, withscores=True)
        page, more = batch[:limit], len(batch) > limit
        jobs = []
        for job_id, _ in page:
            raw = self.raw(job_id)
            if raw is not None and (status is None or raw["status"] == status):
                jobs.append(self.job_object(job_id, raw))
        return jobs, (page[-1][1] if more and page else None)

    # ── writing ──────────────────────────────────────────────────────────────────────────
    def transition(self, job_id: str, to: str, allowed_from, **fields) -> bool:
        """Set ``status`` to ``to`` only if it is one of ``allowed_from``; then set ``fields``."""
        done = self._transition(keys=[self.key("job", job_id)], args=[to, *allowed_from]) == 1
        if done:
            if fields:
                self.r.hset(self.key("job", job_id), mapping={k: _enc(v) for k, v in fields.items()})
            self.publish(job_id, "status")
        return done

    def set_fields(self, job_id: str, **fields) -> None:
        self.r.hset(self.key("job", job_id), mapping={k: _enc(v) for k, v in fields.items()})

    def set_model(self, job_id: str, model: str, publish: bool = True, **changes) -> None:
        """Merge ``changes`` into one model's state (only the process running that model writes it)."""
        k = self.key("job", job_id)
        state = json.loads(self.r.hget(k, f"model:{model}") or "{}")
        state.update(changes)
        self.r.hset(k, f"model:{model}", json.dumps(state))
        if publish:
            self.publish(job_id, "progress")

    def heartbeat(self, job_id: str) -> None:
        self.r.hset(self.key("job", job_id), "heartbeat_at", time.time())

    def request_cancel(self, job_id: str) -> None:
        self.r.hset(self.key("job", job_id), "cancel_requested", 1)

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self.key("job", job_id), "cancel_requested") == "1"

    # ── events ───────────────────────────────────────────────────────────────────────────
    def publish(self, job_id: str, kind: str) -> str | None:
        """Append the job's current state to its event stream (kept for a day, at most ~1000 entries)."""
        job = self.get(job_id)
        if job is None:
            return None
        stream = self.key("job", job_id, "events")
        event_id = self.r.xadd(stream, {"kind": kind, "job": json.dumps(job)}, maxlen=1000, approximate=True)
        self.r.expire(stream, 86400)
        return event_id

    def last_event_id(self, job_id: str) -> str:
        """Id of the newest event of the job ('0-0' when there is none)."""
        last = self.r.xrevrange(self.key("job", job_id, "events"), count=1)
        return last[0][0] if last else "0-0"

    def events(self, job_id: str, after: str = "0-0", block_ms: int = 0) -> list[tuple[str, str, dict]]:
        """Events after ``after`` -> [(event id, kind, job object)]; waits up to ``block_ms`` for new ones."""
        stream = self.key("job", job_id, "events")
        result = self.r.xread({stream: after}, count=100, block=block_ms or None)
        out = []
        for _, entries in result or []:
            for event_id, data in entries:
                out.append((event_id, data["kind"], json.loads(data["job"])))
        return out

    # ── cancel tokens ────────────────────────────────────────────────────────────────────
    def new_cancel_token(self, job_id: str, ttl_s: float) -> tuple[str, float]:
        token = secrets.token_urlsafe(24)
        expires = time.time() + ttl_s
        self.r.set(self.key("cancel-token", token), json.dumps({"job_id": job_id, "expires_at": expires}),
                   px=int(ttl_s * 1000))
        return token, expires

    def use_cancel_token(self, token: str, job_id: str) -> str:
        """'ok' (the token is consumed), 'unknown' (wrong, expired or used) or 'other_job'."""
        k = self.key("cancel-token", token)
        data = self.r.get(k)
        if data is None:
            return "unknown"
        if json.loads(data)["job_id"] != job_id:
            return "other_job"
        return "ok" if self.r.delete(k) == 1 else "unknown"  # one use only, even under races

    # ── idempotency ──────────────────────────────────────────────────────────────────────
    def idempotent_job(self, owner: str, key: str) -> tuple[str, str] | None:
        data = self.r.get(self.key("idempotency", owner, key))
        return tuple(json.loads(data)) if data else None

    def remember_idempotent(self, owner: str, key: str, job_id: str, body_hash: str) -> bool:
        """Bind a key to a job for a day; False if the key was bound meanwhile."""
        return bool(self.r.set(self.key("idempotency", owner, key), json.dumps([job_id, body_hash]), nx=True,
                               ex=86400))

    # ── workers and locks ────────────────────────────────────────────────────────────────
    def acquire(self, job_id: str, worker_id: str, ttl_s: float) -> bool:
        k = self.key("job", job_id, "lock")
        if self.r.set(k, worker_id, nx=True, px=int(ttl_s * 1000)):
            return True
        return self.r.get(k) == worker_id  # our own lock from an earlier delivery

    def renew(self, job_id: str, worker_id: str, ttl_s: float) -> bool:
        """Extend our lock (or take it back if it expired); False if another worker holds it now."""
        return self._renew(keys=[self.key("job", job_id, "lock")], args=[worker_id, int(ttl_s * 1000)]) == 1

    def release(self, job_id: str, worker_id: str) -> None:
        self._release(keys=[self.key("job", job_id, "lock")], args=[worker_id])

    def lock_holder(self, job_id: str) -> str | None:
        return self.r.get(self.key("job", job_id, "lock"))

    def register_worker(self, worker_id: str, info: dict, ttl_s: float) -> None:
        self.r.set(self.key("worker", worker_id), json.dumps({**info, "seen_at": time.time()}), px=int(ttl_s * 1000))

    def workers(self) -> list[dict]:
        keys = list(self.r.scan_iter(self.key("worker", "*"), count=100))
        values = self.r.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]

    def running_jobs(self) -> list[tuple[str, dict]]:
        """(id, raw hash) of jobs that are running or cancelling (for the janitor)."""
        out = []
        for job_id in self.r.zrevrange(self.key("jobs"), 0, 5000):
            raw = self.raw(job_id)
            if raw and raw["status"] in ("running", "cancelling"):
                out.append((job_id, raw))
        return out


def _enc(value) -> str | float | int:
    if isinstance(value, (dict, list)) or value is None:
        return json.dumps(value)
    return value
