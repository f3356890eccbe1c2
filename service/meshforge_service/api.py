"""The HTTP API (shared/spec/api.md), a thin shell over the library and the job store.

``create_app(settings)`` builds a Litestar app with one controller per resource (jobs,
models, health). Errors of every kind leave as ``{"error": {"code", "message", "details"}}``
with the status of their code. Uploads stream straight into the data directory, are checked with
``meshforge.inspect_capture`` before the job is accepted, and are moved into the job's
folder; the full decode and calibration happen in the worker.

Hostile input was measured, not assumed (service/tests/test_hostile.py,
benchmarks/reliability.py): the form is parsed by our own bounded streaming parser
(uploads.py), archives are inspected keeping only image headers in memory, identifiers
from the URL are checked against their format before they reach Redis or a path, and a
Redis outage is a 503 with Retry-After, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, AsyncIterator

import anyio
import msgspec
import redis
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream

from meshforge import bundle
from meshforge.archive import Limits
from meshforge.capture import inspect_capture
from meshforge.errors import (CaptureTooLarge, IdempotencyConflict, InvalidConfirmToken, InvalidOptions,
                              JobAlreadyFinished, JobNotFinished, JobNotFound, MeshforgeError, MethodNotAllowed,
                              ModelUnavailable, RequestError, RouteNotFound, ServiceUnavailable, StorageFull,
                              Unauthorized, UnknownModel, UnsupportedMediaType, is_storage_full)
from meshforge.manager import PluginManager
from meshforge.pipeline import validate_request

from . import schemas
from .settings import Settings
from .store import JOB_STATUSES, TERMINAL, JobStore, connect, iso, new_job_id, owner_of
from .uploads import receive_job_form

log = logging.getLogger("meshforge.api")
PUBLIC_PATHS = {"/health"}
JOB_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")      # new_job_id(): 22 URL-safe characters
EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # Redis stream ids, as the events endpoint sends them


# ── errors ───────────────────────────────────────────────────────────────────────────────

def _error_response(err: MeshforgeError) -> Response:
    return Response({"error": err.to_dict()}, status_code=err.http_status, media_type="application/json")


def on_meshforge_error(request: Request, exc: MeshforgeError) -> Response:
    return _error_response(exc)


def on_http_error(request: Request, exc: HTTPException) -> Response:
    """Litestar's own errors (routing, body limits, form validation) in our error format."""
    status = exc.status_code
    if status == 404:
        err = RouteNotFound(method=request.method, path=request.url.path[:200])
    elif status == 405:
        err = MethodNotAllowed(method=request.method, path=request.url.path[:200])
        response = _error_response(err)
        allow = (exc.headers or {}).get("allow") or (exc.headers or {}).get("Allow")
        if allow:  # RFC 9110: a 405 lists what the resource does accept
            response.headers["Allow"] = allow
        return response
    elif status == 413:
        err = CaptureTooLarge(what="the request body", size=request.headers.get("content-length", "?"),
                              limit=request.route_handler.resolve_request_max_body_size())
    elif status == 415:
        err = UnsupportedMediaType(expected="multipart/form-data", got=request.headers.get("content-type", ""))
    elif status == 401:
        err = Unauthorized()
    else:
        err = RequestError(reason=exc.detail or "the request is malformed", fields=exc.extra or None)
        err.http_status = status if 400 <= status < 500 else 400
    return _error_response(err)


def on_redis_down(request: Request, exc: Exception) -> Response:
    """Redis unreachable or restarting (loading its append-only file): try again shortly."""
    log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    response = _error_response(ServiceUnavailable(component="Redis (the job store and queue)",
                                                  reason=f"{type(exc).__name__}: {exc}; try again in a few seconds"))
    response.headers["Retry-After"] = "5"
    return response


def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(MeshforgeError(reason=f"{type(exc).__name__} (see the service log)"))


