"""Draw textured meshes from a camera: colour, depth and mask, on the CPU.

Colour is the surface's albedo as stored (sRGB, unlit), which is what a capture's views
show for synthetic captures and what reconstructors bake into their textures, so a render
from an input camera is directly comparable with that input view. ``shading="lit"`` adds
a neutral head-light for previews meant for people.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Camera
from .mesh import TexturedMesh, merge
from .raster import Fragments, interpolate, rasterize, sample_texture


@dataclass
class Rendering:
    """One rendered image.

    Attributes:
        color: (H, W, 3) float32 sRGB in [0, 1], background colour where nothing was drawn.
        depth: (H, W) float32 planar z in world units, 0 for background.
        mask: (H, W) float32 coverage in [0, 1] (0 or 1 without supersampling).
        normal: (H, W, 3) float32 unit world-frame normals of the visible faces, 0 for background.
    """

    color: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    normal: np.ndarray


def shade_albedo(parts: list[TexturedMesh], faces: np.ndarray, owner: np.ndarray, fragments: Fragments) -> np.ndarray:
    """(H, W, 3) float32 albedo of the visible surface (0 for background)."""
    h, w = fragments.face.shape
    out = np.zeros((h, w, 3), np.float32)
    visible = fragments.mask
    part_of_pixel = np.full((h, w), -1, np.int32)
    part_of_pixel[visible] = owner[fragments.face[visible]]
    offset = 0
    for k, part in enumerate(parts):
        sel = part_of_pixel == k
        if sel.any():
            local = fragments.face[sel] - offset
            f = part.faces[local]
            b = fragments.bary[sel]
            if part.is_textured:
                uv = (part.uv[f] * b[..., None]).sum(axis=1)
                rgb = sample_texture(part.texture, uv) / 255.0
            elif part.vertex_colors is not None:
                rgb = (part.vertex_colors[f].astype(np.float32) * b[..., None]).sum(axis=1) / 255.0
            else:
                rgb = np.ones((int(sel.sum()), 3), np.float32)
            out[sel] = np.clip(rgb * part.base_color, 0.0, 1.0)
        offset += len(part.faces)
    return out


def render(mesh: TexturedMesh | list[TexturedMesh], camera: Camera, *, background=(1.0, 1.0, 1.0),
           shading: str = "albedo", supersample: int = 1) -> Rendering:
    """Render a mesh (or a list of parts) from ``camera``.

    Parameters:
        mesh: a :class:`TexturedMesh` or several parts drawn together.
        camera: the camera; output size is its ``width`` × ``height``.
        background: RGB in [0, 1] for pixels that show no surface.
        shading: ``"albedo"`` (unlit, comparable with capture views) or ``"lit"``
            (albedo × (0.35 + 0.65·max(0, n·l)) with the light at the camera, for previews).
        supersample: draw at this factor and box-filter down, for smooth edges in previews.
    """
    parts = mesh if isinstance(mesh, list) else [mesh]
    vertices, faces, owner = merge(parts)
    cam = camera.scaled(camera.width * supersample, camera.height * supersample) if supersample > 1 else camera
    frags = rasterize(cam, vertices, faces)
    albedo = shade_albedo(parts, faces, owner, frags)
    normal = np.zeros_like(albedo)
    if len(faces):
        tri = vertices[faces].astype(np.float64)
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
        vis = frags.mask
        n = fn[frags.face[vis]]
        # face the viewer: two-sided surfaces, and inward-wound meshes still look right
        toward = cam.position[None, :] - (vertices[faces[frags.face[vis]]].mean(axis=1))
        n *= np.sign(np.einsum("ij,ij->i", n, toward))[:, None]
        normal[vis] = n
    mask = frags.mask.astype(np.float32)
    color = albedo
    if shading == "lit":
        light = cam.position[None, None, :] - np.zeros(3)
        light = light / np.linalg.norm(light)
        lambert = np.clip((normal * light).sum(-1, keepdims=True), 0.0, 1.0)
        color = albedo * (0.35 + 0.65 * lambert)
    elif shading != "albedo":
        raise ValueError(f"unknown shading {shading!r}; use 'albedo' or 'lit'")
    bg = np.asarray(background, np.float32)
    color = color * mask[..., None] + bg * (1.0 - mask[..., None])
    depth = frags.depth
    if supersample > 1:
        s = supersample
        h, w = camera.height, camera.width
        color = color.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        mask = mask.reshape(h, s, w, s).mean(axis=(1, 3))
        normal = normal.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-20)
        depth = depth[s // 2::s, s // 2::s]
    return Rendering(color.astype(np.float32), depth.astype(np.float32), mask.astype(np.float32), normal.astype(np.float32))
