"""Every capture error code, each triggered by a real bad file.

Each case builds a real bad upload (a ZIP or a directory) from a rendered capture, then checks:

- ``load_capture`` raises the :class:`CaptureError` subclass of the exact ``code``, with the
  HTTP status of the public contract (the README's error table);
- the message names the offending member, view or JSON key (what a user must change);
- header-level faults are already refused by ``inspect_capture`` with the same code, and faults
  that need the pixels (``stage="load"``) pass inspection and fail only when decoding;
- nothing was written to disk: the working directory and the temporary directory (both pointed
  at empty folders for the test) stay empty and the inputs stay untouched.
"""

from __future__ import annotations

import io
import json
import math
import stat
import struct
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from meshforge import Limits, inspect_capture, load_capture
from meshforge.camera import VIEW_NAMES, rig
from meshforge.capture import CaptureManifest
from meshforge.errors import CaptureError, MeshforgeError, by_code
from meshforge.synthetic import render_capture

from .helpers import member, png_bytes, rezip, snapshot

#: the public contract: code -> HTTP status (api.md: 400, 413, 415, 422)
STATUS = {
    "NOT_A_ZIP": 415, "CORRUPT_ARCHIVE": 400, "UNSAFE_ARCHIVE": 400, "DUPLICATE_FILE": 422,
    "TOO_MANY_FILES": 413, "CAPTURE_TOO_LARGE": 413, "COMPRESSION_BOMB": 413, "MISSING_VIEW": 422,
    "UNKNOWN_VIEW": 422, "UNEXPECTED_LAYOUT": 422, "UNREADABLE_IMAGE": 422, "IMAGE_TOO_LARGE": 413,
    "UNSUPPORTED_IMAGE_MODE": 422, "IMAGE_NOT_SQUARE": 422, "IMAGE_SIZE_OUT_OF_RANGE": 422, "SIZE_MISMATCH": 422,
    "EMPTY_DEPTH": 422, "EMPTY_MASK": 422, "BAD_CAMERAS_JSON": 422, "INCONSISTENT_VIEWS": 422,
    "TOO_FEW_VIEWS": 422,
}

FRONT, TOP = "multi_views/front.png", "multi_views/top.png"
D_FRONT, D_TOP = "depth_renders/front.png", "depth_renders/top.png"


# ── building bad files ───────────────────────────────────────────────────────────────────

def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def raw_png(width: int, height: int, bits: int, colour: int, idat: bytes) -> bytes:
    """A PNG written chunk by chunk, so that its IHDR can declare anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(idat))
            + _chunk(b"IEND", b""))


def png16_rgb(rgb8: np.ndarray) -> bytes:
    """A valid 16-bit-per-channel RGB PNG of an 8-bit image (Pillow cannot write these)."""
    h, w, _ = rgb8.shape
    rows = (rgb8.astype(">u2") * 257).reshape(h, w * 3)
    return raw_png(w, h, 16, 2, b"".join(b"\x00" + row.tobytes() for row in rows))


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def write_zip(dst: Path, entries, compression=zipfile.ZIP_DEFLATED) -> Path:
    """entries: (name or ZipInfo, bytes) or (name, bytes, compress_type)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is what some cases want
        with zipfile.ZipFile(dst, "w", compression) as zf:
            for entry in entries:
                name, data, *method = entry
                if method:
                    zf.writestr(name, data, compress_type=method[0])
                else:
                    zf.writestr(name, data)
    return dst


