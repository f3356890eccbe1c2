"""Receiving ``POST /jobs``: the multipart form parsed as it streams in, under hard limits.

Litestar's own form parsing keeps every non-file part in memory however large it is (a
200 MB ``options`` field raised the API's memory by 400 MB before the handler could refuse
it) and spools the file to TMPDIR before the handler copies it. Here:

- the ``file`` part goes straight into the data directory's ``uploads/`` folder, hashed on
  the way, and is refused as soon as it passes ``max_upload_bytes``;
- ``models`` and ``options`` are capped at ``max_form_field_bytes``; other field names are
  refused (a misspelt ``model`` would otherwise silently run the default model);
- a body that stops arriving for ``body_idle_timeout_s``, or is still arriving after
  ``upload_time_limit_s``, is answered 408 (an abandoned or trickling upload does not hold a
  connection and a half-written file forever);
- a full disk is answered 507 STORAGE_FULL.

Whatever is refused leaves no file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from litestar import Request
from litestar.exceptions import InternalServerException
from multipart import ParserError, ParserLimitReached, PushMultipartParser, parse_options_header

from meshforge.errors import (CaptureTooLarge, InvalidOptions, RequestError, RequestTimeout, StorageFull,
                              UnsupportedMediaType, is_storage_full)

from .settings import Settings

log = logging.getLogger("meshforge.api")
FIELDS = ("file", "models", "options")
_FLUSH = 1 << 20


@dataclass
class Upload:
    """A received form: the capture file (in ``uploads/``), its sha256 and the text fields."""

    path: Path
    filename: str
    sha256: str
    size: int
    fields: dict = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _FileSink:
    """Buffered writes to the upload file in a worker thread, so the event loop never blocks on disk."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = None
        self.buffer = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0

    async def open(self) -> None:
        self.fh = await anyio.to_thread.run_sync(lambda: open(self.path, "xb"))

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        self.digest.update(data)
        self.buffer += data
        if len(self.buffer) >= _FLUSH:
            await self.flush()

    async def flush(self) -> None:
        if self.buffer:
            chunk, self.buffer = bytes(self.buffer), bytearray()
            await anyio.to_thread.run_sync(self.fh.write, chunk)

    async def close(self) -> None:
        if self.fh is not None:
            fh, self.fh = self.fh, None
            await anyio.to_thread.run_sync(fh.close)


async def _chunks(request: Request, idle_s: float, total_s: float):
    """The request body, chunk by chunk; a gap longer than ``idle_s``, or a body still arriving
    after ``total_s`` (a slowloris that sends a byte now and then), raises RequestTimeout."""
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + total_s
    while True:
        left = deadline - time.monotonic()
        try:
            with anyio.fail_after(max(0.0, min(idle_s, left))):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            reason = (f"nothing arrived for {idle_s:g} s" if left > idle_s else
                      f"it was still arriving after {total_s:g} s")
            raise RequestTimeout(reason=reason) from None
        except InternalServerException as exc:  # Litestar's way of saying the client went away
            raise RequestError(reason=f"the upload was not completed ({exc.detail})") from None
        if chunk:
            yield chunk


async def receive_job_form(request: Request, settings: Settings) -> Upload:
    """Parse the ``POST /jobs`` form of ``request``; raises a MeshforgeError for anything refused."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(expected="multipart/form-data with a `file` part",
                                   got=request.headers.get("content-type", ""))
    boundary = params.get("boundary")
    if not boundary:
        raise RequestError(reason="the multipart/form-data Content-Type names no boundary")
    sink = _FileSink(settings.uploads_dir / f"{uuid.uuid4().hex}.part")
    upload = Upload(sink.path, "capture.zip", "", 0)
    try:
        await _receive(request, settings, boundary, sink, upload)
        await sink.flush()
        await sink.close()
    except BaseException as exc:
        await sink.close()
        upload.discard()
        if is_storage_full(exc):
            raise StorageFull(what="the upload") from None
        raise
    upload.sha256, upload.size = sink.digest.hexdigest(), sink.size
    return upload


async def _receive(request: Request, settings: Settings, boundary: str, sink: _FileSink, upload: Upload) -> None:
    limit_file, limit_field = settings.max_upload_bytes, settings.max_form_field_bytes
    parser = PushMultipartParser(boundary, max_segment_count=len(FIELDS) + 1, max_header_count=8)
    name: str | None = None
    text = bytearray()
    seen: set[str] = set()
    try:
        async for chunk in _chunks(request, settings.body_idle_timeout_s, settings.upload_time_limit_s):
            for event in parser.parse(chunk):
                if event is None:  # the end of a part
                    if name != "file":
                        upload.fields[name] = _text(name, text)
                    name = None
                elif isinstance(event, (bytes, bytearray)):
                    if name == "file":
                        if sink.size + len(event) > limit_file:
                            size = request.headers.get("content-length") or f"more than {limit_file}"
                            raise CaptureTooLarge(what="the upload", size=size, limit=limit_file)
                        await sink.write(event)
                    else:
                        if len(text) + len(event) > limit_field:
                            raise InvalidOptions(where=name, reason=f"more than the limit of {limit_field} bytes")
                        text += event
                else:
                    name = event.name or ""
                    if name not in FIELDS:
                        raise RequestError(reason=f"unknown form field {name[:100]!r}; the form's fields are "
                                                  f"file (the capture ZIP), models and options")
                    if name in seen:
                        raise RequestError(reason=f"the form field {name!r} is given twice")
                    seen.add(name)
                    if name == "file":
                        upload.filename = Path(event.filename or "capture.zip").name[:200] or "capture.zip"
                        await sink.open()
                    else:
                        text = bytearray()
        for _ in parser.parse(b""):  # end of input: refuses a body cut short
            pass
    except ParserLimitReached as exc:
        raise RequestError(reason=f"the form is too large in its structure ({exc}); send file, models and "
                                  f"options only") from None
    except ParserError as exc:
        raise RequestError(reason=f"the body is not valid multipart/form-data ({exc})") from None
    if "file" not in seen:
        raise RequestError(reason="the form has no `file` part; attach the capture, e.g. curl -F file=@capture.zip")


def _text(name: str, data: bytearray) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidOptions(where=name, reason="not UTF-8 text") from None


def sweep_stale_uploads(settings: Settings, older_than_s: float) -> list[str]:
    """Delete uploads nobody has written for ``older_than_s`` (left by an API process that was
    killed mid-upload) -> the names removed."""
    removed, now = [], time.time()
    try:
        entries = list(os.scandir(settings.uploads_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > older_than_s:
                os.unlink(entry.path)
                removed.append(entry.name)
        except FileNotFoundError:  # another API process finished or removed it meanwhile
            pass
    return removed