_ERROR_DESCRIPTIONS = {
    400: "Malformed request (the error code says what)", 401: "API key missing or wrong (when keys are on)",
    404: "No such job (or not one of this API key's)", 408: "The upload stalled",
    409: "Not possible in the job's current state", 413: "Upload, member, file count or image over a limit",
    415: "Not multipart/form-data, or the upload is not a ZIP", 422: "Invalid capture, models or options",
    503: "Redis, the workers' models or the storage not available", 507: "The service's disk is full",
}


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses an endpoint answers (every endpoint: 401 and 503 too)."""
    return {s: ResponseSpec(schemas.ErrorResponse, description=_ERROR_DESCRIPTIONS[s], generate_examples=False)
            for s in sorted({*statuses, 401, 503})}


# ── request context ──────────────────────────────────────────────────────────────────────

def before_request(request: Request) -> Response | None:
    """Runs before every handler (Litestar uses only the nearest layer's hook, so this is the only one)."""
    authenticate(request)
    if request.method == "OPTIONS":
        # Litestar's automatic OPTIONS answer lists only the methods of the first handler registered
        # on a path (OPTIONS /jobs said "OPTIONS, POST"); schemathesis caught it. Answer from the route.
        methods = _route_methods(request.app).get(request.scope.get("path_template", ""))
        if methods:
            return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})
    if request.method == "POST" and request.url.path.rstrip("/") == "/jobs":
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise UnsupportedMediaType(expected="multipart/form-data with a `file` part", got=content_type)


def _route_methods(app: Litestar) -> dict[str, set[str]]:
    if not hasattr(app.state, "route_methods"):
        table: dict[str, set[str]] = {}
        for route in app.routes:
            for key in {route.path, getattr(route, "path_format", route.path)}:
                table.setdefault(key, set()).update(getattr(route, "methods", ()))
        app.state.route_methods = table
    return app.state.route_methods


def authenticate(request: Request) -> None:
    """With API keys configured, every endpoint but /health needs X-API-Key (or a Bearer token)."""
    settings: Settings = request.app.state.settings
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    request.state.owner = ""
    if not settings.api_keys or request.url.path in PUBLIC_PATHS:
        return
    given = hashlib.sha256((key or "").encode()).digest()
    # compare with every key, in constant time: response timing says nothing about how close a guess was
    known = [hmac.compare_digest(given, hashlib.sha256(k.encode()).digest()) for k in settings.api_keys]
    if not key or not any(known):
        raise Unauthorized()
    request.state.owner = owner_of(key)


def _store(request: Request) -> JobStore:
    return request.app.state.store


def _job_or_404(request: Request, job_id: str) -> dict:
    if not JOB_ID.fullmatch(job_id):  # not one of ours: never reaches Redis or a path
        raise JobNotFound(job_id=job_id[:64])
    job = _store(request).get(job_id, request.state.owner)
    if job is None:
        raise JobNotFound(job_id=job_id)
    return job


# ── models ───────────────────────────────────────────────────────────────────────────────

def describe_models(manager: PluginManager, store: JobStore) -> dict:
    """The plugins' self-description, with availability as reported by the live workers.

    A reconstructor is available when at least one live worker can run it; previewers and
    scorers run in the workers' model processes too, so their availability is this
    installation's.
    """
    described = manager.describe()
    workers = store.workers()
    by_name: dict[str, list[dict]] = {}
    for w in workers:
        for r in w.get("reconstructors", []):
            by_name.setdefault(r["name"], []).append(r)
    reconstructors = []
    for r in described["reconstructors"]:
        reports = by_name.pop(r["name"], [])
        item = {k: r.get(k) for k in ("name", "version", "description", "options", "needs")}
        item["workers"] = sum(1 for x in reports if x.get("available"))
        if not workers:
            item["available"], item["reason"] = False, "no worker is running (start one with `meshforge worker`)"
        elif item["workers"]:
            item["available"] = True
        else:
            item["available"] = False
            reasons = sorted({x.get("reason") or "" for x in reports} - {""})
            item["reason"] = "; ".join(reasons) or "no worker has this model installed"
        reconstructors.append(item)
    for name, reports in by_name.items():  # installed on workers only
        ok = any(x.get("available") for x in reports)
        reconstructors.append({"name": name, "version": reports[0].get("version"), "available": ok,
                               "workers": sum(1 for x in reports if x.get("available")),
                               **({} if ok else {"reason": reports[0].get("reason")})})

    def plain(items):
        return [{k: v for k, v in i.items() if k in ("name", "version", "description", "available", "reason",
                                                      "options", "needs")} for i in items]

    return {"reconstructors": reconstructors, "previewers": plain(described["previewers"]),
            "quality_scorers": plain(described["quality_scorers"])}


