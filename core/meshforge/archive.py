"""Reading a capture's files from a ZIP archive or a directory, safely.

Nothing is ever extracted to disk under a name taken from the archive: members are mapped
to *roles* (``("view", "front")``, ``("depth", "front")``, ``("cameras", None)``...) and read
into memory under hard byte limits. Before a single byte is inflated, the central
directory is checked: member count, names (absolute paths, ``..``, drive letters,
backslashes, control characters), symbolic links, encryption, compression methods,
declared sizes, compression ratios and overlapping entries (the "quoted overlap" bomb,
which older CPythons do not detect themselves).
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .camera import VIEW_NAMES
from .errors import (CaptureTooLarge, CompressionBomb, CorruptArchive, DuplicateMember, MissingView, NotAZip,
                     TooManyMembers, UnexpectedLayout, UnknownView, UnsafeArchive)

#: alternative stems, in the contract's order: +z -z +x -x +y -y = front back left right top bottom
ALIASES = dict(zip(("+z", "-z", "+x", "-x", "+y", "-y"), VIEW_NAMES))
VIEW_FOLDER, DEPTH_FOLDER = "multi_views", "depth_renders"
IMAGE_SUFFIXES = {VIEW_FOLDER: (".png", ".jpg", ".jpeg"), DEPTH_FOLDER: (".png",)}
_LITTER_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
_DRIVE = re.compile(r"^[a-zA-Z]:")


@dataclass(frozen=True)
class Limits:
    """Hard limits on what a capture may contain (defaults suit 4096² captures with room to spare)."""

    max_archive_bytes: int = 1 << 30
    max_members: int = 64
    max_member_bytes: int = 256 << 20
    max_total_bytes: int = 1 << 30
    max_ratio: float = 100.0          # PNG/JPEG barely compress; checked for members over 1 MiB
    max_image_side: int = 4096
    min_image_side: int = 256
    max_directory_bytes: int = 1 << 20  # the ZIP's central directory; zipfile parses all of it into objects
    max_json_bytes: int = 16 << 20      # cameras.json, transforms.json


@dataclass
class CaptureFiles:
    """The capture's files, by role, as bytes in memory.

    Attributes:
        views: view name -> (member name, bytes) of the RGB(A) image (six-view captures).
        depths: view name -> (member name, bytes) of the depth render.
        cameras: (member name, bytes) of cameras.json, or None.
        transforms: (member name, bytes) of transforms.json, or None (the extension layout).
        frames: member name -> bytes of every other image, for transforms.json captures.
        ignored: members that were skipped (litter, files outside the capture's layout).
        source: the archive or directory it came from.
        complete: False when only the first bytes of each image were kept (``read_zip(keep_bytes=...)``).
    """

    views: dict = field(default_factory=dict)
    depths: dict = field(default_factory=dict)
    cameras: tuple | None = None
    transforms: tuple | None = None
    frames: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)
    source: str = ""
    complete: bool = True


def _is_litter(name: str) -> bool:
    parts = PurePosixPath(name).parts
    base = parts[-1].lower() if parts else ""
    return (not parts or parts[0] == "__MACOSX" or base in _LITTER_NAMES or base.startswith("._")
            or name.endswith("/"))


def check_member_name(name: str) -> None:
    """Reject a member name that could escape a folder or hide what it is."""
    if not name or "\x00" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafeArchive(member=name, reason="the name contains control characters")
    if "\\" in name:
        raise UnsafeArchive(member=name, reason="the name contains a backslash; use '/' between folders")
    if name.startswith("/"):
        raise UnsafeArchive(member=name, reason="absolute paths are not allowed")
    if _DRIVE.match(name):
        raise UnsafeArchive(member=name, reason="drive letters are not allowed")
    if any(part in ("..", ".") for part in name.split("/")):
        raise UnsafeArchive(member=name, reason="'..' and '.' path segments are not allowed")


def _strip_enclosing_folder(names: list[str]) -> tuple[str, dict[str, str]]:
    """Map member name -> name relative to the capture root (one enclosing folder is stripped)."""
    firsts = {n.split("/", 1)[0] for n in names}
    if len(firsts) == 1 and all("/" in n for n in names):
        prefix = firsts.pop()
        if prefix.lower() not in (VIEW_FOLDER, DEPTH_FOLDER):
            return prefix, {n: n[len(prefix) + 1:] for n in names}
    return "", {n: n for n in names}


def _role_of(rel: str) -> tuple[str, str | None] | None:
    """('view'|'depth', view name) or ('cameras'|'transforms', None) for a capture-relative path, else None."""
    parts = rel.split("/")
    lower = rel.lower()
    if len(parts) == 1 and lower in ("cameras.json", "transforms.json"):
        return (lower.removesuffix(".json"), None)
    if len(parts) == 2 and parts[0].lower() in (VIEW_FOLDER, DEPTH_FOLDER):
        folder = parts[0].lower()
        stem, dot, suffix = parts[1].rpartition(".")
        stem = stem.lower()
        if folder == DEPTH_FOLDER and stem.endswith("_depth"):
            stem = stem.removesuffix("_depth")
        view = ALIASES.get(stem, stem)
        if view not in VIEW_NAMES or not dot or "." + suffix.lower() not in IMAGE_SUFFIXES[folder]:
            expected = ", ".join(f"{v}{IMAGE_SUFFIXES[folder][0]}" for v in VIEW_NAMES)
            raise UnknownView(member=rel, folder=folder, expected=expected)
        return ("view" if folder == VIEW_FOLDER else "depth", view)
    return None


def _assign(files: CaptureFiles, names: list[str], read, *, transforms_mode: bool) -> None:
    """Sort members into roles; ``read(name)`` returns a member's bytes."""
    _, rel = _strip_enclosing_folder(names)
    seen_case: dict[str, str] = {}
    for name in names:
        key = rel[name].lower()
        if key in seen_case:
            raise DuplicateMember(first=seen_case[key], second=name, role=rel[name])
        seen_case[key] = name
    if transforms_mode:
        for name in names:
            r = rel[name]
            if r.lower() == "transforms.json":
                files.transforms = (name, read(name))
            elif r.lower().endswith((".png", ".jpg", ".jpeg")):
                files.frames[r] = (name, read(name))
            else:
                files.ignored.append(name)
        return
    owners: dict[tuple, str] = {}
    for name in names:
        role = _role_of(rel[name])
        if role is None:
            files.ignored.append(name)
            continue
        if role in owners:
            what = {"view": f"the {role[1]} view", "depth": f"the {role[1]} depth render"}.get(role[0], rel[name])
            raise DuplicateMember(first=owners[role], second=name, role=what)
        owners[role] = name
    found = sorted({r.split("/", 1)[0] + ("/" if "/" in r else "") for r in rel.values()})
    for folder, kind in ((VIEW_FOLDER, "view"), (DEPTH_FOLDER, "depth")):
        if not any(k == kind for k, _ in owners):
            hint = ", ".join(found[:8]) or "nothing"
            if any(r.lower().endswith(".zip") for r in rel.values()):
                hint += " — the archive contains another ZIP: upload the inner archive itself"
            raise UnexpectedLayout(folder=folder, found=hint)
    missing = [(folder, v) for v in VIEW_NAMES for kind, folder in (("view", VIEW_FOLDER), ("depth", DEPTH_FOLDER))
               if (kind, v) not in owners]
    if missing:
        folder, view = missing[0]
        raise MissingView(folder=folder, view=view, expected=", ".join(f"{v}.png" for v in VIEW_NAMES),
                          missing=[f"{f}/{v}" for f, v in missing])
    for (kind, view), name in owners.items():
        data = read(name)
        if kind == "view":
            files.views[view] = (name, data)
        elif kind == "depth":
            files.depths[view] = (name, data)
        elif kind == "cameras":
            files.cameras = (name, data)
        elif kind == "transforms":
            files.transforms = (name, data)


# ── ZIP ──────────────────────────────────────────────────────────────────────────────────

def _check_infos(infos: list[zipfile.ZipInfo], limits: Limits, archive_size: int) -> None:
    if len(infos) > limits.max_members:
        raise TooManyMembers(count=len(infos), limit=limits.max_members)
    total = 0
    for info in infos:
        check_member_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchive(member=info.filename, reason="symbolic links are not allowed")
        if info.flag_bits & 0x1:
            raise UnsafeArchive(member=info.filename, reason="encrypted members are not supported; zip without a password")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnsafeArchive(member=info.filename,
                                reason=f"compression method {info.compress_type} is not supported; use deflate or store")
        if info.file_size > limits.max_member_bytes:
            raise CaptureTooLarge(what=f"the ZIP member {info.filename!r}", size=info.file_size,
                                  limit=limits.max_member_bytes)
        if info.file_size > (1 << 20):
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise CompressionBomb(member=info.filename, ratio=ratio, limit=limits.max_ratio)
        total += info.file_size
    if total > limits.max_total_bytes:
        raise CaptureTooLarge(what="the archive's uncompressed content", size=total, limit=limits.max_total_bytes)
    # members must not overlap: each local header + data ends before the next one starts
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for a, b in zip(ordered, ordered[1:]):
        end = a.header_offset + 30 + len(a.filename.encode("utf-8")) + a.compress_size
        if end > b.header_offset:
            raise UnsafeArchive(member=b.filename, reason="it overlaps another member's data (a zip bomb layout)")
    if ordered and ordered[-1].header_offset + ordered[-1].compress_size > archive_size:
        raise CorruptArchive(reason=f"{ordered[-1].filename!r} extends past the end of the file (truncated upload?)")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits, keep: int | None = None) -> bytes:
    """A member's bytes, inflated under a hard cap. With ``keep``, the whole member is still read
    (so that its CRC and size are checked) but only its first ``keep`` bytes are kept."""
    cap = min(info.file_size, limits.max_member_bytes)
    if info.filename.lower().endswith(".json"):
        cap = min(cap, limits.max_json_bytes)
        if info.file_size > cap:
            raise CaptureTooLarge(what=f"the ZIP member {info.filename!r}", size=info.file_size, limit=cap)
        keep = None
    chunks, size, kept = [], 0, 0
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise CaptureTooLarge(what=f"the ZIP member {info.filename!r}", size=size, limit=cap)
                if keep is None:
                    chunks.append(chunk)
                elif kept < keep:
                    chunks.append(chunk[:keep - kept])
                    kept += len(chunks[-1])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise CorruptArchive(reason=f"{info.filename!r}: {exc}") from None
    except RuntimeError as exc:  # zipfile raises RuntimeError for encrypted data
        raise UnsafeArchive(member=info.filename, reason=str(exc)) from None
    return b"".join(chunks)


