"""Every error meshforge reports, with its stable code, HTTP status and message.

One root, :class:`MeshforgeError`, and a shallow tree by where things go wrong: the capture,
the request, a plugin, a reconstruction, the quality verdict, a job. Each leaf has

- ``code``: stable UPPER_SNAKE identifier, part of the public contract (README table);
- ``http_status``: the status the API answers with when the error ends a request;
- ``template``: the message, formatted with the error's ``details``; it says what is
  wrong and how to fix it.

Raise with keyword details: ``raise MissingView(view="top", folder="multi_views")``. The
README's error table is generated from :func:`catalogue` and checked by a test.
"""

from __future__ import annotations

import errno
import string
from typing import Any


class MeshforgeError(Exception):
    """Raised when meshforge itself fails unexpectedly (a bug); the root of every meshforge error."""

    code = "INTERNAL"
    http_status = 500
    template = "internal error: {reason}"

    def __init__(self, message: str | None = None, **details: Any):
        self.details = details
        if message is None:
            try:
                message = self.template.format(**details)
            except (KeyError, IndexError, ValueError):
                message = self.template
        self.message = message
        super().__init__(message)

    def to_dict(self) -> dict:
        """The error body of the API: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": _jsonable(self.details)}

    @classmethod
    def from_dict(cls, body: dict) -> "MeshforgeError":
        """Rebuild an error (of the class registered for its code) from :meth:`to_dict` output."""
        klass = by_code().get(body.get("code", ""), MeshforgeError)
        err = klass(body.get("message", ""), **(body.get("details") or {}))
        return err


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# ── capture: the uploaded archive or directory ──────────────────────────────────────────

class CaptureError(MeshforgeError):
    """Raised when a capture cannot be used; the user must change the upload."""

    code = "INVALID_CAPTURE"
    http_status = 422
    template = "the capture is not usable: {reason}"


class NotAZip(CaptureError):
    """Raised when the upload is not a ZIP archive at all."""

    code = "NOT_A_ZIP"
    http_status = 415
    template = "{name} is not a ZIP archive ({reason}); upload a .zip made by a ZIP tool"


class CorruptArchive(CaptureError):
    """Raised when the ZIP's structure or a member's data is damaged (truncated, bad CRC)."""

    code = "CORRUPT_ARCHIVE"
    http_status = 400
    template = "the ZIP archive is damaged ({reason}); re-create it and upload it again"


class UnsafeArchive(CaptureError):
    """Raised when a member could escape extraction or hide content: absolute paths, '..', drive
    letters, backslashes, control characters, symbolic links, encryption, unusual compression."""

    code = "UNSAFE_ARCHIVE"
    http_status = 400
    template = "the ZIP member {member!r} is not allowed: {reason}"


class DuplicateMember(CaptureError):
    """Raised when two members map to the same file (same name, another case, or an alias)."""

    code = "DUPLICATE_FILE"
    http_status = 422
    template = "{first!r} and {second!r} both provide {role}; keep only one of them"


class TooManyMembers(CaptureError):
    """Raised when the archive has more members than any capture needs."""

    code = "TOO_MANY_FILES"
    http_status = 413
    template = "the archive has {count} members, more than the limit of {limit}; upload only the capture's files"


class CaptureTooLarge(CaptureError):
    """Raised when the upload, a member or the total uncompressed size is over its limit."""

    code = "CAPTURE_TOO_LARGE"
    http_status = 413
    template = "{what} is {size} bytes, over the limit of {limit} bytes"


class CompressionBomb(CaptureError):
    """Raised when a member's compression ratio is implausible for images (a zip bomb)."""

    code = "COMPRESSION_BOMB"
    http_status = 413
    template = ("the ZIP member {member!r} expands {ratio:.0f}-fold, more than the limit of {limit}: "
                "PNG and JPEG files do not compress like that")


class MissingView(CaptureError):
    """Raised when one of the six views (or its depth render) is not in the capture."""

    code = "MISSING_VIEW"
    http_status = 422
    template = "{folder}/{view}.png is missing; the capture needs {expected} in {folder}/"


class UnknownView(CaptureError):
    """Raised when a file in multi_views/ or depth_renders/ is not named after a view."""

    code = "UNKNOWN_VIEW"
    http_status = 422
    template = ("{member!r} is not a view name; name the files in {folder}/ {expected} "
                "(aliases +z -z +x -x +y -y; a '_depth' suffix is allowed for depth renders)")


class UnexpectedLayout(CaptureError):
    """Raised when the archive does not have the multi_views/ and depth_renders/ folders."""

    code = "UNEXPECTED_LAYOUT"
    http_status = 422
    template = ("the archive has no {folder}/ folder (found: {found}); put the six views in multi_views/ and "
                "the six depth renders in depth_renders/, at the top level or inside one enclosing folder")


class UnreadableImage(CaptureError):
    """Raised when an image cannot be decoded: corrupt, truncated or not a PNG/JPEG."""

    code = "UNREADABLE_IMAGE"
    http_status = 422
    template = "{file} cannot be read as an image ({reason}); re-export it as PNG"