class ModelsController(Controller):
    path = "/models"
    tags = ["models"]

    @get("/", summary="The installed plugins and whether the workers can run them", responses=_errors())
    async def list_models(self, request: Request) -> schemas.Models:
        return msgspec.convert(describe_models(request.app.state.manager, _store(request)), schemas.Models)


class HealthController(Controller):
    tags = ["health"]

    @get("/health", summary="Liveness", security=[{}])  # the one endpoint open without a key
    async def health(self) -> schemas.Health:
        return schemas.Health(status="ok")

    @get("/ready", summary="Broker, job store and storage reachable", responses=_errors())
    async def ready(self, request: Request) -> schemas.Health:
        settings: Settings = request.app.state.settings
        checks = {}
        try:
            _store(request).r.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            raise ServiceUnavailable(component="Redis (job store and broker)", reason=str(exc)) from None
        probe = settings.uploads_dir / f".ready-{uuid.uuid4().hex}"
        try:
            try:
                probe.write_bytes(b"ok")
            finally:
                probe.unlink(missing_ok=True)  # also when the write failed half-way (a full disk)
            free = shutil.disk_usage(settings.data_dir).free
            checks["storage"] = {"path": str(settings.data_dir), "free_bytes": free}
        except OSError as exc:
            raise ServiceUnavailable(component="the data directory", reason=str(exc)) from None
        if free < 2 * (256 << 20):
            raise ServiceUnavailable(component="the data directory", reason=f"only {free} bytes free")
        checks["workers"] = len(_store(request).workers())
        return schemas.Health(status="ready", checks=checks)


# ── jobs ─────────────────────────────────────────────────────────────────────────────────