def members(src: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(src) as zf:
        return [(n, zf.read(n)) for n in zf.namelist()]


def central_records(data: bytes) -> dict[str, int]:
    """member name -> offset of its central-directory record."""
    eocd = data.rindex(b"PK\x05\x06")
    count, _, start = struct.unpack("<HII", data[eocd + 10:eocd + 20])
    out, pos = {}, start
    for _ in range(count):
        n, m, k = struct.unpack("<HHH", data[pos + 28:pos + 34])
        out[data[pos + 46:pos + 46 + n].decode()] = pos
        pos += 46 + n + m + k
    return out


def data_offset(path: Path, name: str) -> tuple[int, int]:
    """(offset, length) of a member's stored bytes inside the archive."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    raw = path.read_bytes()
    n, m = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + n + m, info.compress_size


def patch(path: Path, offset: int, new: bytes) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(new)] = new
    path.write_bytes(bytes(raw))
    return path


def transforms_zip(dst: Path, rgba_zip: Path, views=VIEW_NAMES, doc_extra: dict | None = None,
                   frame_extra: dict | None = None) -> Path:
    """A transforms.json capture (NeRF layout) from a capture rendered with alpha."""
    size = Image.open(io.BytesIO(member(rgba_zip, FRONT))).size[0]
    cams = rig(size=size)
    frames = [{"file_path": f"images/{v}.png", "transform_matrix": cams[v].camera_to_world.tolist(),
               **((frame_extra or {}).get(v, {}))} for v in views]
    doc = {"camera_angle_x": math.radians(40.0), "frames": frames, **(doc_extra or {})}
    doc = {k: v for k, v in doc.items() if v is not ...}       # ... = leave the key out
    entries = [(f"images/{v}.png", member(rgba_zip, f"multi_views/{v}.png")) for v in views]
    return write_zip(dst, entries + [("transforms.json", json.dumps(doc))])


# ── the base captures bad files are made from ────────────────────────────────────────────

class Bases:
    """Real captures to spoil; rendered on first use."""

    def __init__(self, contract: Path, root: Path, mesh: Path):
        self.contract = contract          # 512² views, 256² 16-bit linear depth, cameras.json
        self.root, self.mesh = root, mesh

    @cached_property
    def sample(self) -> Path:             # like the sample capture: 8-bit relative depth, no cameras.json
        return render_capture(self.mesh, self.root / "sample.zip", style="sample", rgb_size=256,
                              depth_size=256).capture

    @cached_property
    def rgba(self) -> Path:               # RGBA views (alpha = mask), for transforms.json captures
        return render_capture(self.mesh, self.root / "rgba.zip", rgb_size=256, depth_size=256, alpha=True).capture

    def view(self, name: str = "front") -> Image.Image:
        return Image.open(io.BytesIO(member(self.contract, f"multi_views/{name}.png"))).convert("RGB")

    def cameras(self) -> dict:
        return json.loads(member(self.contract, "cameras.json"))


@pytest.fixture(scope="module")
def bases(spot_small, spot_mesh, tmp_path_factory) -> Bases:
    return Bases(spot_small.capture, tmp_path_factory.mktemp("bad_capture_bases"), spot_mesh)


# ── the cases ────────────────────────────────────────────────────────────────────────────

@dataclass
class Case:
    """A bad input: ``build(bases, folder)`` writes it into ``folder`` and returns its path
    (or ``(path, limits)``); the error must have ``code`` and its message must contain ``names``."""

    id: str
    code: str
    build: Callable
    names: tuple = ()
    stage: str = "inspect"        # "inspect": refused from headers alone; "load": only decoding finds it
    details: dict = field(default_factory=dict)   # details that must be present with these values


def swap_zip(src, out, a, b, folder="depth_renders"):
    return rezip(src, out, rename={f"{folder}/{a}.png": f"{folder}/{b}.png", f"{folder}/{b}.png": f"{folder}/{a}.png"})


def with_cameras(doc_or_bytes, base: str = "contract"):
    """Build: the contract capture (or the sample one) with another cameras.json."""
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode()

    def build(b: Bases, d: Path):
        src = b.contract if base == "contract" else b.sample
        if base == "contract":
            return rezip(src, d / "capture.zip", replace={"cameras.json": data})
        return rezip(src, d / "capture.zip", add={"cameras.json": data})
    return build


def edit_cameras(edit: Callable[[dict], None]):
    """Build: the contract capture with its cameras.json edited in place by ``edit``."""
    def build(b: Bases, d: Path):
        doc = b.cameras()
        edit(doc)
        return rezip(b.contract, d / "capture.zip", replace={"cameras.json": json.dumps(doc).encode()})
    return build


def set_key(path: str, value):
    def edit(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return edit_cameras(edit)


def replace_member(name: str, make: Callable[[Bases], bytes], new_name: str | None = None):
    """Build: the contract capture with one member replaced (and possibly renamed)."""
    def build(b: Bases, d: Path):
        return rezip(b.contract, d / "capture.zip", replace={name: make(b)},
                     rename={name: new_name} if new_name else None)
    return build


def stored_copy(b: Bases, d: Path, name: str = "capture.zip") -> Path:
    return write_zip(d / name, [(n, data, zipfile.ZIP_STORED) for n, data in members(b.contract)])


def rotation_scaled(s: float):
    m = np.eye(4)
    m[:3, :3] *= s
    m[2, 3] = 2.5
    return m.tolist()


# ---- NOT_A_ZIP ----

def _png_renamed(b, d):
    (d / "capture.zip").write_bytes(member(b.contract, FRONT))
    return d / "capture.zip"


def _empty_file(b, d):
    (d / "capture.zip").write_bytes(b"")
    return d / "capture.zip"


def _random_bytes(b, d):
    (d / "capture.zip").write_bytes(np.random.default_rng(1).bytes(4096))
    return d / "capture.zip"


def _pk_garbage(b, d):
    (d / "capture.zip").write_bytes(b"PK\x07\x08" + np.random.default_rng(2).bytes(4096))
    return d / "capture.zip"


# ---- CORRUPT_ARCHIVE ----

def _truncated(fraction):
    def build(b, d):
        raw = b.contract.read_bytes()
        (d / "capture.zip").write_bytes(raw[:int(len(raw) * fraction)])
        return d / "capture.zip"
    return build


def _bad_crc_stored(b, d):
    path = stored_copy(b, d)
    off, length = data_offset(path, FRONT)
    raw = path.read_bytes()
    return patch(path, off + length // 2, bytes([raw[off + length // 2] ^ 0xFF]))


def _flipped_deflate(b, d):
    path = rezip(b.contract, d / "capture.zip")
    off, length = data_offset(path, D_TOP)
    raw = path.read_bytes()
    return patch(path, off + length // 3, bytes(x ^ 0x5A for x in raw[off + length // 3:off + length // 3 + 8]))


def _member_past_end(b, d):
    path = rezip(b.contract, d / "capture.zip", drop=("cameras.json",))
    last = zipfile.ZipFile(path).infolist()[-1].filename   # depth_renders/bottom.png
    rec = central_records(path.read_bytes())[last]
    return patch(path, rec + 20, struct.pack("<I", path.stat().st_size))  # compressed size: past the end


# ---- UNSAFE_ARCHIVE ----

def _extra_member(name, data=b"x"):
    def build(b, d):
        return write_zip(d / "capture.zip", members(b.contract) + [(name, data)])
    return build


def _renamed_member(old, new):
    def build(b, d):
        return write_zip(d / "capture.zip", [(new if n == old else n, data) for n, data in members(b.contract)])
    return build


def _symlink_member(b, d):
    info = zipfile.ZipInfo("multi_views/extra.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return write_zip(d / "capture.zip", members(b.contract) + [(info, b"/etc/passwd")])


def _encrypted_member(b, d):
    path = d / "capture.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in members(b.contract):
            zf.writestr(n, data)
        zf.getinfo(FRONT).flag_bits |= 0x1            # written into the central directory at close
    with zipfile.ZipFile(path) as zf:
        off = zf.getinfo(FRONT).header_offset
    raw = path.read_bytes()
    flags = struct.unpack("<H", raw[off + 6:off + 8])[0] | 0x1
    return patch(path, off + 6, struct.pack("<H", flags))  # and into the local header


def _compressed_with(method):
    def build(b, d):
        return write_zip(d / "capture.zip", [(n, data, method if n == FRONT else zipfile.ZIP_DEFLATED)
                                             for n, data in members(b.contract)])
    return build


def _overlapping(b, d):
    """The central directory points two members at the same local header (a 'quoted overlap' bomb)."""
    path = rezip(b.contract, d / "capture.zip")
    with zipfile.ZipFile(path) as zf:
        front_off = zf.getinfo(FRONT).header_offset
    rec = central_records(path.read_bytes())["multi_views/back.png"]
    return patch(path, rec + 42, struct.pack("<I", front_off))


def _symlink_in_directory(b, d):
    root = d / "capture"
    with zipfile.ZipFile(b.contract) as zf:
        zf.extractall(root)  # the test's own extraction, into its tmp_path
    (root / "multi_views" / "front.png").unlink()
    (root / "multi_views" / "front.png").symlink_to(d / "elsewhere.png")
    (d / "elsewhere.png").write_bytes(member(b.contract, FRONT))
    return root


# ---- DUPLICATE_FILE ----

def _with_extra(name, source_member=FRONT):
    def build(b, d):
        return write_zip(d / "capture.zip", members(b.contract) + [(name, member(b.contract, source_member))])
    return build


def _jpeg_twin(b, d):
    jpeg = image_bytes(b.view(), "JPEG")
    return write_zip(d / "capture.zip", members(b.contract) + [("multi_views/front.jpg", jpeg)])


def _alias_in_directory(b, d):
    root = d / "capture"
    with zipfile.ZipFile(b.contract) as zf:
        zf.extractall(root)
    (root / "depth_renders" / "+y_depth.png").write_bytes(member(b.contract, D_TOP))
    return root


# ---- TOO_MANY_FILES / CAPTURE_TOO_LARGE / COMPRESSION_BOMB ----

def _with_limits(limits_of: Callable[[Path], Limits], directory: bool = False):
    def build(b, d):
        if directory:
            with zipfile.ZipFile(b.contract) as zf:
                zf.extractall(d / "capture")
            return d / "capture", limits_of(b.contract)
        path = rezip(b.contract, d / "capture.zip")
        return path, limits_of(path)
    return build


def _sizes(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: i.file_size for i in zf.infolist()}


def _largest_file_over_limit(b, d):
    """A directory capture whose largest file is one byte over the per-file limit."""
    with zipfile.ZipFile(b.contract) as zf:
        zf.extractall(d / "capture")
    (d / "capture" / "multi_views" / "bottom.png").write_bytes(member(b.contract, FRONT) + bytes(100_000))
    return d / "capture", Limits(max_member_bytes=len(member(b.contract, FRONT)) + 100_000 - 1)


def _huge_jpeg(b):
    """A real JPEG whose frame header (SOF0) is patched to declare 20000×20000 pixels."""
    data = bytearray(image_bytes(b.view(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)
    return bytes(data)


def _bomb(b, d):
    return rezip(b.contract, d / "capture.zip", replace={FRONT: bytes(2 << 20)})


# ---- MISSING_VIEW / UNKNOWN_VIEW / UNEXPECTED_LAYOUT ----

def _drop(*names, src="contract"):
    def build(b, d):
        return rezip(getattr(b, src), d / "capture.zip", drop=names)
    return build


def _missing_in_directory(b, d):
    with zipfile.ZipFile(b.contract) as zf:
        zf.extractall(d / "capture")
    (d / "capture" / "depth_renders" / "left.png").unlink()
    return d / "capture"


def _rename_folder(old, new):
    def build(b, d):
        return write_zip(d / "capture.zip", [(n.replace(old + "/", new + "/", 1), data)
                                             for n, data in members(b.contract)])
    return build


def _nested_zip(b, d):
    return write_zip(d / "outer.zip", [("capture.zip", b.contract.read_bytes())])


def _empty_zip(b, d):
    return write_zip(d / "capture.zip", [])


def _two_folders_deep(b, d):
    return rezip(b.contract, d / "capture.zip", prefix="upload/capture/")


def _litter_only(b, d):
    return write_zip(d / "capture.zip", [("__MACOSX/._capture", b"\x00\x05\x16\x07"), (".DS_Store", b"\x00" * 64)])


# ---- images ----

def _corrupt_idat(b):
    data = bytearray(member(b.contract, FRONT))
    start = data.index(b"IDAT") + 4 + 64                        # keep the signature and the IHDR intact
    data[start:start + 256] = np.random.default_rng(3).bytes(256)
    return bytes(data)


def _truncated_png(b):
    data = member(b.contract, FRONT)
    return data[:len(data) // 2]


def _huge_ihdr(b):
    return raw_png(20000, 20000, 8, 2, b"\x00" * 64)            # declares 20000², carries 64 bytes


def _gif(b):
    return image_bytes(b.view().convert("P"), "GIF")


def _rgb_size(w, h=None):
    return lambda b: png_bytes(np.asarray(b.view().resize((w, h or w))))


def _depth_of(b: Bases, view="top") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(member(b.contract, f"depth_renders/{view}.png"))))


def _depth8(b):
    return png_bytes((_depth_of(b) >> 8).astype(np.uint8))


def _rgb_depth(b):
    d8 = (_depth_of(b) >> 8).astype(np.uint8)
    return png_bytes(np.stack([d8] * 3, axis=-1))


def _zero_depth(b):
    return image_bytes(Image.fromarray(np.zeros_like(_depth_of(b))))


def _transparent(b):
    rgb = np.asarray(b.view())
    return png_bytes(np.concatenate([rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=-1))


# ---- cameras.json ----

def _front_matrix(value):
    return set_key("views.front.camera_to_world", value)


def _transforms(views=VIEW_NAMES, **kwargs):
    def build(b, d):
        return transforms_zip(d / "capture.zip", b.rgba, views, **kwargs)
    return build


SHEARED = [[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.5], [0, 0, 0, 1]]
MIRRORED = [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.5], [0, 0, 0, 1]]
BAD_LAST_ROW = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.5], [0, 0, 1, 1]]
SINGULAR = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 2.5], [0, 0, 0, 1]]
CAMS = "cameras.json"

CASES = [
    # NOT_A_ZIP
    Case("png-renamed-zip", "NOT_A_ZIP", _png_renamed, ("capture.zip", "PNG")),
    Case("empty-file", "NOT_A_ZIP", _empty_file, ("capture.zip", "empty")),
    Case("random-bytes", "NOT_A_ZIP", _random_bytes, ("capture.zip",)),
    Case("pk-then-garbage", "NOT_A_ZIP", _pk_garbage, ("capture.zip",)),
    # CORRUPT_ARCHIVE
    Case("truncated-half", "CORRUPT_ARCHIVE", _truncated(0.5), ("capture.zip",)),
    Case("truncated-end-record", "CORRUPT_ARCHIVE", _truncated(0.9999), ("capture.zip",)),
    Case("bad-crc", "CORRUPT_ARCHIVE", _bad_crc_stored, (FRONT, "CRC")),
    Case("flipped-deflate-bytes", "CORRUPT_ARCHIVE", _flipped_deflate, (D_TOP,)),
    Case("member-past-end", "CORRUPT_ARCHIVE", _member_past_end, ("depth_renders/bottom.png",)),
    # UNSAFE_ARCHIVE
    Case("dotdot", "UNSAFE_ARCHIVE", _extra_member("../evil.png"), ("../evil.png", "..")),
    Case("dotdot-inside", "UNSAFE_ARCHIVE", _extra_member("capture/../../etc/cron.d/x"),
         ("capture/../../etc/cron.d/x",)),
    Case("absolute", "UNSAFE_ARCHIVE", _extra_member("/etc/passwd"), ("/etc/passwd", "absolute")),
    Case("drive-letter", "UNSAFE_ARCHIVE", _extra_member("C:/Windows/evil.png"), ("C:/Windows/evil.png", "drive")),
    Case("drive-relative", "UNSAFE_ARCHIVE", _extra_member("C:evil.png"), ("C:evil.png", "drive")),
    Case("backslash", "UNSAFE_ARCHIVE", _renamed_member(FRONT, "multi_views\\front.png"),
         ("multi_views\\\\front.png", "backslash")),
    Case("control-char", "UNSAFE_ARCHIVE", _renamed_member(FRONT, "multi_views/front\x1b[2J.png"),
         ("multi_views/front\\x1b[2J.png", "control")),
    Case("newline", "UNSAFE_ARCHIVE", _extra_member("notes\n.txt"), ("notes\\n.txt", "control")),
    Case("symlink", "UNSAFE_ARCHIVE", _symlink_member, ("multi_views/extra.png", "symbolic link")),
    Case("symlink-in-directory", "UNSAFE_ARCHIVE", _symlink_in_directory, (FRONT, "symbolic link")),
    Case("encrypted", "UNSAFE_ARCHIVE", _encrypted_member, (FRONT, "encrypted")),
    Case("bzip2", "UNSAFE_ARCHIVE", _compressed_with(zipfile.ZIP_BZIP2), (FRONT, "compression method 12")),
    Case("lzma", "UNSAFE_ARCHIVE", _compressed_with(zipfile.ZIP_LZMA), (FRONT, "compression method 14")),
    Case("overlapping-entries", "UNSAFE_ARCHIVE", _overlapping, ("multi_views/back.png", "overlaps")),
    # DUPLICATE_FILE
    Case("same-name-twice", "DUPLICATE_FILE", _with_extra(FRONT), (FRONT,)),
    Case("name-and-alias", "DUPLICATE_FILE", _with_extra("multi_views/+z.png"),
         (FRONT, "multi_views/+z.png", "front view")),
    Case("name-and-case", "DUPLICATE_FILE", _with_extra("multi_views/Front.PNG"), (FRONT, "multi_views/Front.PNG")),
    Case("png-and-jpg", "DUPLICATE_FILE", _jpeg_twin, (FRONT, "multi_views/front.jpg", "front view")),
    Case("depth-suffix-twin", "DUPLICATE_FILE", _with_extra("depth_renders/front_depth.png", D_FRONT),
         (D_FRONT, "depth_renders/front_depth.png", "front depth render")),
    Case("cameras-json-twice", "DUPLICATE_FILE", _with_extra("Cameras.JSON", CAMS), (CAMS, "Cameras.JSON")),
    Case("alias-in-directory", "DUPLICATE_FILE", _alias_in_directory, (D_TOP, "depth_renders/+y_depth.png")),
    # TOO_MANY_FILES
    Case("too-many-members", "TOO_MANY_FILES", _with_limits(lambda p: Limits(max_members=8)), ("13", "8")),
    # a directory may hold 4× max_members files (os.walk sees every stray file); 13 files > 4 × 2
    Case("too-many-files-directory", "TOO_MANY_FILES", _with_limits(lambda p: Limits(max_members=2), directory=True),
         ("9 members", "limit of 8")),
    # CAPTURE_TOO_LARGE
    Case("upload-too-large", "CAPTURE_TOO_LARGE",
         _with_limits(lambda p: Limits(max_archive_bytes=p.stat().st_size - 1)), ("capture.zip",)),
    Case("member-too-large", "CAPTURE_TOO_LARGE", _with_limits(lambda p: Limits(max_member_bytes=_sizes(p)[FRONT] - 1)),
         (FRONT,)),
    Case("total-too-large", "CAPTURE_TOO_LARGE",
         _with_limits(lambda p: Limits(max_total_bytes=sum(_sizes(p).values()) - 1)), ("uncompressed",)),
    Case("file-too-large-directory", "CAPTURE_TOO_LARGE", _largest_file_over_limit, ("multi_views/bottom.png",)),
    # COMPRESSION_BOMB
    Case("deflated-zeros", "COMPRESSION_BOMB", _bomb, (FRONT,)),
    # MISSING_VIEW
    Case("missing-view", "MISSING_VIEW", _drop(TOP), (TOP,), details={"view": "top", "folder": "multi_views"}),
    Case("missing-depth", "MISSING_VIEW", _drop("depth_renders/left.png"), ("depth_renders/left.png",),
         details={"view": "left", "folder": "depth_renders"}),
    Case("missing-depth-directory", "MISSING_VIEW", _missing_in_directory, ("depth_renders/left.png",)),
    Case("missing-frame-file", "MISSING_VIEW",
         _transforms(frame_extra={"top": {"file_path": "images/tpo.png"}}), ("'images/tpo.png' is missing",)),
    # UNKNOWN_VIEW
    Case("side-view", "UNKNOWN_VIEW", _with_extra("multi_views/side.png"), ("multi_views/side.png",)),
    Case("bmp-view", "UNKNOWN_VIEW", _renamed_member(FRONT, "multi_views/front.bmp"), ("multi_views/front.bmp",)),
    Case("jpeg-depth", "UNKNOWN_VIEW", _renamed_member(D_FRONT, "depth_renders/front.jpg"),
         ("depth_renders/front.jpg",)),
    Case("no-extension", "UNKNOWN_VIEW", _renamed_member(FRONT, "multi_views/front"), ("multi_views/front",)),
    # UNEXPECTED_LAYOUT
    Case("no-multi-views-folder", "UNEXPECTED_LAYOUT", _rename_folder("multi_views", "views"),
         ("multi_views/", "views/")),
    Case("no-depth-folder", "UNEXPECTED_LAYOUT", _rename_folder("depth_renders", "depth"),
         ("depth_renders/", "depth/")),
    Case("nested-zip", "UNEXPECTED_LAYOUT", _nested_zip, ("capture.zip", "another ZIP")),
    Case("empty-zip", "UNEXPECTED_LAYOUT", _empty_zip, ("empty",)),
    Case("two-enclosing-folders", "UNEXPECTED_LAYOUT", _two_folders_deep, ("capture/",)),
    Case("only-macos-litter", "UNEXPECTED_LAYOUT", _litter_only, ("multi_views/", "macOS litter")),
    # UNREADABLE_IMAGE
    Case("corrupt-png-data", "UNREADABLE_IMAGE", replace_member(FRONT, _corrupt_idat), (FRONT,), stage="load"),
    Case("truncated-png", "UNREADABLE_IMAGE", replace_member(FRONT, _truncated_png),
         (FRONT, "truncated"), stage="load"),
    Case("text-named-png", "UNREADABLE_IMAGE", replace_member(TOP, lambda b: b"front view, see attachment\n"), (TOP,)),
    Case("png-cut-in-header", "UNREADABLE_IMAGE", replace_member(D_TOP, lambda b: member(b.contract, D_TOP)[:20]),
         (D_TOP,)),
    Case("gif-named-png", "UNREADABLE_IMAGE", replace_member(FRONT, _gif), (FRONT, "GIF")),
    # IMAGE_TOO_LARGE
    Case("ihdr-20000", "IMAGE_TOO_LARGE", replace_member(FRONT, _huge_ihdr), (FRONT, "20000×20000", "4096")),
    Case("jpeg-sof-20000", "IMAGE_TOO_LARGE", replace_member(FRONT, _huge_jpeg, "multi_views/front.jpg"),
         ("multi_views/front.jpg", "400000000 pixels")),
    Case("depth-ihdr-20000", "IMAGE_TOO_LARGE", replace_member(D_TOP, lambda b: raw_png(20000, 20000, 16, 0, b"")),
         (D_TOP, "20000×20000")),
    # UNSUPPORTED_IMAGE_MODE
    Case("rgb16-view", "UNSUPPORTED_IMAGE_MODE", replace_member(FRONT, lambda b: png16_rgb(np.asarray(b.view()))),
         (FRONT, "16-bit RGB")),
    Case("palette-view", "UNSUPPORTED_IMAGE_MODE", replace_member(FRONT, lambda b: image_bytes(b.view().convert("P"))),
         (FRONT, "palette")),
    Case("cmyk-jpeg-view", "UNSUPPORTED_IMAGE_MODE",
         replace_member(FRONT, lambda b: image_bytes(b.view().convert("CMYK"), "JPEG"), "multi_views/front.jpg"),
         ("multi_views/front.jpg", "CMYK")),
    Case("grey-alpha-view", "UNSUPPORTED_IMAGE_MODE",
         replace_member(FRONT, lambda b: image_bytes(b.view().convert("LA"))), (FRONT, "grayscale+alpha")),
    Case("grey-view", "UNSUPPORTED_IMAGE_MODE", replace_member(FRONT, lambda b: image_bytes(b.view().convert("L"))),
         (FRONT, "grayscale")),
    Case("rgb-depth", "UNSUPPORTED_IMAGE_MODE", replace_member(D_TOP, _rgb_depth), (D_TOP, "RGB")),
    Case("jpeg-bytes-as-depth", "UNSUPPORTED_IMAGE_MODE",
         replace_member(D_TOP, lambda b: image_bytes(Image.fromarray((_depth_of(b) >> 8).astype(np.uint8)), "JPEG")),
         (D_TOP, "JPEG")),
    # IMAGE_NOT_SQUARE / IMAGE_SIZE_OUT_OF_RANGE
    Case("wide-view", "IMAGE_NOT_SQUARE", replace_member(FRONT, _rgb_size(512, 384)), (FRONT, "512×384")),
    Case("tall-depth", "IMAGE_NOT_SQUARE",
         replace_member(D_TOP, lambda b: png_bytes(_depth_of(b)[:, :200].copy())), (D_TOP, "200×256")),
    Case("tiny-view", "IMAGE_SIZE_OUT_OF_RANGE", replace_member(FRONT, _rgb_size(128)), (FRONT, "128×128", "256")),
    # SIZE_MISMATCH
    Case("one-view-smaller", "SIZE_MISMATCH", replace_member(TOP, _rgb_size(256)), (TOP, FRONT, "256", "512")),
    Case("one-depth-larger", "SIZE_MISMATCH",
         replace_member(D_TOP, lambda b: png_bytes(np.kron(_depth_of(b), np.ones((2, 2), np.uint16)))),
         (D_TOP, D_FRONT, "512", "256")),
    Case("depth-8-and-16-bit", "SIZE_MISMATCH", replace_member(D_TOP, _depth8),
         (f"{D_TOP} is an 8-bit", D_FRONT, "16-bit")),
    # EMPTY_DEPTH / EMPTY_MASK
    Case("all-zero-depth", "EMPTY_DEPTH", replace_member(D_TOP, _zero_depth), (D_TOP,), stage="load"),
    Case("alpha-zero", "EMPTY_MASK", replace_member(FRONT, _transparent), (FRONT, "alpha"), stage="load"),
    # BAD_CAMERAS_JSON
    Case("invalid-json", "BAD_CAMERAS_JSON", with_cameras(b'{"views": {"front": '), (CAMS, "invalid JSON", "line 1")),
    Case("not-utf8", "BAD_CAMERAS_JSON", with_cameras(b'{"world_up": "\xff+y"}'), (CAMS, "UTF-8")),
    Case("top-level-list", "BAD_CAMERAS_JSON", with_cameras([{"front": {}}]), (CAMS, "top level", "list")),
    Case("fov-string", "BAD_CAMERAS_JSON", set_key("views.front.fov_y_degrees", "40"),
         (CAMS, "views.front.fov_y_degrees", "'40'"), details={"key": "views.front.fov_y_degrees"}),
    Case("fov-bool", "BAD_CAMERAS_JSON", set_key("views.left.fov_y_degrees", True), ("views.left.fov_y_degrees",)),
    Case("fov-nan", "BAD_CAMERAS_JSON", with_cameras(b'{"views": {"top": {"fov_y_degrees": NaN}}}'),
         ("views.top.fov_y_degrees", "finite")),
    Case("fov-zero", "BAD_CAMERAS_JSON", set_key("views.front.fov_y_degrees", 0), ("views.front.fov_y_degrees", "180")),
    Case("fov-190", "BAD_CAMERAS_JSON", set_key("views.back.fov_y_degrees", 190), ("views.back.fov_y_degrees", "190")),
    Case("matrix-3x4", "BAD_CAMERAS_JSON", _front_matrix(SINGULAR[:3]), ("views.front.camera_to_world", "4×4")),
    Case("matrix-entry-string", "BAD_CAMERAS_JSON", _front_matrix([[1, 0, 0, "0"]] + BAD_LAST_ROW[1:]),
         ("views.front.camera_to_world[0][3]",)),
    Case("singular-matrix", "BAD_CAMERAS_JSON", _front_matrix(SINGULAR), ("views.front.camera_to_world", "singular")),
    Case("scaled-matrix", "BAD_CAMERAS_JSON", _front_matrix(rotation_scaled(2.0)),
         ("views.front.camera_to_world", "scaled")),
    Case("sheared-matrix", "BAD_CAMERAS_JSON", _front_matrix(SHEARED), ("views.front.camera_to_world", "rotation")),
    Case("mirrored-matrix", "BAD_CAMERAS_JSON", _front_matrix(MIRRORED),
         ("views.front.camera_to_world", "determinant")),
    Case("last-row-wrong", "BAD_CAMERAS_JSON", _front_matrix(BAD_LAST_ROW),
         ("views.front.camera_to_world", "last row")),
    Case("near-not-below-far", "BAD_CAMERAS_JSON", set_key("depth.far", 1.5), ("depth.near", "far")),
    Case("near-negative", "BAD_CAMERAS_JSON", set_key("depth.near", -1.0), ("depth.near",)),
    Case("inverse16-near-zero", "BAD_CAMERAS_JSON",
         edit_cameras(lambda doc: doc["depth"].update(encoding="inverse16", near=0.0)), ("depth.near", "inverse16")),
    Case("unknown-view-key", "BAD_CAMERAS_JSON", set_key("views.side", {"fov_y_degrees": 40}), ("views.side",)),
    Case("views-not-object", "BAD_CAMERAS_JSON", set_key("views", [1, 2]), (CAMS, "views")),
    Case("view-not-object", "BAD_CAMERAS_JSON", set_key("views.front", 40), ("views.front",)),
    Case("world-up-z", "BAD_CAMERAS_JSON", set_key("world_up", "+z"), ("world_up", "+z")),
    Case("unknown-encoding", "BAD_CAMERAS_JSON", set_key("depth.encoding", "float32"), ("depth.encoding", "float32")),
    Case("unknown-depth-kind", "BAD_CAMERAS_JSON", set_key("depth.kind", "disparity"), ("depth.kind", "disparity")),
    Case("depth-not-object", "BAD_CAMERAS_JSON", set_key("depth", "linear16"), (CAMS, "depth")),
    Case("linear16-on-8-bit", "BAD_CAMERAS_JSON", with_cameras({"depth": {"encoding": "linear16"}}, base="sample"),
         (CAMS, "depth.encoding", "linear16", "8-bit")),
    Case("relative16-on-8-bit", "BAD_CAMERAS_JSON", with_cameras({"depth": {"encoding": "relative16"}}, base="sample"),
         ("depth.encoding", "relative16")),
    Case("linear8-on-16-bit", "BAD_CAMERAS_JSON", set_key("depth.encoding", "linear8"), ("depth.encoding", "16-bit")),
    Case("fx-without-fy", "BAD_CAMERAS_JSON",
         edit_cameras(lambda doc: doc["views"]["front"].update(fx=700.0)), ("views.front", "fy", "cx", "cy")),
    Case("fx-negative", "BAD_CAMERAS_JSON",
         edit_cameras(lambda doc: doc["views"]["front"].update(fx=-700.0, fy=700.0, cx=256, cy=256)),
         ("views.front.fx",)),
    Case("default-near-unusable", "BAD_CAMERAS_JSON",
         edit_cameras(lambda doc: (doc["depth"].pop("near"), doc["depth"].pop("far"),
                                   doc["views"]["front"]["camera_to_world"][2].__setitem__(3, 0.5))),
         ("depth.near", "front"), stage="load"),
    Case("transforms-bad-matrix", "BAD_CAMERAS_JSON",
         _transforms(frame_extra={"left": {"transform_matrix": SINGULAR}}),
         ("transforms.json", "frames[2].transform_matrix", "singular")),
    Case("transforms-angle-null", "BAD_CAMERAS_JSON", _transforms(doc_extra={"camera_angle_x": None}),
         ("transforms.json", "camera_angle_x", "expected a number")),
    Case("transforms-no-intrinsics", "BAD_CAMERAS_JSON", _transforms(doc_extra={"camera_angle_x": ...}),
         ("transforms.json", "camera_angle_x", "fl_x")),
    Case("transforms-frames-empty", "BAD_CAMERAS_JSON", _transforms(views=()), ("transforms.json", "frames")),
    # INCONSISTENT_VIEWS
    Case("swapped-depths-sample-style", "INCONSISTENT_VIEWS",
         lambda b, d: swap_zip(b.sample, d / "capture.zip", "front", "back"), ("back",), stage="load"),
    Case("swapped-depths-contract", "INCONSISTENT_VIEWS",
         lambda b, d: swap_zip(b.contract, d / "capture.zip", "front", "left"), ("left", "camera_to_world"),
         stage="load"),
    # TOO_FEW_VIEWS
    Case("transforms-two-frames", "TOO_FEW_VIEWS", _transforms(views=("front", "left")), ("2 usable views", "3")),
]


# ── the test ─────────────────────────────────────────────────────────────────────────────

@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Inputs go to tmp_path/in; the working directory and the temporary directory are empty
    folders of their own, so that anything a loader extracts or spills would show up there."""
    dirs = {k: tmp_path / k for k in ("in", "cwd", "tmp")}
    for p in dirs.values():
        p.mkdir()
    monkeypatch.chdir(dirs["cwd"])
    monkeypatch.setenv("TMPDIR", str(dirs["tmp"]))
    monkeypatch.setattr(tempfile, "tempdir", str(dirs["tmp"]))
    return tmp_path, dirs


def _raises(call, *args) -> CaptureError:
    with pytest.raises(CaptureError) as info:
        call(*args)
    return info.value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_capture_error(case: Case, bases, sandbox):
    root, dirs = sandbox
    built = case.build(bases, dirs["in"])
    source, limits = built if isinstance(built, tuple) else (built, Limits())
    before = snapshot(root)

    err = _raises(load_capture, source, limits)
    assert err.code == case.code, f"{case.id}: expected {case.code}, got {err.code}: {err.message}"
    assert type(err).http_status == STATUS[case.code] == err.http_status
    assert type(err) is by_code()[case.code]
    for name in case.names:
        assert name in err.message, f"{case.id}: {name!r} is not named in {err.message!r}"
    for key, value in case.details.items():
        assert err.details.get(key) == value, (key, err.details)
    assert err.message != type(err).template, "the message template was not filled in"
    body = json.loads(json.dumps(err.to_dict()))
    assert body["code"] == case.code and body["message"] == err.message
    assert type(MeshforgeError.from_dict(body)) is type(err)

    if case.stage == "inspect":
        early = _raises(inspect_capture, source, limits)
        assert (early.code, early.message) == (err.code, err.message)
    else:
        assert isinstance(inspect_capture(source, limits), CaptureManifest)

    assert snapshot(root) == before, "loading wrote, changed or removed files"
    assert not any(dirs["cwd"].iterdir()) and not any(dirs["tmp"].iterdir())


def test_every_capture_code_is_covered():
    """Each CaptureError subclass (the codes of the README table) has at least one real bad file here."""
    capture_codes = {code for code, cls in by_code().items()
                     if issubclass(cls, CaptureError) and cls is not CaptureError}
    assert capture_codes == {c.code for c in CASES}
    assert capture_codes == set(STATUS)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
