"""UV unwrapping with xatlas, isolated in a child process.

xatlas is slow on large meshes and has crashed on some inputs, so it never runs in the
caller's process: :func:`unwrap` writes the mesh to a temporary file, runs
``python -m meshforge.unwrap`` with a time limit, and returns None (with the reason) when
the child fails, crashes or runs out of time; callers then fall back to the view atlas.
Meshes above ``max_faces`` are decimated first, because xatlas's time grows quickly with
face count.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .mesh import TexturedMesh


def unwrap(vertices: np.ndarray, faces: np.ndarray, *, time_limit_s: float = 30.0, texture_size: int = 2048,
           max_faces: int = 100_000) -> tuple[TexturedMesh | None, dict]:
    """UV-unwrap a mesh -> (mesh with ``uv`` (vertices split on seams) or None, statistics)."""
    t0 = time.perf_counter()
    stats: dict = {"unwrap": "xatlas", "input_faces": int(len(faces))}
    if len(faces) > max_faces:
        from .plugins.fusion.surface import decimate

        vertices, faces = decimate(vertices, faces, max_faces)
        stats["decimated_to"] = int(len(faces))
    with tempfile.TemporaryDirectory(prefix="meshforge-unwrap-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, vertices=vertices.astype(np.float32), faces=faces.astype(np.uint32),
                 texture_size=np.int64(texture_size))
        try:
            proc = subprocess.run([sys.executable, "-m", "meshforge.unwrap", str(src), str(dst)],
                                  capture_output=True, text=True, timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            stats["error"] = f"xatlas did not finish within {time_limit_s:g} s"
            return None, stats
        if proc.returncode != 0 or not dst.exists():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            stats["error"] = f"xatlas failed: {tail[0]}"
            return None, stats
        out = np.load(dst)
        vmap, idx, uv = out["vmapping"], out["indices"], out["uvs"]
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["charts_vertices"] = int(len(vmap))
    return TexturedMesh(vertices[vmap], idx.astype(np.int32), uv=uv), stats


def _child(src: str, dst: str) -> None:
    import xatlas

    data = np.load(src)
    atlas = xatlas.Atlas()
    atlas.add_mesh(data["vertices"], data["faces"])
    pack = xatlas.PackOptions()
    pack.resolution = int(data["texture_size"])
    pack.padding = 4
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, indices, uvs = atlas[0]
    np.savez(dst, vmapping=vmapping, indices=indices, uvs=uvs)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
