"""Small helpers for building test inputs from real captures."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path


def rezip(src: Path, dst: Path, *, rename: dict | None = None, replace: dict | None = None,
          drop: tuple = (), add: dict | None = None, prefix: str = "") -> Path:
    """Copy a capture ZIP with members renamed, replaced (bytes), dropped or added."""
    rename, replace, add = rename or {}, replace or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            if name in drop:
                continue
            data = replace.get(name, zin.read(name))
            zout.writestr(prefix + rename.get(name, name), data)
        for name, data in add.items():
            zout.writestr(prefix + name, data)
    return dst


def member(src: Path, name: str) -> bytes:
    with zipfile.ZipFile(src) as z:
        return z.read(name)


def png_bytes(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its type, size and modification time (to prove nothing was written)."""
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out
