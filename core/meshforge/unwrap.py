"""UV unwrapping with xatlas, in child processes, a piece of the mesh each.

xatlas is slow on large meshes (on 2 cores: 12.5k faces 1.3 s, 25k 2.9 s, 50k 10–12 s) and has
crashed on some inputs, so it never runs in the caller's process. :func:`unwrap` cuts the mesh
into spatially compact pieces of at most ``piece_faces`` faces (halving along the longest side
of the face centres), unwraps each in its own ``python -m meshforge.unwrap`` child, as many at a
time as there are cores (OMP_NUM_THREADS where set), all at one texel density, and packs the
pieces' atlases side by side into one. A cut is a seam, as a chart border already is. It
returns None (with the reason) when a child fails, crashes or outlasts the time limit; callers
then fall back to the view atlas. Meshes above ``max_faces`` are decimated first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .mesh import TexturedMesh

#: share of an atlas that xatlas fills with charts (measured 0.82–0.84 with 4 texels of padding)
_FILL = 0.8


def pieces(vertices: np.ndarray, faces: np.ndarray, piece_faces: int) -> list[np.ndarray]:
    """Face indices of compact pieces of at most ``piece_faces`` faces (k-d halving of face centres)."""
    centres = vertices[faces].mean(axis=1)
    out, todo = [], [np.arange(len(faces))]
    while todo:
        idx = todo.pop()
        if len(idx) <= piece_faces:
            out.append(idx)
            continue
        c = centres[idx]
        axis = int(np.argmax(c.max(axis=0) - c.min(axis=0)))
        idx = idx[np.argsort(c[:, axis], kind="stable")]
        todo += [idx[len(idx) // 2:], idx[:len(idx) // 2]]
    return out


def _cores() -> int:
    """Children to run at once: OMP_NUM_THREADS where set (a service worker's share of the cores),
    else the cores this process may use."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _shelves(sizes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], int, int]:
    """Pack rectangles (w, h) on shelves in a roughly square canvas -> (offsets, width, height)."""
    from .texturing import shelf_pack  # here, not at the top: the xatlas children import this module

    width = max(max(w for w, _ in sizes), int(np.ceil(np.sqrt(sum(w * h for w, h in sizes)))))
    offsets, height = shelf_pack(sizes, width)
    return offsets, width, height


def unwrap(vertices: np.ndarray, faces: np.ndarray, *, time_limit_s: float = 30.0, texture_size: int = 2048,
           max_faces: int = 100_000, piece_faces: int = 12_500) -> tuple[TexturedMesh | None, dict]:
    """UV-unwrap a mesh -> (mesh with ``uv`` (vertices split on seams) or None, statistics)."""
    t0 = time.perf_counter()
    stats: dict = {"unwrap": "xatlas", "input_faces": int(len(faces))}
    if len(faces) > max_faces:
        from .plugins.fusion.surface import decimate

        vertices, faces = decimate(vertices, faces, max_faces)
        stats["decimated_to"] = int(len(faces))
    vertices, faces = np.asarray(vertices, np.float32), np.asarray(faces, np.int64)
    parts = pieces(vertices, faces, piece_faces)
    tri = vertices[faces]
    area = 0.5 * float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())
    # one density for every piece, chosen so that the packed whole is about texture_size square
    texels_per_unit = float(np.sqrt(_FILL * texture_size ** 2 / max(area, 1e-12)))
    stats.update(pieces=len(parts), texels_per_unit=round(texels_per_unit, 2))
    deadline = time.monotonic() + time_limit_s
    with tempfile.TemporaryDirectory(prefix="meshforge-unwrap-") as tmp:
        jobs = []
        for i, idx in enumerate(parts):
            used, local = np.unique(faces[idx], return_inverse=True)
            src, dst = Path(tmp) / f"in{i}.npz", Path(tmp) / f"out{i}.npz"
            np.savez(src, vertices=vertices[used], faces=local.reshape(-1, 3).astype(np.uint32),
                     texels_per_unit=np.float64(texels_per_unit))
            jobs.append((used, src, dst))
        results, error = [None] * len(jobs), None
        running: dict[int, subprocess.Popen] = {}
        waiting = list(range(len(jobs)))
        while (waiting or running) and error is None:
            while waiting and len(running) < _cores():
                i = waiting.pop(0)
                running[i] = subprocess.Popen([sys.executable, "-m", "meshforge.unwrap", str(jobs[i][1]),
                                               str(jobs[i][2])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                if proc.returncode != 0 or not jobs[i][2].exists():
                    tail = (proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
                            or [f"exit code {proc.returncode}"])
                    error = f"xatlas failed: {tail[0]}"
                else:
                    results[i] = dict(np.load(jobs[i][2]))
                proc.stderr.close()
            if time.monotonic() > deadline and error is None:
                error = f"xatlas did not finish within {time_limit_s:g} s"
            time.sleep(0.01)
        for proc in running.values():  # a failure or the deadline: stop the rest
            proc.kill()
            proc.wait()
            proc.stderr.close()
    if error is not None:
        stats["error"] = error
        return None, stats
    offsets, width, height = _shelves([(int(r["width"]), int(r["height"])) for r in results])
    verts, idxs, uvs, base = [], [], [], 0
    for (used, _, _), r, (ox, oy) in zip(jobs, results, offsets):
        verts.append(vertices[used[r["vmapping"]]])
        idxs.append(r["indices"].astype(np.int64) + base)
        uv = r["uvs"] * np.array([r["width"], r["height"]], np.float32)  # back to the piece's texels
        uvs.append((uv + np.array([ox, oy], np.float32)) / np.array([width, height], np.float32))
        base += len(r["vmapping"])
    stats["atlas"] = [int(width), int(height)]
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["charts_vertices"] = int(base)
    return TexturedMesh(np.concatenate(verts), np.concatenate(idxs).astype(np.int32),
                        uv=np.concatenate(uvs).astype(np.float32)), stats


def _child(src: str, dst: str) -> None:
    import xatlas

    data = np.load(src)
    atlas = xatlas.Atlas()
    atlas.add_mesh(data["vertices"], data["faces"])
    pack = xatlas.PackOptions()
    pack.texels_per_unit = float(data["texels_per_unit"])
    pack.resolution = 0  # one atlas, as large as that density needs
    pack.padding = 4
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, indices, uvs = atlas[0]
    np.savez(dst, vmapping=vmapping, indices=indices, uvs=uvs, width=np.int64(atlas.width),
             height=np.int64(atlas.height))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
