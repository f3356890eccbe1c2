"""The triangle mesh that reconstructors return, and loading meshes from files.

A :class:`TexturedMesh` is deliberately plain: arrays in the capture's world frame, one
optional texture with per-vertex UVs (vertices are split along UV seams), or per-vertex
colours. Files in other layouts (several materials, node transforms) load as a list of
parts, see :func:`load_parts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np


@dataclass
class TexturedMesh:
    """A triangle mesh with colour.

    Attributes:
        vertices: (N, 3) float32, world units, capture world frame (+Y up).
        faces: (M, 3) int32 vertex indices, counter-clockwise seen from outside.
        uv: (N, 2) float32 texture coordinates (u right, v up, OBJ/glTF-on-load convention), or None.
        texture: (Ht, Wt, 3) uint8 sRGB image sampled through ``uv``, or None.
        vertex_colors: (N, 3) uint8 sRGB, used where there is no texture, or None.
        base_color: (3,) float multiplier of the colour (the material factor), 1 by default.
        metallic_roughness: (Ht, Wt, 2) uint8 roughness and metallic in ``texture``'s layout, or
            None. None (the usual case) means ``texture`` is the colour the cameras saw, lighting
            included, and files get an unlit material; with it, ``texture`` is the base colour
            (albedo) of a PBR material to be lit by the viewer.
        specular: (Ht, Wt) uint8 share of the specular reflection a PBR material reflects
            (glTF's ``KHR_materials_specular``; 255 = all of it), or None (all of it); only
            with ``metallic_roughness``.
        metadata: JSON-serialisable notes carried into the files (glTF ``asset.extras``, OBJ
            comments), e.g. that a mesh comes from random test weights.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    base_color: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    metadata: dict = field(default_factory=dict)
    metallic_roughness: np.ndarray | None = None
    specular: np.ndarray | None = None

    def __post_init__(self):
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)
        if self.uv is not None:
            self.uv = np.ascontiguousarray(self.uv, dtype=np.float32).reshape(-1, 2)
            if len(self.uv) != len(self.vertices):
                raise ValueError(f"uv has {len(self.uv)} rows for {len(self.vertices)} vertices")
        if self.vertex_colors is not None:
            self.vertex_colors = np.ascontiguousarray(self.vertex_colors, dtype=np.uint8).reshape(-1, 3)
            if len(self.vertex_colors) != len(self.vertices):
                raise ValueError("vertex_colors must have one row per vertex")
        if self.texture is not None:
            tex = np.asarray(self.texture)
            if tex.ndim == 2:
                tex = np.repeat(tex[..., None], 3, axis=2)
            self.texture = np.ascontiguousarray(tex[..., :3], dtype=np.uint8)
        if self.metallic_roughness is not None:
            self.metallic_roughness = np.ascontiguousarray(self.metallic_roughness, dtype=np.uint8)
            if self.texture is None or self.metallic_roughness.shape != (*self.texture.shape[:2], 2):
                raise ValueError("metallic_roughness must be (H, W, 2) in the texture's layout")
        if self.specular is not None:
            self.specular = np.ascontiguousarray(self.specular, dtype=np.uint8)
            if self.metallic_roughness is None or self.specular.shape != self.texture.shape[:2]:
                raise ValueError("specular must be (H, W) in the texture's layout, beside metallic_roughness")
        self.base_color = np.asarray(self.base_color, dtype=np.float32).reshape(3)
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("faces index vertices that do not exist")

    @property
    def is_textured(self) -> bool:
        return self.uv is not None and self.texture is not None

    @property
    def bounds(self) -> np.ndarray:
        """(2, 3) float32: min and max corner of the axis-aligned bounding box."""
        if len(self.vertices) == 0:
            return np.zeros((2, 3), np.float32)
        return np.stack([self.vertices.min(0), self.vertices.max(0)])

    def face_normals(self) -> np.ndarray:
        """(M, 3) float32 unit normals (right-hand rule on the vertex order)."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)).astype(np.float32)

    def vertex_normals(self) -> np.ndarray:
        """(N, 3) float32 area-weighted unit vertex normals."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        out = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(out, self.faces[:, k], n)
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-20)).astype(np.float32)

    def signed_volume(self) -> float:
        """Volume enclosed by the mesh, positive when faces wind counter-clockwise seen from outside."""
        tri = self.vertices[self.faces].astype(np.float64)
        return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)

    def surface_area(self) -> float:
        tri = self.vertices[self.faces].astype(np.float64)
        return float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum() / 2)

    def transformed(self, matrix: np.ndarray) -> "TexturedMesh":
        """A copy with vertices mapped by a (4, 4) similarity transform (winding kept if det > 0)."""
        m = np.asarray(matrix, dtype=np.float64)
        v = self.vertices.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        faces = self.faces if np.linalg.det(m[:3, :3]) > 0 else self.faces[:, ::-1]
        return replace(self, vertices=v.astype(np.float32), faces=faces.copy())

    def sample_surface(self, count: int, seed: int = 0) -> np.ndarray:
        """(count, 3) float64 points drawn uniformly by area on the surface."""
        rng = np.random.default_rng(seed)
        tri = self.vertices[self.faces].astype(np.float64)
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        if area.sum() <= 0:
            return np.zeros((0, 3))
        idx = rng.choice(len(tri), size=count, p=area / area.sum())
        r1, r2 = rng.random(count), rng.random(count)
        flip = r1 + r2 > 1
        r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
        t = tri[idx]
        return t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])


