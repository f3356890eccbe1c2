"""The API's request and response shapes (shared/spec/api.md); they drive the OpenAPI schema at /schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
ModelStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class Quality(msgspec.Struct, omit_defaults=True):
    status: Literal["normal", "warning", "failure"]
    psnr: float | None = None
    ssim: float | None = None
    reason: str | None = None


class ModelState(msgspec.Struct, omit_defaults=True):
    status: ModelStatus
    stage: str = ""
    progress: float = 0.0
    error: ErrorBody | None = None
    quality: Quality | None = None
    timings: dict[str, float] = {}
    warnings: list[str] = []


class Links(msgspec.Struct):
    self: str
    download: str
    cancel: str
    events: str


class Job(msgspec.Struct):
    job_id: str
    status: JobStatus
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: float
    models: dict[str, ModelState]
    error: ErrorBody | None
    links: Links


class JobPage(msgspec.Struct):
    jobs: list[Job]
    next_cursor: float | None


class CancelChallenge(msgspec.Struct):
    confirm_token: str
    expires_at: str


class Component(msgspec.Struct, omit_defaults=True):
    name: str
    available: bool
    version: str | None = None
    description: str | None = None
    reason: str | None = None
    options: list[dict[str, Any]] = []
    needs: dict[str, Any] = {}
    workers: int | None = None


class Models(msgspec.Struct):
    reconstructors: list[Component]
    previewers: list[Component]
    quality_scorers: list[Component]


class Health(msgspec.Struct):
    status: str
    checks: dict[str, Any] = {}


# POST /jobs and the cancel endpoint read their bodies themselves (uploads.py: a bounded streaming
# parser), so their request bodies are described here for the OpenAPI schema.

@dataclass
class JobFormOperation(Operation):
    """``POST /jobs``: multipart/form-data with ``file`` and optional ``models`` and ``options``."""

    def __post_init__(self) -> None:
        form = Schema(type=OpenAPIType.OBJECT, required=["file"], additional_properties=False, properties={
            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, content_media_type="application/zip",
                           description="the capture ZIP (shared/spec/input-format.md)"),
            "models": Schema(type=OpenAPIType.STRING, max_length=1000,
                             description="comma-separated reconstructor names; default: the service's default"),
            "options": Schema(type=OpenAPIType.STRING, max_length=64 << 10,
                              description='JSON object {model: {option: value}}, e.g. {"fusion": {"resolution": 256}}'),
        })
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(schema=form)})


@dataclass
class CancelOperation(Operation):
    """``POST /jobs/{id}/cancel``: no body (ask for a token) or ``{"confirm_token": ...}``."""

    def __post_init__(self) -> None:
        body = Schema(type=OpenAPIType.OBJECT, required=["confirm_token"], properties={
            "confirm_token": Schema(type=OpenAPIType.STRING, max_length=200,
                                    description="the token of the first (empty) POST")})
        self.request_body = RequestBody(required=False, content={"application/json": OpenAPIMediaType(schema=body)})


def job(data: dict) -> Job:
    return msgspec.convert(data, Job)
