"""fusion: depth hull on a voxel grid → marching cubes → clean-up → decimation → view atlas."""

from __future__ import annotations

import time

import numpy as np

from ...capture import Capture
from ...errors import ReconstructionError
from ...mesh import TexturedMesh
from ...progress import Progress
from ...texturing import bake_uv_texture, bake_view_atlas
from .surface import decimate, extract_surface, remove_floaters
from .volume import HullField, depth_hull_sdf


def object_box(capture: Capture) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of the object from its depth samples, or from the views' silhouettes
    (coarse carving of the cameras' common region) when the capture has no depth."""
    if capture.has_depth:
        pts = capture.surface_points(per_view=50_000)
        return pts.min(axis=0), pts.max(axis=0)
    reach = 0.75 * min(float(np.linalg.norm(v.camera.position)) for v in capture.views.values())
    lo = np.full(3, -reach)
    step = 2 * reach / 63
    sdf, _, _ = depth_hull_sdf(list(capture.views.values()), lo, step, (64, 64, 64), 4 * step)
    inside = np.argwhere(sdf < 0)
    if not len(inside):
        raise ReconstructionError(model="fusion", reason="the silhouettes do not intersect anywhere near the origin")
    return lo + (inside.min(axis=0) - 1) * step, lo + (inside.max(axis=0) + 1) * step


def fuse(capture: Capture, options: dict, progress: Progress) -> tuple[TexturedMesh, dict, dict, list]:
    """Reconstruct ``capture`` -> (mesh, estimates, timings in seconds, warnings)."""
    timings, warnings = {}, []
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    progress.update(0.0, "fusing depth")
    lo, hi = object_box(capture)
    extent = float((hi - lo).max())
    step = extent / options["resolution"]
    pad = 3 * step + 0.01 * extent
    lo, hi = lo - pad, hi + pad
    dims = tuple(int(np.ceil(x)) + 1 for x in (hi - lo) / step)
    field = HullField.of_capture(capture)
    sdf, grid_stats, active = depth_hull_sdf(field, lo, step, dims, truncation=6 * step)
    lap("fusion")
    progress.check_cancelled()
    progress.update(0.35, "extracting the surface")
    vertices, faces = extract_surface(sdf, lo, step, active)
    del sdf, active
    if len(faces) == 0:
        raise ReconstructionError(model="fusion", reason="the views' depth hull is empty; the capture shows no object")
    raw_faces = len(faces)
    vertices, faces, floaters = remove_floaters(vertices, faces, options["min_component"])
    lap("surface")
    progress.check_cancelled()
    progress.update(0.45, "decimating")
    vertices, faces = decimate(vertices, faces, options["target_faces"])
    lap("decimation")
    refine_stats = {}
    if options["refine"]:
        vertices, refine_stats = field.refine(vertices, step)
        lap("refinement")
    progress.check_cancelled()
    progress.update(0.6, "texturing")
    mode = options["texture"]
    if mode == "xatlas":
        from ...unwrap import unwrap

        unwrapped, unwrap_stats = unwrap(vertices, faces, time_limit_s=options["unwrap_time_limit_s"])
        if unwrapped is not None:
            texture, tex_stats = bake_uv_texture(unwrapped, capture, size=min(options["max_texture_size"], 4096))
            mesh = TexturedMesh(unwrapped.vertices, unwrapped.faces, uv=unwrapped.uv, texture=texture)
            tex_stats.update(unwrap_stats)
        else:
            warnings.append(f"UV unwrapping failed ({unwrap_stats.get('error')}); used the view atlas instead")
            mode = "views"
    if mode == "views":
        mesh, tex_stats = bake_view_atlas(vertices, faces, capture, max_size=options["max_texture_size"])
    elif mode == "vertex":
        atlas_mesh, tex_stats = bake_view_atlas(vertices, faces, capture, max_size=options["max_texture_size"])
        colours = _vertex_colours_from(atlas_mesh, len(vertices), faces)
        mesh = TexturedMesh(vertices, faces, vertex_colors=colours)
        tex_stats["texture"] = "vertex_colors"
    lap("texture")
    progress.update(1.0)
    estimates = {
        "grid": {"dims": list(dims), "voxel_size": step, "origin": lo.tolist(), **grid_stats},
        "faces": {"marching_cubes": raw_faces, "final": int(len(mesh.faces))},
        "floaters_removed": floaters,
        "refinement": refine_stats,
        "texture": tex_stats,
        "bounds": mesh.bounds.tolist(),
    }
    return mesh, estimates, timings, warnings


def _vertex_colours_from(atlas_mesh: TexturedMesh, n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Per-vertex colours of the original vertices from an atlas-textured copy (mean over its splits)."""
    from ...raster import sample_texture

    colours = sample_texture(atlas_mesh.texture, atlas_mesh.uv, wrap=False)
    acc = np.zeros((n_vertices, 3))
    cnt = np.zeros(n_vertices)
    np.add.at(acc, faces.ravel(), colours[atlas_mesh.faces.ravel()])
    np.add.at(cnt, faces.ravel(), 1)
    return np.clip(acc / np.maximum(cnt, 1)[:, None] + 0.5, 0, 255).astype(np.uint8)
