"""The result bundle's layout (shared/spec/api.md), written so that nothing half-done looks done.

::

    <out>/
    ├── report.json            job object + input summary + per-model timings and quality
    └── <model>/
        ├── mesh.glb, mesh.obj, mesh.mtl, texture.png
        ├── previews/          static renders + one contact sheet PNG
        └── quality.json       per-view figures and the summary with its status

A model's files are written into ``<out>/.<model>.partial/`` and renamed into place only
when complete; JSON files are written to a temporary name and renamed. A reader therefore
sees either a whole model folder or none.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Iterator

from .errors import StorageFull, is_storage_full

REPORT = "report.json"
QUALITY = "quality.json"
PREVIEWS = "previews"
MODEL_FILES = ("mesh.glb", "mesh.obj", "mesh.mtl", "texture.png")
#: beside them when the mesh has PBR maps (the MTL names them; specular.png only with a specular map)
PBR_MAP_FILES = ("roughness.png", "metallic.png", "specular.png")


def write_json(path: str | Path, data) -> Path:
    """Write JSON atomically (temporary file + rename); on a full disk raise StorageFull and keep
    neither the old file's replacement nor a half-written temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    text = json.dumps(data, indent=2, allow_nan=False, default=str)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_storage_full(exc):
            raise StorageFull(what=path.name) from exc
        raise
    return path


def partial_dir(out: str | Path, model: str) -> Path:
    """Where a model's files are written before they are complete (emptied first)."""
    path = Path(out) / f".{model}.partial"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def publish(out: str | Path, model: str, partial: Path) -> Path:
    """Move a complete model folder into place, replacing an older one."""
    final = Path(out) / model
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return final


def model_files(out: str | Path, model: str) -> list[str]:
    """Paths (relative to ``out``) of the files of a published model folder."""
    root = Path(out)
    folder = root / model
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file())


def iter_zip(out: str | Path, prefix: str, chunk_size: int = 1 << 20, extra: dict | None = None) -> Iterator[bytes]:
    """Stream the bundle under ``out`` as a ZIP whose entries start with ``prefix/``.

    Only published files are included (never ``.partial`` folders, temporary files or
    symbolic links), and the archive is produced chunk by chunk, never whole in memory.
    ``extra``: name -> bytes of files to add (in place of missing ones of the same name).
    """
    root = Path(out)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts)) if root.is_dir() else []
    pipe = _ChunkPipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in (extra or {}).items():
            zf.writestr(f"{prefix}/{name}", data, compress_type=zipfile.ZIP_DEFLATED)
            yield from pipe.drain()
        for path in files:
            info = zipfile.ZipInfo.from_file(path, f"{prefix}/{path.relative_to(root).as_posix()}")
            # PNG and GLB are compressed already; deflate only the text files
            info.compress_type = zipfile.ZIP_DEFLATED if path.suffix in (".json", ".obj", ".mtl") else zipfile.ZIP_STORED
            with open(path, "rb") as src, zf.open(info, "w", force_zip64=path.stat().st_size > (1 << 31)) as dst:
                while True:
                    block = src.read(chunk_size)
                    if not block:
                        break
                    dst.write(block)
                    yield from pipe.drain()
            yield from pipe.drain()
    yield from pipe.drain()


class _ChunkPipe:
    """A write-only, non-seekable file object that hands written bytes to a generator."""

    def __init__(self):
        self._chunks: list[bytes] = []
        self._offset = 0

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        chunks, self._chunks = self._chunks, []
        yield from chunks
