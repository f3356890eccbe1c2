"""UV unwrapping (meshforge.unwrap): xatlas in child processes, a piece of the mesh each, packed into one atlas."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import marching_cubes

from meshforge.unwrap import _shelves, pieces, unwrap


@pytest.fixture(scope="module")
def blob():
    """A closed, bumpy surface of about 12k faces."""
    g = np.mgrid[:48, :48, :48].astype(np.float32) - 24
    sdf = np.sqrt((g ** 2).sum(0)) - 17 + np.sin(g[0] / 3) * np.cos(g[1] / 4) * 2
    v, f, _, _ = marching_cubes(sdf, 0)
    return (v / 48).astype(np.float32), f.astype(np.int32)


def triangles(vertices, faces):
    """Faces as rows of their corners' coordinates, corners and rows in a canonical order."""
    t = np.round(vertices[faces].astype(np.float64), 5)  # (F, 3, 3)
    order = np.lexsort((t[..., 2], t[..., 1], t[..., 0]), axis=1)  # corners by x, then y, then z
    rows = np.take_along_axis(t, order[..., None], axis=1).reshape(len(faces), 9)
    return rows[np.lexsort(rows.T[::-1])]


def test_pieces_cover_every_face_once_and_are_small_enough(blob):
    v, f = blob
    parts = pieces(v, f, 2000)
    assert len(parts) >= len(f) // 2000
    assert all(len(p) <= 2000 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(f)))


def test_shelves_pack_without_overlap_inside_the_canvas():
    rng = np.random.default_rng(0)
    sizes = [(int(w), int(h)) for w, h in rng.integers(50, 400, size=(12, 2))]
    offsets, width, height = _shelves(sizes)
    boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(offsets, sizes)]
    assert all(0 <= a and 0 <= b and c <= width and d <= height for a, b, c, d in boxes)
    for i, (a, b, c, d) in enumerate(boxes):
        for e, g, h, k in boxes[i + 1:]:
            assert c <= e or h <= a or d <= g or k <= b  # disjoint
    assert sum(w * h for w, h in sizes) / (width * height) > 0.5  # not wasteful


def test_a_mesh_in_several_pieces_keeps_every_triangle_and_gets_one_atlas(blob):
    v, f = blob
    mesh, stats = unwrap(v, f, texture_size=1024, piece_faces=3000)
    assert mesh is not None, stats
    assert stats["pieces"] >= 4
    assert len(mesh.faces) == len(f)
    assert np.array_equal(triangles(mesh.vertices, mesh.faces), triangles(v, f))  # the same surface
    assert mesh.uv.min() >= 0 and mesh.uv.max() <= 1
    assert 0.6 * 1024 < max(stats["atlas"]) < 1.8 * 1024  # the density aims at the texture size
    # every piece's charts keep their area: UV area / 3D area is one constant (one texel density)
    uv_tri, xyz_tri = mesh.uv[mesh.faces], mesh.vertices[mesh.faces]
    a, b = uv_tri[:, 1] - uv_tri[:, 0], uv_tri[:, 2] - uv_tri[:, 0]
    uv_area = 0.5 * np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    xyz_area = 0.5 * np.linalg.norm(np.cross(xyz_tri[:, 1] - xyz_tri[:, 0], xyz_tri[:, 2] - xyz_tri[:, 0]), axis=1)
    chunks = np.array_split(np.arange(len(f)), stats["pieces"])  # pieces are concatenated in order, similar sizes
    ratios = [uv_area[c].sum() / xyz_area[c].sum() for c in chunks]
    assert max(ratios) / min(ratios) < 1.5


def test_a_child_that_outlasts_the_limit_is_stopped_and_reported(blob):
    v, f = blob
    mesh, stats = unwrap(v, f, time_limit_s=0.05, piece_faces=3000)
    assert mesh is None and "did not finish within 0.05 s" in stats["error"]