_EOCD, _EOCD64, _EOCD64_LOCATOR = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"


def _check_directory(fh, size: int, limits: Limits) -> None:
    """Refuse archives whose end record announces more members or a larger central directory than
    allowed, before zipfile turns every directory entry into a Python object (a ZIP of a million
    empty members, 116 MB, took 1 GB of memory just to list that way)."""
    tail_size = min(size, 22 + 65535 + 20)  # EOCD + the longest comment + the zip64 locator
    fh.seek(size - tail_size)
    tail = fh.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return  # zipfile reports the damage itself
    _, _, _, entries, directory, _, _ = struct.unpack("<HHHHIIH", tail[at + 4:at + 22])
    locator = at - 20
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and locator >= 0 and tail[locator:locator + 4] == _EOCD64_LOCATOR:
        offset = struct.unpack("<Q", tail[locator + 8:locator + 16])[0]
        if offset + 56 <= size:
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] == _EOCD64:
                entries, directory = struct.unpack("<QQ", record[32:48])
    if entries > limits.max_members:
        raise TooManyMembers(count=entries, limit=limits.max_members)
    if directory > limits.max_directory_bytes:
        raise TooManyMembers(f"the archive's directory of members is {directory} bytes, more than the limit of "
                             f"{limits.max_directory_bytes}; upload only the capture's files", count=entries,
                             limit=limits.max_members)