class ImageTooLarge(CaptureError):
    """Raised when an image declares more pixels than allowed (checked before decoding)."""

    code = "IMAGE_TOO_LARGE"
    http_status = 413
    template = "{file} is {width}×{height} pixels, larger than the limit of {limit}×{limit}"


class UnsupportedImageMode(CaptureError):
    """Raised when an image has a pixel format the contract does not accept."""

    code = "UNSUPPORTED_IMAGE_MODE"
    http_status = 422
    template = "{file} has pixel format {mode}; {expected}"


class ImageNotSquare(CaptureError):
    """Raised when a view or depth render is not square."""

    code = "IMAGE_NOT_SQUARE"
    http_status = 422
    template = "{file} is {width}×{height}; views and depth renders must be square"


class ImageSizeOutOfRange(CaptureError):
    """Raised when an image is smaller or larger than the accepted sizes."""

    code = "IMAGE_SIZE_OUT_OF_RANGE"
    http_status = 422
    template = "{file} is {width}×{height}; accepted sizes are {low}² to {high}² pixels"


class SizeMismatch(CaptureError):
    """Raised when the views (or the depth renders) do not all have the same size."""

    code = "SIZE_MISMATCH"
    http_status = 422
    template = "{file} is {size}×{size} but {other} is {other_size}×{other_size}; all {kind} must have one size"


class EmptyDepth(CaptureError):
    """Raised when a depth render shows no object (every pixel is background)."""

    code = "EMPTY_DEPTH"
    http_status = 422
    template = "{file} has no foreground pixels (all 0 = background); the object must be visible in every view"


class EmptyMask(CaptureError):
    """Raised when a view's alpha channel masks out everything."""

    code = "EMPTY_MASK"
    http_status = 422
    template = "{file} has an alpha channel that is 0 everywhere; the alpha channel is the object mask"


class BadCameras(CaptureError):
    """Raised when cameras.json (or transforms.json) is not valid: syntax, a wrong type, an impossible value."""

    code = "BAD_CAMERAS_JSON"
    http_status = 422
    template = "{file}: {key}: {reason}"


class InconsistentViews(CaptureError):
    """Raised when the views contradict each other beyond repair (depth against silhouettes)."""

    code = "INCONSISTENT_VIEWS"
    http_status = 422
    template = "the views do not describe one object: {reason}"


class TooFewViews(CaptureError):
    """Raised when a transforms.json capture has fewer than the views a reconstruction needs."""

    code = "TOO_FEW_VIEWS"
    http_status = 422
    template = "the capture has {count} usable views; at least {minimum} are needed"


# ── request: models and options chosen by the user ──────────────────────────────────────

class RequestError(MeshforgeError):
    """Raised when a request's parameters are wrong."""

    code = "BAD_REQUEST"
    http_status = 400
    template = "bad request: {reason}"


class UnknownModel(RequestError):
    """Raised when a requested reconstructor is not installed."""

    code = "UNKNOWN_MODEL"
    http_status = 400
    template = "unknown model {model!r}; installed models: {choices}"


class InvalidOptions(RequestError):
    """Raised when options are malformed, unknown or out of range."""

    code = "INVALID_OPTIONS"
    http_status = 422
    template = "{where}: {reason}"


class UnsupportedMediaType(RequestError):
    """Raised when the request body is not of the expected content type."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415
    template = "expected {expected}, got {got!r}"


class IdempotencyConflict(RequestError):
    """Raised when an Idempotency-Key is reused with a different request body."""

    code = "IDEMPOTENCY_KEY_REUSED"
    http_status = 409
    template = "the Idempotency-Key {key!r} was used for another request (job {job_id}); use a new key"


class RouteNotFound(RequestError):
    """Raised when a request names no endpoint of the API."""

    code = "NOT_FOUND"
    http_status = 404
    template = "no endpoint {method} {path}; the API is described at /schema"


class MethodNotAllowed(RequestError):
    """Raised when an endpoint exists but not for the request's HTTP method."""

    code = "METHOD_NOT_ALLOWED"
    http_status = 405
    template = "{path} does not accept {method}"


class RequestTimeout(RequestError):
    """Raised when a request's body stops arriving or takes too long (a stalled, abandoned or trickling upload)."""

    code = "REQUEST_TIMEOUT"
    http_status = 408
    template = "the request body did not arrive in time ({reason}); send the request again"


class Unauthorized(RequestError):
    """Raised when an API key is required and missing or wrong."""

    code = "UNAUTHORIZED"
    http_status = 401
    template = "a valid API key is required in the X-API-Key header"


# ── plugins ──────────────────────────────────────────────────────────────────────────────

class PluginError(MeshforgeError):
    """Raised when a plugin cannot do what was asked of it."""

    code = "PLUGIN_ERROR"
    http_status = 500
    template = "plugin {plugin!r}: {reason}"


