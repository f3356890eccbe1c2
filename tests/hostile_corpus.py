"""The hostile corpus of issue 7, written as real files, and what the service must answer to each.

    python -m tests.hostile_corpus OUT [--base capture.zip]

writes ``OUT/uploads/<case>.zip`` (archives, images, cameras.json: each a capture ZIP to post
as ``file``), ``OUT/requests/<case>.body`` with ``<case>.json`` (a raw HTTP request: method,
path, headers, expected status and code) and ``OUT/manifest.json`` listing every case. The
service tests (service/tests/test_hostile.py) and benchmarks/reliability.py replay it over
HTTP. Without ``--base`` a small capture of spot is rendered first (shared data needed).

Each upload case carries ``stage``:

- ``api``: refused before the 202 with its code and 4xx status (header-level faults);
- ``job``: accepted (the fault is only visible in the pixels, which the API does not decode)
  and the job ends ``failed`` with the code, whose HTTP status is a 4xx too.

The capture-level cases are those of tests/test_capture_errors.py (every capture error code,
each by a real bad file), minus the ones that need non-default limits or a directory; the
cases below add what only an upload can be: 100k members, large and nested bombs, a file over
the service's upload limit, and the requests' own faults. Timing faults (slow and abandoned
uploads) and cancel tokens need a live service and are played by the test itself
(``SCENARIOS`` names them so the corpus stays the one list).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

#: the upload limit the corpus is built for (the service under test runs with it)
UPLOAD_LIMIT = 24 << 20
#: the ``options`` / ``models`` field cap of the service (settings.max_form_field_bytes)
FIELD_LIMIT = 64 << 10

#: cases that need a live service (timing, state): played by test_hostile.py
SCENARIOS = {
    "slow-upload": ("accepted", 202, "a capture sent in small pieces with pauses shorter than the idle limit"),
    "trickling-upload": ("REQUEST_TIMEOUT", 408, "a capture sent 1 KiB a second: refused at the upload time limit"),
    "stalled-upload": ("REQUEST_TIMEOUT", 408, "half a capture, then nothing (connection kept open)"),
    "abandoned-upload": (None, None, "half a capture, then the connection is closed: no file or job is left"),
    "cancel-token-reused": ("INVALID_CONFIRM_TOKEN", 400, "the same confirm token twice"),
    "cancel-token-expired": ("INVALID_CONFIRM_TOKEN", 400, "a token after its lifetime"),
    "cancel-token-other-job": ("INVALID_CONFIRM_TOKEN", 400, "job B confirmed with job A's token"),
    "cancel-token-bogus": ("INVALID_CONFIRM_TOKEN", 400, "a token never issued"),
}


def _status(code: str) -> int:
    from meshforge.errors import by_code

    return by_code()[code].http_status


# ── uploads beyond the core cases ────────────────────────────────────────────────────────

def _many_members(dst: Path, count: int = 100_000) -> Path:
    """100k empty members: ~10 MB on the wire; refused from the end record alone."""
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"multi_views/f{i}.png", b"")
    return dst


def _zeros_member(zf: zipfile.ZipFile, name: str, size: int) -> None:
    """A member of ``size`` zero bytes, deflated as it is written (never whole in memory)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    block = bytes(1 << 20)
    with zf.open(info, "w", force_zip64=True) as fh:
        for _ in range(size >> 20):
            fh.write(block)


def _big_bomb(dst: Path, base: Path) -> Path:
    """A real capture whose front view is 200 MiB of zeros deflated to ~200 KB (ratio ~1000)."""
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            if name != "multi_views/front.png":
                zout.writestr(name, zin.read(name))
        _zeros_member(zout, "multi_views/front.png", 200 << 20)
    return dst


def _deep_bomb(dst: Path, levels: int = 4) -> Path:
    """A bomb inside a ZIP inside a ZIP ... (42.zip style): nested archives are never opened."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        _zeros_member(zf, "zeros.bin", 64 << 20)
    data = buf.getvalue()
    for level in range(levels):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for i in range(4):
                zf.writestr(f"level{level}-{i}.zip", data)
        data = buf.getvalue()
    dst.write_bytes(data)
    return dst


def _bomb_as_view(dst: Path, base: Path) -> Path:
    """The nested bomb stored under an image's name: it is read as an image header and refused."""
    inner = _deep_bomb(dst.with_suffix(".inner"), levels=1)
    data = inner.read_bytes()
    inner.unlink()
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, data if name == "multi_views/front.png" else zin.read(name))
    return dst