def read_zip(path: str | Path, limits: Limits = Limits(), name: str | None = None,
             keep_bytes: int | None = None) -> CaptureFiles:
    """The capture files of a ZIP archive at ``path``, checked against ``limits``; ``name`` is how
    messages call the file (e.g. the name it was uploaded under).

    ``keep_bytes``: keep only the first bytes of each image (every member is still read through
    and checked); enough to inspect headers with memory bounded by the count of members rather
    than their size. Such files cannot be decoded (``CaptureFiles.complete`` is False).
    """
    path = Path(path)
    shown = name or path.name
    size = path.stat().st_size
    if size > limits.max_archive_bytes:
        raise CaptureTooLarge(what=f"the upload {shown!r}", size=size, limit=limits.max_archive_bytes)
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head[:2] == b"PK":
            _check_directory(fh, size, limits)
    if head[:2] != b"PK":
        kind = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff\xe0": "a JPEG image", b"%PDF": "a PDF"}.get(head, None)
        if size == 0:
            kind = "an empty file"
        raise NotAZip(name=shown, reason=f"it looks like {kind}" if kind else "no ZIP signature at its start")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise (NotAZip(name=shown, reason=str(exc)) if head != b"PK\x03\x04" and head != b"PK\x05\x06"
               else CorruptArchive(reason=f"{shown}: its central directory (at the end of a ZIP) is missing or "
                                          f"unreadable; was the upload cut short?")) from None
    except (OSError, EOFError, ValueError) as exc:
        raise CorruptArchive(reason=f"{shown}: {exc}") from None
    with zf:
        infos = zf.infolist()
        _check_infos(infos, limits, size)
        raw = [i.filename for i in infos]
        if len(set(raw)) != len(raw):
            dup = next(n for n in raw if raw.count(n) > 1)
            raise DuplicateMember(first=dup, second=dup, role="the same name twice")
        by_name = {i.filename: i for i in infos}
        names = [i.filename for i in infos if not _is_litter(i.filename)]
        files = CaptureFiles(source=str(path), ignored=[i.filename for i in infos if _is_litter(i.filename)
                                                        and not i.filename.endswith("/")],
                             complete=keep_bytes is None)
        if not names:
            raise UnexpectedLayout(folder=VIEW_FOLDER, found="only macOS litter (__MACOSX/, .DS_Store)" if infos
                                   else "nothing (the archive is empty)")
        transforms_mode = any(_strip_enclosing_folder(names)[1][n].lower() == "transforms.json" for n in names)
        _assign(files, names, lambda n: _read_member(zf, by_name[n], limits, keep_bytes),
                transforms_mode=transforms_mode)
    return files


