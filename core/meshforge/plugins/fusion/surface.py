"""From a signed distance grid to a clean, decimated triangle mesh."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def extract_surface(sdf: np.ndarray, origin: np.ndarray, step: float, active: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Zero level set of ``sdf`` (positive outside) by marching cubes (Lewiner et al. 2003, via
    scikit-image), with linear interpolation along grid edges for sub-voxel vertices.

    ``active`` (bool, like ``sdf``) limits the work to voxels where the surface can be.
    Returns ((N, 3) float32 world vertices, (M, 3) int32 faces wound counter-clockwise seen
    from outside). Empty arrays when the field has no zero crossing.
    """
    from skimage.measure import marching_cubes

    empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    if active is not None and not active.any():
        return empty
    try:
        verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(step, step, step), allow_degenerate=False,
                                            mask=active)
    except (ValueError, RuntimeError):  # no zero crossing anywhere
        return empty
    if len(faces) == 0:
        return empty
    verts = (verts + np.asarray(origin)).astype(np.float32)
    return verts, faces.astype(np.int32)


def components(n_vertices: int, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of a mesh -> (count, component label per face)."""
    if len(faces) == 0:
        return 0, np.zeros(0, np.int64)
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = sparse.coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n_vertices, n_vertices))
    count, labels = connected_components(graph, directed=False)
    return count, labels[faces[:, 0]]


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop vertices no face uses -> (vertices, faces, old index of each kept vertex)."""
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces].astype(np.int32), used


def remove_floaters(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.01
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep connected components with at least ``min_fraction`` of the largest one's faces.

    Returns (vertices, faces, number of components removed).
    """
    count, labels = components(len(vertices), faces)
    if count <= 1:
        return vertices, faces, 0
    sizes = np.bincount(labels)
    keep_labels = np.nonzero(sizes >= min_fraction * sizes.max())[0]
    keep = np.isin(labels, keep_labels)
    v, f, _ = compact(vertices, faces[keep])
    return v, f, int((sizes > 0).sum() - len(keep_labels))


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation (Garland & Heckbert 1997, via fast-simplification) to about ``target_faces``."""
    if len(faces) <= target_faces:
        return vertices, faces
    import fast_simplification

    # aggressiveness 8 (default 7) is a third faster here, with the same F-score and PSNR
    v, f = fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int32),
                                        target_count=int(target_faces), agg=8)
    v, f, _ = compact(np.asarray(v, np.float32), np.asarray(f, np.int32))
    return v, f