def merge(parts: list[TexturedMesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the geometry of several parts -> (vertices (N, 3), faces (M, 3), part index per face (M,))."""
    verts, faces, owner, offset = [], [], [], 0
    for k, p in enumerate(parts):
        verts.append(p.vertices)
        faces.append(p.faces + offset)
        owner.append(np.full(len(p.faces), k, np.int32))
        offset += len(p.vertices)
    if not parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros(0, np.int32)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(owner)


def bounds_of(parts: list[TexturedMesh]) -> np.ndarray:
    """(2, 3) bounding box of several parts."""
    b = np.stack([p.bounds for p in parts if len(p.vertices)])
    return np.stack([b[:, 0].min(0), b[:, 1].max(0)])


def normalization(parts: list[TexturedMesh], extent: float = 1.0) -> np.ndarray:
    """(4, 4) transform that centres the parts' bounding box at the origin and scales its longest side to ``extent``."""
    lo, hi = bounds_of(parts)
    s = extent / float((hi - lo).max())
    m = np.eye(4)
    m[:3, :3] *= s
    m[:3, 3] = -s * (lo + hi) / 2
    return m


# -- loading ------------------------------------------------------------------------------

def _part_from_trimesh(geom) -> TexturedMesh:
    import trimesh

    vertices = np.asarray(geom.vertices)
    faces = np.asarray(geom.faces)
    visual = geom.visual
    kwargs = {}
    if isinstance(visual, trimesh.visual.texture.TextureVisuals):
        mat = visual.material
        image = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
        # glTF's baseColorFactor multiplies its texture; an OBJ's Kd only colours untextured
        # surfaces (as in Blender's importer): with map_Kd, the texture is the albedo
        factor = getattr(mat, "baseColorFactor", None)
        if factor is None and image is None:
            factor = getattr(mat, "diffuse", None)
        if factor is not None:
            factor = np.asarray(factor, dtype=np.float64)[:3]
            kwargs["base_color"] = factor / 255.0 if factor.max() > 1.0 else factor
        if visual.uv is not None and image is not None:
            kwargs["uv"] = np.asarray(visual.uv)
            kwargs["texture"] = np.asarray(image.convert("RGB"))
    elif isinstance(visual, trimesh.visual.color.ColorVisuals) and visual.kind == "vertex":
        kwargs["vertex_colors"] = np.asarray(visual.vertex_colors)[:, :3]
    elif isinstance(visual, trimesh.visual.color.ColorVisuals) and visual.kind == "face":
        kwargs["base_color"] = np.asarray(visual.face_colors[:, :3], dtype=np.float64).mean(0) / 255.0
    return TexturedMesh(vertices, faces, **kwargs)


def load_parts(path: str | Path) -> list[TexturedMesh]:
    """Load any mesh file trimesh reads (OBJ+MTL, glTF/GLB, PLY, ...) as textured parts in its world frame.

    Node transforms of scenes are applied; each material becomes its own part. A mesh
    without colour gets a neutral grey base colour.
    """
    import trimesh

    loaded = trimesh.load(str(path), process=False)
    geoms = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
    parts = [_part_from_trimesh(g) for g in geoms if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    for p in parts:
        if not p.is_textured and p.vertex_colors is None and np.allclose(p.base_color, 1.0):
            p.base_color = np.full(3, 0.7, np.float32)
    if not parts:
        raise ValueError(f"{path}: no triangles found")
    return parts


def load_mesh(path: str | Path) -> TexturedMesh:
    """Load a single-material mesh (for example one of meshforge's own mesh.glb outputs)."""
    parts = load_parts(path)
    if len(parts) == 1:
        return parts[0]
    v, f, _ = merge(parts)
    return TexturedMesh(v, f)
