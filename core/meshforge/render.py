"""Draw textured meshes from a camera: colour, depth and mask, on the CPU.

Colour is the surface's albedo as stored (sRGB, unlit), which is what a capture's views
show for synthetic captures and what reconstructors bake into their textures, so a render
from an input camera is directly comparable with that input view. ``shading="lit"`` adds
a neutral head-light for previews meant for people.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .camera import Camera
from .mesh import TexturedMesh, merge
from .raster import Fragments, interpolate, rasterize, shade


@dataclass
class Rendering:
    """One rendered image.

    Attributes:
        color: (H, W, 3) float32 sRGB in [0, 1], background colour where nothing was drawn.
        depth: (H, W) float32 planar z in world units, 0 for background.
        mask: (H, W) float32 coverage in [0, 1] (0 or 1 without supersampling).
        normal: (H, W, 3) float32 unit world-frame normals of the visible surface facing the
            camera, 0 for background; None unless rendered with ``shading="lit"``.
    """

    color: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    normal: np.ndarray | None


def shade_albedo(parts: list[TexturedMesh], fragments: Fragments) -> np.ndarray:
    """(H, W, 3) float32 albedo of the visible surface (0 for background)."""
    out = np.zeros(fragments.face.shape + (3,), np.float32)
    offset = 0
    for part in parts:
        shade(fragments, part.faces, offset, uv=part.uv if part.is_textured else None,
              texture=part.texture if part.is_textured else None, vertex_colors=part.vertex_colors,
              factor=np.clip(part.base_color, 0.0, 1.0), out=out)
        offset += len(part.faces)
    return out


@numba.njit(cache=True, parallel=True)
def _box(image, s, out):
    h, w, c = out.shape
    scale = 1.0 / (s * s)
    for i in numba.prange(h):
        for j in range(w):
            for ch in range(c):
                acc = 0.0
                for dy in range(s):
                    for dx in range(s):
                        acc += image[i * s + dy, j * s + dx, ch]
                out[i, j, ch] = acc * scale


def box_downsample(image: np.ndarray, s: int) -> np.ndarray:
    """Average s×s blocks of an (H, W) or (H, W, C) array -> float32."""
    if s == 1:
        return image.astype(np.float32)
    flat = image.ndim == 2
    src = np.ascontiguousarray(image[..., None] if flat else image)
    out = np.empty((src.shape[0] // s, src.shape[1] // s, src.shape[2]), np.float32)
    _box(src, s, out)
    return out[..., 0] if flat else out


def smooth_normals(mesh: TexturedMesh) -> np.ndarray:
    """(N, 3) unit vertex normals averaged over vertices at the same position, so that texture
    seams (where vertices are split) do not show in shading."""
    _, weld, inverse = np.unique(mesh.vertices, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    acc = np.zeros((len(weld), 3))
    for k in range(3):
        np.add.at(acc, inverse[mesh.faces[:, k]], n)
    acc /= np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-20)
    return acc[inverse].astype(np.float32)


def render(mesh: TexturedMesh | list[TexturedMesh], camera: Camera, *, background=(1.0, 1.0, 1.0),
           shading: str = "albedo", supersample: int = 1, normals: np.ndarray | None = None) -> Rendering:
    """Render a mesh (or a list of parts) from ``camera``.

    Parameters:
        mesh: a :class:`TexturedMesh` or several parts drawn together.
        camera: the camera; output size is its ``width`` × ``height``.
        background: RGB in [0, 1] for pixels that show no surface.
        shading: ``"albedo"`` (unlit, comparable with capture views) or ``"lit"``
            (albedo × (0.35 + 0.65·|n·v|) with the light at the camera, for previews).
        supersample: draw at this factor and box-filter down, for smooth edges.
        normals: (N, 3) per-vertex normals for ``"lit"`` (e.g. :func:`smooth_normals`);
            face normals when None.

    ``Rendering.normal`` is computed for ``"lit"`` shading only.
    """
    if shading not in ("albedo", "lit"):
        raise ValueError(f"unknown shading {shading!r}; use 'albedo' or 'lit'")
    parts = mesh if isinstance(mesh, list) else [mesh]
    vertices, faces, _ = merge(parts)
    cam = camera.scaled(camera.width * supersample, camera.height * supersample) if supersample > 1 else camera
    frags = rasterize(cam, vertices, faces)
    color = shade_albedo(parts, frags)
    mask = frags.mask.astype(np.float32)
    normal = None
    if shading == "lit":
        normal = np.zeros_like(color)
        vis = frags.mask
        if normals is not None and len(parts) == 1:
            n = interpolate(frags, normals, faces)[vis]
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
        else:
            tri = vertices[faces[frags.face[vis]]].astype(np.float64)
            n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
        rows, cols = np.nonzero(vis)
        view_dirs = cam.pixel_grid_rays()[rows, cols]
        view_dirs /= np.linalg.norm(view_dirs, axis=1, keepdims=True)
        # two-sided: the head-light lights whichever side faces the camera
        lambert = np.abs(np.einsum("ij,ij->i", n, view_dirs))
        color[vis] *= (0.35 + 0.65 * lambert)[:, None]
        normal[vis] = n * -np.sign(np.einsum("ij,ij->i", n, view_dirs))[:, None]
    depth = frags.depth
    if supersample > 1:  # colour is 0 off the surface, so compositing after averaging is the same
        s = supersample
        color, mask = box_downsample(color, s), box_downsample(mask, s)
        if shading == "lit":
            normal = box_downsample(normal, s)
            normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-20)
        depth = depth[s // 2::s, s // 2::s]
    color += np.asarray(background, np.float32) * (1.0 - mask[..., None])
    return Rendering(color, depth, mask, normal)