# ── directory ────────────────────────────────────────────────────────────────────────────

def read_directory(path: str | Path, limits: Limits = Limits()) -> CaptureFiles:
    """The capture files of a directory laid out like the ZIP (symbolic links are not followed)."""
    root = Path(path)
    names = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for fn in filenames:
            full = Path(dirpath) / fn
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise UnsafeArchive(member=rel, reason="symbolic links are not allowed")
            names.append(rel)
            if len(names) > limits.max_members * 4:
                raise TooManyMembers(count=len(names), limit=limits.max_members * 4)
    kept = [n for n in sorted(names) if not _is_litter(n)]
    files = CaptureFiles(source=str(root), ignored=[n for n in names if _is_litter(n)])
    if not kept:
        raise UnexpectedLayout(folder=VIEW_FOLDER, found="nothing (the directory is empty)")

    def read(name: str) -> bytes:
        p = root / name
        size = p.stat().st_size
        if size > limits.max_member_bytes:
            raise CaptureTooLarge(what=f"the file {name!r}", size=size, limit=limits.max_member_bytes)
        return p.read_bytes()

    transforms_mode = any(_strip_enclosing_folder(kept)[1][n].lower() == "transforms.json" for n in kept)
    _assign(files, kept, read, transforms_mode=transforms_mode)
    return files


def read_capture_files(path: str | Path, limits: Limits = Limits(), name: str | None = None,
                       keep_bytes: int | None = None) -> CaptureFiles:
    """A capture's files from a ZIP archive or a directory (``name``: how messages call a ZIP;
    ``keep_bytes``: see :func:`read_zip`)."""
    p = Path(path)
    if p.is_dir():
        return read_directory(p, limits)
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {p}")
    return read_zip(p, limits, name, keep_bytes)