def _parse_options(text: str | None, limit: int) -> dict:
    if text is None or text.strip() == "":
        return {}
    if len(text) > limit:
        raise InvalidOptions(where="options", reason=f"{len(text)} characters, more than the limit of {limit}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOptions(where="options", reason=f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:  # "[[[[...": 64 KiB of brackets is deeper than the parser's stack
        raise InvalidOptions(where="options", reason="JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidOptions(where="options", reason='expected a JSON object like {"fusion": {"resolution": 256}}')
    return value


def check_runnable(names: list[str], manager: PluginManager, store: JobStore) -> None:
    """Unknown models are refused; models no live worker can run are refused with the workers' reasons.

    With no worker registered at all the job is accepted and waits in the queue.
    """
    described = describe_models(manager, store)
    known = {r["name"]: r for r in described["reconstructors"]}
    for name in names:
        if name not in known:
            raise UnknownModel(model=name, choices=", ".join(sorted(known)) or "none")
        if store.workers() and not known[name]["available"]:
            raise ModelUnavailable(model=name, reason=known[name].get("reason", ""))


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @post("/", status_code=202, summary="Submit a capture ZIP; returns the job",
          description="multipart/form-data: `file` = the capture ZIP, `models` = comma-separated model names, "
                      "`options` = JSON object {model: {option: value}}. The ZIP is checked (archive, names, image "
                      "headers, cameras.json) before the job is accepted.",
          operation_class=schemas.JobFormOperation, responses=_errors(400, 408, 409, 413, 415, 422, 507))
    async def create_job(self, request: Request,
                         idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key",
                                                                          max_length=200)] = None
                         ) -> schemas.Job:
        settings: Settings = request.app.state.settings
        store = _store(request)
        owner = request.state.owner
        upload = await receive_job_form(request, settings)
        try:
            models = (upload.fields.get("models") or "").strip() or settings.default_models
            if len(models) > 1000:
                raise InvalidOptions(where="models", reason="longer than 1000 characters")
            options = _parse_options(upload.fields.get("options"), settings.max_form_field_bytes)
            body_hash = hashlib.sha256(f"{upload.sha256}|{models}|{json.dumps(options, sort_keys=True)}".encode()
                                       ).hexdigest()
            if idempotency_key:
                seen = store.idempotent_job(owner, idempotency_key)
                if seen is not None:
                    job_id, seen_hash = seen
                    if seen_hash != body_hash:
                        raise IdempotencyConflict(key=idempotency_key, job_id=job_id)
                    existing = store.get(job_id, owner)
                    if existing is not None:
                        return schemas.job(existing)
            manager: PluginManager = request.app.state.manager
            names, resolved = validate_request(models, options, manager, check_available=False)
            check_runnable(names, manager, store)
            manifest = await anyio.to_thread.run_sync(
                lambda: inspect_capture(upload.path, request.app.state.limits, name=upload.filename,
                                        headers_only=True))
            job_id = new_job_id()
            job_dir = settings.jobs_dir / job_id
            try:
                job_dir.mkdir(parents=True)
                os.replace(upload.path, job_dir / "input.zip")
            except OSError as exc:
                shutil.rmtree(job_dir, ignore_errors=True)
                if is_storage_full(exc):
                    raise StorageFull(what="the upload") from None
                raise
        finally:
            upload.discard()  # refused uploads leave nothing behind
        stored = {"models": {n: resolved[n] for n in names},
                  "components": {k: v for k, v in resolved.items() if k not in names},
                  "low_memory": {n: manager.components("reconstructor")[n].component.spec.low_memory
                                 for n in names if n in manager.components("reconstructor")},
                  "score": True, "holdout": False}
        try:
            job = store.create(job_id, owner, names, stored, manifest.summary())
            if idempotency_key and not store.remember_idempotent(owner, idempotency_key, job_id, body_hash):
                seen = store.idempotent_job(owner, idempotency_key)  # a concurrent twin won the race
                store.transition(job_id, "cancelled", ("queued",), finished_at=time.time())
                shutil.rmtree(job_dir, ignore_errors=True)
                if seen is None or seen[1] != body_hash:
                    raise IdempotencyConflict(key=idempotency_key, job_id=seen[0] if seen else "?")
                return schemas.job(store.get(seen[0], owner))
            from .tasks import enqueue

            enqueue(settings, job_id)
        except MeshforgeError:
            raise
        except Exception as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            try:
                store.discard(job_id, owner)
            except redis.RedisError:
                log.warning("could not remove the half-created job %s", job_id)
            raise ServiceUnavailable(component="the job queue", reason=str(exc)) from exc
        return schemas.job(job)

    @get("/", summary="Jobs, newest first (paginated)", responses=_errors(400))
    async def list_jobs(self, request: Request,
                        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
                        cursor: Annotated[float | None, Parameter(description="next_cursor of the previous page")]
                        = None,
                        status: Annotated[schemas.JobStatus | None, Parameter(description="only jobs with this status")]
                        = None
                        ) -> schemas.JobPage:
        if cursor is not None and not math.isfinite(cursor):
            raise RequestError(reason=f"cursor must be a finite number (the next_cursor of the previous page), "
                                      f"not {cursor}")
        store = _store(request)
        owner = request.state.owner if request.app.state.settings.api_keys else None
        jobs, nxt = store.list(owner, limit, cursor, status)
        return schemas.JobPage(jobs=[schemas.job(j) for j in jobs], next_cursor=nxt)

    @get("/{job_id:str}", summary="One job", responses=_errors(404))
    async def get_job(self, request: Request, job_id: str) -> schemas.Job:
        return schemas.job(_job_or_404(request, job_id))

    @get("/{job_id:str}/download", summary="The result bundle (ZIP) of a finished job",
         media_type="application/zip", responses=_errors(404, 409))
    async def download(self, request: Request, job_id: str) -> Stream:
        job = _job_or_404(request, job_id)
        if job["status"] not in TERMINAL:
            raise JobNotFinished(job_id=job_id, status=job["status"])
        result = request.app.state.settings.jobs_dir / job_id / "result"
        extra = {}
        if not (result / bundle.REPORT).exists():
            # the worker could not write it (a full disk): the job store's account stands in for it,
            # next to whatever model folders were published whole
            raw = _store(request).raw(job_id) or {}
            extra[bundle.REPORT] = json.dumps({**job, "input": json.loads(raw.get("input") or "null"),
                                               "report_source": "job store (report.json could not be written)"},
                                              indent=2).encode()
        return Stream(_aiter(bundle.iter_zip(result, job_id, extra=extra)), media_type="application/zip",
                      headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'})

    @post("/{job_id:str}/cancel", status_code=200, summary="Two-step cancel: ask for a token, then confirm it",
          description='Without a body: 202 {"confirm_token", "expires_at"} and nothing changes. With '
                      '{"confirm_token": "..."}: 200 and the job, cancelling or cancelled.',
          operation_class=schemas.CancelOperation, request_max_body_size=4096,
          responses={202: ResponseSpec(schemas.CancelChallenge, description="A token to confirm the cancel with",
                                       generate_examples=False), **_errors(400, 404, 409)})
    async def cancel(self, request: Request, job_id: str) -> Response[schemas.Job]:
        settings: Settings = request.app.state.settings
        store = _store(request)
        job = _job_or_404(request, job_id)
        if job["status"] in TERMINAL:
            raise JobAlreadyFinished(job_id=job_id, status=job["status"])
        body = await request.body()
        if len(body) > 4096:
            raise RequestError(reason="the cancel body is larger than 4 KiB")
        token = None
        if body.strip():
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise RequestError(reason='the body must be JSON: {"confirm_token": "..."}') from None
            if not isinstance(payload, dict) or not isinstance(payload.get("confirm_token"), str):
                raise RequestError(reason='the body must be JSON: {"confirm_token": "..."}')
            token = payload["confirm_token"]
        if token is None:
            token, expires = store.new_cancel_token(job_id, settings.confirm_ttl_s)
            return Response(msgspec.to_builtins(schemas.CancelChallenge(token, iso(expires))), status_code=202)
        outcome = store.use_cancel_token(token, job_id)
        if outcome != "ok":
            reason = "for another job" if outcome == "other_job" else "wrong, expired or already used"
            raise InvalidConfirmToken(reason=reason, cancel_url=f"/jobs/{job_id}/cancel")
        store.request_cancel(job_id)
        if store.transition(job_id, "cancelled", ("queued",), finished_at=time.time(),
                            error={"code": "CANCELLED", "message": "cancelled by request before it started",
                                   "details": {}}):
            for name, state in job["models"].items():
                store.set_model(job_id, name, publish=False, status="cancelled", stage="cancelled")
            from .worker import _finish

            _finish(settings, store, job_id, list(job["models"]))
        else:
            store.transition(job_id, "cancelling", ("running",))
        return Response(msgspec.to_builtins(schemas.job(_job_or_404(request, job_id))), status_code=200)

    @get("/{job_id:str}/events", summary="Server-Sent Events: status, stage and progress changes",
         media_type="text/event-stream", responses=_errors(400, 404))
    async def events(self, request: Request, job_id: str,
                     last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", max_length=41)] = None
                     ) -> ServerSentEvent:
        _job_or_404(request, job_id)
        if last_event_id and not EVENT_ID.fullmatch(last_event_id):
            raise RequestError(reason="Last-Event-ID must be the id of an event this stream sent, like "
                                      "1700000000000-0; leave it out to start from the current state")
        store = _store(request)

        async def stream() -> AsyncIterator[ServerSentEventMessage]:
            after = last_event_id
            if not after:  # a new subscriber first gets the current state, then what follows it
                after = store.last_event_id(job_id)
                job = store.get(job_id)
                yield ServerSentEventMessage(data=json.dumps(job), event="status", id=after)
                if job["status"] in TERMINAL:
                    return
            while True:
                # block for less than the client's socket timeout (10 s): a longer wait read as a
                # Redis timeout and broke the stream mid-response during a long silent stage
                try:
                    batch = await anyio.to_thread.run_sync(store.events, job_id, after, 5000)
                except redis.RedisError:  # Redis restarting: end the stream; the client resumes by Last-Event-ID
                    return
                if not batch:
                    yield KEEP_ALIVE
                    continue
                for event_id, kind, job in batch:
                    after = event_id
                    yield ServerSentEventMessage(data=json.dumps(job), event=kind, id=event_id)
                    if job["status"] in TERMINAL:
                        return

        return ServerSentEvent(stream(), retry_duration=2000)


class _Comment(ServerSentEventMessage):
    """An SSE comment line alone: Litestar's ``comment=`` message adds an empty ``data:`` line, which
    clients dispatch as an empty event (the stream test read it and choked on it)."""

    def encode(self) -> bytes:
        return f": {self.comment}\r\n\r\n".encode()


KEEP_ALIVE = _Comment(comment="keep-alive")


async def _aiter(iterator):
    """Run a blocking iterator (ZIP streaming reads files) in a worker thread, chunk by chunk."""
    sentinel = object()
    while True:
        chunk = await anyio.to_thread.run_sync(next, iterator, sentinel)
        if chunk is sentinel:
            return
        yield chunk


# ── the app ──────────────────────────────────────────────────────────────────────────────

def create_app(settings: Settings | None = None, *, janitor: bool = True) -> Litestar:
    """The API for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    if not settings.redis_url:
        raise RuntimeError("MESHFORGE_REDIS_URL is not set (`meshforge serve` starts an embedded Redis)")
    for folder in (settings.jobs_dir, settings.uploads_dir):
        folder.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: Litestar):
        app.state.settings = settings
        app.state.store = JobStore(connect(settings.redis_url), settings.namespace)
        app.state.manager = PluginManager()
        app.state.limits = Limits(max_archive_bytes=settings.max_upload_bytes)
        j = None
        if janitor:
            from .janitor import Janitor

            j = Janitor(settings, app.state.store).start()
        try:
            yield
        finally:
            if j is not None:
                j.stop()
            app.state.store.r.close()

    return Litestar(
        route_handlers=[JobController, ModelsController, HealthController],
        lifespan=[lifespan],
        before_request=before_request,
        exception_handlers={MeshforgeError: on_meshforge_error, HTTPException: on_http_error,
                            redis.ConnectionError: on_redis_down, redis.TimeoutError: on_redis_down,
                            500: on_unexpected_error},
        request_max_body_size=settings.max_upload_bytes + (1 << 20),
        openapi_config=_openapi(bool(settings.api_keys)),
        debug=False,
    )


def _openapi(keys: bool):
    from litestar.openapi import OpenAPIConfig
    from litestar.openapi.spec import Components, SecurityScheme

    security = {}
    if keys:  # the schema says what the service enforces: every operation but /health needs a key
        security = dict(components=Components(security_schemes={
            "ApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header")}),
            security=[{"ApiKey": []}])
    return OpenAPIConfig(title="meshforge", version=_version(), path="/schema",
                         description="Turn a six-view capture into a validated, textured 3D mesh. Errors are "
                                     "{\"error\": {\"code\", \"message\", \"details\"}}; codes are listed in the "
                                     "README.", **security)


def _version() -> str:
    from importlib import metadata

    return metadata.version("meshforge-service")
