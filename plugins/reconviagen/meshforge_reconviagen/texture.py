"""From the extracted surface (world frame, vertex colours) to a textured mesh with a UV atlas.

1. Quadric decimation to ``target_faces`` (TRELLIS's GLB export keeps 5 % of the faces).
2. UV unwrapping with xatlas (meshforge's :func:`~meshforge.unwrap.unwrap`, in a child process
   with a time limit).
3. Colour, by ``source``:
   ``"views"`` — every texel takes the capture's photographs where they see it
   (:func:`meshforge.texturing.bake_uv_texture`), the sharpest colour a calibrated capture has;
   ``"model"`` — the mesh decoder's own colours, interpolated over each triangle.
   If unwrapping fails, ``"views"`` falls back to meshforge's view atlas and ``"model"`` to
   vertex colours.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from meshforge.mesh import TexturedMesh


def _nearest_colours(points: np.ndarray, source_points: np.ndarray, source_colours: np.ndarray) -> np.ndarray:
    _, idx = cKDTree(source_points).query(points)
    return source_colours[idx]


def bake_vertex_colours(mesh: TexturedMesh, colours: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 texture from per-vertex colours (N, 3) in [0, 1], barycentric inside
    triangles, nearest covered texel outside them (gutters against seams)."""
    from meshforge.raster import rasterize_uv

    frags = rasterize_uv(mesh.uv, mesh.faces, size)
    covered = frags.face >= 0
    texture = np.zeros((size, size, 3), np.float32)
    tri = colours[mesh.faces[frags.face[covered]]]  # (K, 3, 3)
    texture[covered] = (tri * frags.bary[covered][..., None]).sum(axis=1)
    if covered.any() and not covered.all():
        idx = ndi.distance_transform_edt(~covered, return_distances=False, return_indices=True)
        texture = texture[idx[0], idx[1]]
    return np.clip(texture * 255 + 0.5, 0, 255).astype(np.uint8)


def texture_mesh(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, capture, *, source: str,
                 target_faces: int, texture_size: int, unwrap_time_limit_s: float) -> tuple[TexturedMesh, dict, list]:
    """(textured mesh, statistics, warnings) for a world-frame surface with vertex colours in [0, 1]."""
    from meshforge.plugins.fusion.surface import decimate
    from meshforge.texturing import bake_uv_texture, bake_view_atlas
    from meshforge.unwrap import unwrap

    stats: dict = {"faces_extracted": int(len(faces))}
    warnings: list = []
    small_v, small_f = decimate(vertices.astype(np.float32), faces.astype(np.int32), target_faces)
    stats["faces"] = int(len(small_f))
    small_colours = _nearest_colours(small_v, vertices, colours)
    unwrapped, unwrap_stats = unwrap(small_v, small_f, time_limit_s=unwrap_time_limit_s, texture_size=texture_size,
                                     max_faces=max(target_faces, len(small_f)))
    stats["unwrap"] = unwrap_stats
    if unwrapped is None:
        warnings.append(f"UV unwrapping failed ({unwrap_stats.get('error')}); "
                        + ("textured from the views' atlas instead" if source == "views" else "kept vertex colours"))
        if source == "views":
            mesh, atlas_stats = bake_view_atlas(small_v, small_f, capture, max_size=texture_size)
            stats["texture"] = atlas_stats
            return mesh, stats, warnings
        rgb = np.clip(small_colours * 255 + 0.5, 0, 255).astype(np.uint8)
        return TexturedMesh(small_v, small_f, vertex_colors=rgb), stats, warnings
    if source == "views":
        texture, bake_stats = bake_uv_texture(unwrapped, capture, size=texture_size)
        stats["texture"] = bake_stats
    else:
        vertex_colours = _nearest_colours(unwrapped.vertices, small_v, small_colours)
        texture = bake_vertex_colours(unwrapped, vertex_colours, texture_size)
        stats["texture"] = {"texture": "model_colours", "texture_size": texture_size}
    return TexturedMesh(unwrapped.vertices, unwrapped.faces, uv=unwrapped.uv, texture=texture), stats, warnings