class ModelUnavailable(PluginError):
    """Raised when a requested model is installed but cannot run on this machine."""

    code = "MODEL_UNAVAILABLE"
    http_status = 503
    template = "model {model!r} is not available here: {reason}"


class PluginFailed(PluginError):
    """Raised when a plugin raises an exception it did not declare: a bug in the plugin."""

    code = "PLUGIN_FAILED"
    http_status = 500
    template = "plugin {plugin!r} failed in {call}: {reason}"


# ── reconstruction ───────────────────────────────────────────────────────────────────────

class ReconstructionError(MeshforgeError):
    """Raised when a model ran but could not produce a result."""

    code = "RECONSTRUCTION_FAILED"
    http_status = 500
    template = "model {model!r} failed: {reason}"


class ModelOutOfMemory(ReconstructionError):
    """Raised when a model runs out of (GPU) memory, after its lower-memory retry."""

    code = "MODEL_OOM"
    http_status = 507
    template = "model {model!r} ran out of memory: {reason}"


class ModelDidNotConverge(ReconstructionError):
    """Raised when an optimisation diverges (NaN, inf) or stalls far above the expected loss."""

    code = "MODEL_DID_NOT_CONVERGE"
    http_status = 500
    template = "model {model!r} did not converge: {reason}"


class ModelTimeout(ReconstructionError):
    """Raised when a model exceeds its hard time limit without any usable result."""

    code = "MODEL_TIMEOUT"
    http_status = 504
    template = "model {model!r} did not finish within {limit_s} s"


class WorkerLost(ReconstructionError):
    """Raised when the process running a model vanished (killed, crashed) too many times."""

    code = "WORKER_LOST"
    http_status = 500
    template = "the worker running {model!r} was lost ({reason})"


class Cancelled(MeshforgeError):
    """Raised when a job was cancelled by request (inside the running model, at its next check)."""

    code = "CANCELLED"
    http_status = 409
    template = "cancelled by request"


# ── quality ──────────────────────────────────────────────────────────────────────────────

class QualityFailed(MeshforgeError):
    """Raised when a result's quality is classified as failure; its files are kept."""

    code = "QUALITY_FAILED"
    http_status = 422
    template = "model {model!r} produced a result below the failure bands: {reason}"


# ── jobs (service) ───────────────────────────────────────────────────────────────────────

class JobError(MeshforgeError):
    """Raised when a job request cannot be answered."""

    code = "JOB_ERROR"
    http_status = 400
    template = "{reason}"


class JobNotFound(JobError):
    """Raised when a job id is unknown (or not visible to the caller's API key)."""

    code = "JOB_NOT_FOUND"
    http_status = 404
    template = "no job {job_id!r}"


class JobNotFinished(JobError):
    """Raised when the result of a job that is still queued or running is requested."""

    code = "JOB_NOT_FINISHED"
    http_status = 409
    template = "job {job_id!r} is {status}; download it once it has finished"


class JobAlreadyFinished(JobError):
    """Raised when a finished job is asked to cancel."""

    code = "JOB_ALREADY_FINISHED"
    http_status = 409
    template = "job {job_id!r} has already finished ({status})"


class InvalidConfirmToken(JobError):
    """Raised when a cancel confirmation token is wrong, expired, used or from another job."""

    code = "INVALID_CONFIRM_TOKEN"
    http_status = 400
    template = "the confirm token is {reason}; ask for a new one with an empty POST to {cancel_url}"


class ServiceUnavailable(MeshforgeError):
    """Raised when the broker, job store or storage cannot be reached or is nearly full."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503
    template = "{component} is not available: {reason}"


class StorageFull(ServiceUnavailable):
    """Raised when the disk holding uploads or results has no space left (nothing half-written is kept)."""

    code = "STORAGE_FULL"
    http_status = 507
    template = ("no space left on the service's disk to write {what}; nothing half-written was kept. Try again "
                "later; the operator must free space in the data directory")


def is_storage_full(exc: BaseException) -> bool:
    """True for the OSErrors of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# ── the catalogue ────────────────────────────────────────────────────────────────────────

def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def by_code() -> dict[str, type[MeshforgeError]]:
    """code -> error class, for every error meshforge defines."""
    table = {MeshforgeError.code: MeshforgeError}
    for cls in _all_subclasses(MeshforgeError):
        table.setdefault(cls.code, cls)
    return table


def catalogue() -> list[dict]:
    """One row per error code: code, HTTP status, when it is raised, message template and its fields."""
    rows = []
    for code, cls in sorted(by_code().items()):
        fields = [f for _, f, _, _ in string.Formatter().parse(cls.template) if f]
        doc = (cls.__doc__ or "").strip().replace("\n", " ")
        doc = " ".join(doc.split())
        rows.append({"code": code, "http_status": cls.http_status, "when": doc.removeprefix("Raised when ").rstrip("."),
                     "template": cls.template, "fields": fields, "class": cls.__name__})
    return rows