def _over_limit(dst: Path, base: Path) -> Path:
    """A valid capture padded with incompressible bytes to one MiB over the upload limit."""
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        zout.writestr("notes/padding.bin", os.urandom(UPLOAD_LIMIT - base.stat().st_size + (1 << 20)))
    return dst


def _truncated_jpeg(dst: Path, base: Path) -> Path:
    from PIL import Image

    with zipfile.ZipFile(base) as zin:
        view = Image.open(io.BytesIO(zin.read("multi_views/front.png"))).convert("RGB")
        buf = io.BytesIO()
        view.save(buf, format="JPEG", quality=95)
        jpeg = buf.getvalue()[: len(buf.getvalue()) // 2]
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for name in zin.namelist():
                if name == "multi_views/front.png":
                    zout.writestr("multi_views/front.jpg", jpeg)
                else:
                    zout.writestr(name, zin.read(name))
    return dst


def _cameras(doc) -> callable:
    def build(dst: Path, base: Path) -> Path:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        with zipfile.ZipFile(base) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for name in zin.namelist():
                zout.writestr(name, data if name == "cameras.json" else zin.read(name))
        return dst
    return build


EXTRA_UPLOADS = [
    # (id, builder(dst, base), code, stage)
    ("100k-members", lambda dst, base: _many_members(dst), "TOO_MANY_FILES", "api"),
    ("zip-bomb-200mib-zeros", _big_bomb, "COMPRESSION_BOMB", "api"),
    ("zip-bomb-nested-4-levels", lambda dst, base: _deep_bomb(dst), "UNEXPECTED_LAYOUT", "api"),
    ("zip-bomb-as-front-view", _bomb_as_view, "UNREADABLE_IMAGE", "api"),
    ("over-upload-limit", _over_limit, "CAPTURE_TOO_LARGE", "api"),
    ("truncated-jpeg", _truncated_jpeg, "UNREADABLE_IMAGE", "job"),
    ("cameras-json-huge-numbers", _cameras(b'{"views": {"front": {"fov_y_degrees": 1e999}}}'),
     "BAD_CAMERAS_JSON", "api"),
    ("cameras-json-deep-nesting", _cameras(b"[" * 100_000 + b"]" * 100_000), "BAD_CAMERAS_JSON", "api"),
]


# ── requests ─────────────────────────────────────────────────────────────────────────────

def _form(parts: list[tuple[str, str | None, bytes]], boundary: str = "corpusboundary") -> tuple[bytes, str]:
    """multipart/form-data of (field name, filename or None, bytes) -> (body, content type)."""
    out = io.BytesIO()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def requests(base: Path) -> list[dict]:
    """Raw requests: id, method, path, headers, body (bytes), status, code."""
    capture = base.read_bytes()
    file_part = ("file", "capture.zip", capture)
    cases = []

    def add(id_, code, body=b"", content_type=None, method="POST", path="/jobs", headers=None):
        h = dict(headers or {})
        if content_type:
            h["Content-Type"] = content_type
        cases.append({"id": id_, "method": method, "path": path, "headers": h, "body": body, "code": code,
                      "status": _status(code)})

    def form(id_, code, parts, **kw):
        body, ctype = _form(parts)
        add(id_, code, body, ctype, **kw)

    form("unknown-model", "UNKNOWN_MODEL", [file_part, ("models", None, b"nerf")])
    form("model-name-injection", "UNKNOWN_MODEL", [file_part, ("models", None, b"fusion,../../etc/passwd")])
    form("options-malformed-json", "INVALID_OPTIONS", [file_part, ("options", None, b'{"fusion": {"resolution": ')])
    form("options-not-an-object", "INVALID_OPTIONS", [file_part, ("options", None, b"[1, 2, 3]")])
    form("options-unknown-option", "INVALID_OPTIONS", [file_part, ("options", None, b'{"fusion": {"colour": 1}}')])
    form("options-out-of-range", "INVALID_OPTIONS", [file_part, ("options", None, b'{"fusion": {"resolution": 1e9}}')])
    form("options-nan", "INVALID_OPTIONS", [file_part, ("options", None, b'{"fusion": {"resolution": NaN}}')])
    form("options-not-utf8", "INVALID_OPTIONS", [file_part, ("options", None, b'{"fusion": "\xff\xfe"}')])
    form("options-deep-nesting", "INVALID_OPTIONS", [file_part, ("options", None, b"[" * 30_000 + b"]" * 30_000)])
    form("options-oversized", "INVALID_OPTIONS",
         [file_part, ("options", None, b'{"fusion": {"x": "' + b"a" * (FIELD_LIMIT + 10) + b'"}}')])
    form("models-oversized", "INVALID_OPTIONS", [file_part, ("models", None, b"fusion," * 400)])
    form("unknown-form-field", "BAD_REQUEST", [file_part, ("model", None, b"fusion")])
    form("field-twice", "BAD_REQUEST", [file_part, ("models", None, b"fusion"), ("models", None, b"fusion")])
    form("file-twice", "BAD_REQUEST", [file_part, file_part])
    form("no-file-part", "BAD_REQUEST", [("models", None, b"fusion")])
    form("many-parts", "BAD_REQUEST", [(f"x{i}", None, b"1") for i in range(50)])
    add("json-body", "UNSUPPORTED_MEDIA_TYPE", b'{"file": "capture.zip"}', "application/json")
    add("raw-zip-body", "UNSUPPORTED_MEDIA_TYPE", capture, "application/zip")
    add("urlencoded-body", "UNSUPPORTED_MEDIA_TYPE", b"file=capture.zip", "application/x-www-form-urlencoded")
    add("no-content-type", "UNSUPPORTED_MEDIA_TYPE", capture)
    add("multipart-without-boundary", "BAD_REQUEST", capture, "multipart/form-data")
    add("multipart-garbage", "BAD_REQUEST", b"this is not a multipart body at all",
        "multipart/form-data; boundary=corpusboundary")
    body, ctype = _form([file_part])
    add("multipart-truncated", "BAD_REQUEST", body[: len(body) // 2], ctype)
    add("multipart-header-flood", "BAD_REQUEST",
        b"--b\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\nx\r\n--b--\r\n",
        "multipart/form-data; boundary=b")
    # ids that match a route reach the handler and are refused by format before Redis or a path
    for id_, path in (("unknown-job-id", "/jobs/AAAAAAAAAAAAAAAAAAAAAA"),
                      ("job-id-double-encoded-traversal", "/jobs/..%252F..%252Fetc%252Fpasswd/download"),
                      ("job-id-dots", "/jobs/....../download"), ("job-id-very-long", "/jobs/" + "A" * 5000),
                      ("job-id-redis-glob", "/jobs/*"), ("job-id-redis-key", "/jobs/test:job:x:lock"),
                      ("job-id-events", "/jobs/nosuchjobnosuchjob00/events"),
                      ("job-id-cancel", "/jobs/nosuchjobnosuchjob00/cancel")):
        add(id_, "JOB_NOT_FOUND", method="POST" if path.endswith("cancel") else "GET", path=path)
    # an encoded "/" is decoded before routing: such paths match no endpoint at all
    for id_, path in (("job-id-traversal", "/jobs/..%2F..%2Fetc%2Fpasswd"),
                      ("job-id-dotdot-download", "/jobs/..%2F..%2F..%2Fetc/download"),
                      ("job-id-absolute-download", "/jobs/%2Fetc%2Fpasswd/download")):
        add(id_, "NOT_FOUND", method="GET", path=path)
    add("list-limit-zero", "BAD_REQUEST", method="GET", path="/jobs?limit=0")
    add("list-limit-huge", "BAD_REQUEST", method="GET", path="/jobs?limit=100000")
    add("list-bad-status", "BAD_REQUEST", method="GET", path="/jobs?status=everything")
    add("list-cursor-nan", "BAD_REQUEST", method="GET", path="/jobs?cursor=nan")
    add("list-cursor-text", "BAD_REQUEST", method="GET", path="/jobs?cursor=yesterday")
    add("no-such-endpoint", "NOT_FOUND", method="GET", path="/admin")
    add("wrong-method", "METHOD_NOT_ALLOWED", method="DELETE", path="/jobs")
    add("wrong-method-put", "METHOD_NOT_ALLOWED", method="PUT", path="/models")
    return cases


#: requests that need an existing job: ``{job}`` in their path is replaced by a queued job's id
JOB_REQUESTS = [
    {"id": "cancel-malformed-json", "method": "POST", "path": "/jobs/{job}/cancel", "body": b"{not json",
     "headers": {"Content-Type": "application/json"}, "code": "BAD_REQUEST"},
    {"id": "cancel-token-wrong-type", "method": "POST", "path": "/jobs/{job}/cancel",
     "body": b'{"confirm_token": 12345}', "headers": {"Content-Type": "application/json"}, "code": "BAD_REQUEST"},
    {"id": "cancel-body-oversized", "method": "POST", "path": "/jobs/{job}/cancel",
     "body": b'{"confirm_token": "' + b"a" * 10_000 + b'"}', "headers": {"Content-Type": "application/json"},
     "code": "CAPTURE_TOO_LARGE"},
    {"id": "cancel-deep-nesting", "method": "POST", "path": "/jobs/{job}/cancel", "body": b"[" * 2000 + b"]" * 2000,
     "headers": {"Content-Type": "application/json"}, "code": "BAD_REQUEST"},
    {"id": "download-unfinished", "method": "GET", "path": "/jobs/{job}/download", "body": b"", "headers": {},
     "code": "JOB_NOT_FINISHED"},
    {"id": "events-bad-last-event-id", "method": "GET", "path": "/jobs/{job}/events", "body": b"",
     "headers": {"Last-Event-ID": "0-0'; FLUSHALL"}, "code": "BAD_REQUEST"},
]


# ── writing it out ───────────────────────────────────────────────────────────────────────

def write_corpus(out: Path, base: Path, mesh: Path | None = None) -> dict:
    """Write every case under ``out``; returns the manifest (also written as manifest.json)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_capture_errors import CASES, Bases

    out = Path(out)
    (out / "uploads").mkdir(parents=True, exist_ok=True)
    (out / "requests").mkdir(parents=True, exist_ok=True)
    manifest = {"upload_limit": UPLOAD_LIMIT, "uploads": [], "requests": [], "job_requests": [],
                "scenarios": [{"id": k, "code": c, "status": s, "what": w} for k, (c, s, w) in SCENARIOS.items()]}
    bases = Bases(base, Path(tempfile.mkdtemp(prefix="corpus-bases-")), mesh or _spot())
    for case in CASES:
        work = Path(tempfile.mkdtemp(prefix=f"corpus-{case.id}-"))
        built = case.build(bases, work)
        if isinstance(built, tuple) or Path(built).is_dir():
            continue  # needs non-default limits or is a directory: a core-level case only
        dst = out / "uploads" / f"{case.id}.zip"
        os.replace(built, dst)
        manifest["uploads"].append({"id": case.id, "file": f"uploads/{dst.name}", "code": case.code,
                                    "status": _status(case.code), "stage": "api" if case.stage == "inspect" else "job",
                                    "source": "tests/test_capture_errors.py"})
    for id_, build, code, stage in EXTRA_UPLOADS:
        dst = build(out / "uploads" / f"{id_}.zip", base)
        manifest["uploads"].append({"id": id_, "file": f"uploads/{dst.name}", "code": code, "status": _status(code),
                                    "stage": stage, "source": "tests/hostile_corpus.py"})
    for req in requests(base):
        body = req.pop("body")
        (out / "requests" / f"{req['id']}.body").write_bytes(body)
        req["body"] = f"requests/{req['id']}.body"
        (out / "requests" / f"{req['id']}.json").write_text(json.dumps(req, indent=1))
        manifest["requests"].append(req)
    for req in JOB_REQUESTS:
        req = dict(req, status=_status(req["code"]))
        (out / "requests" / f"{req['id']}.body").write_bytes(req.pop("body"))
        req["body"] = f"requests/{req['id']}.body"
        manifest["job_requests"].append(req)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _spot() -> Path:
    shared = Path(os.environ.get("MESHFORGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return shared / "data" / "meshes" / "spot" / "spot.obj"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--base", type=Path, help="a valid contract-style capture ZIP (default: render spot)")
    args = parser.parse_args(argv)
    base = args.base
    if base is None:
        from meshforge.synthetic import render_capture

        base = render_capture(_spot(), args.out / "base" / "capture.zip", rgb_size=512, depth_size=256).capture
    manifest = write_corpus(args.out, base)
    print(f"{len(manifest['uploads'])} uploads, {len(manifest['requests']) + len(manifest['job_requests'])} "
          f"requests, {len(manifest['scenarios'])} scenarios -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
