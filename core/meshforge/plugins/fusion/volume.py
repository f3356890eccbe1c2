"""The depth hull as a signed distance field on a voxel grid.

Each view says two things about a point x in space (planar depth z of x in that view):

- x projects outside the view's silhouette: x is outside the object, by about the
  distance to the silhouette's outline at depth z;
- x projects onto the object at observed depth D: if z < D the view saw through x, so x
  is outside by D − z; if z > D, x is behind the observed surface (−(z − D)) and the view
  knows nothing more. Depth is only known to within its quantisation (one level of an
  8-bit relative map is about 0.5 % of the object) and, for relative depth, the accuracy of
  its estimated scale, so a view claims free space only beyond a slack of that size:
  otherwise rounding in one view would shave the rims that another view's silhouette
  defines to a fraction of a pixel.

The object is what no view saw through: sdf(x) = max over views of those values
(positive outside). Its zero set passes exactly through every observed depth sample, is
closed, and fills concavities that no view can see. Silhouette distances come from an
exact Euclidean distance transform (sub-pixel outlines after bilinear lookup); depth is
looked up bilinearly where the four neighbouring pixels belong to one smooth surface and
by nearest neighbour across depth edges.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from scipy import ndimage as ndi


def silhouette_distance(mask: np.ndarray) -> np.ndarray:
    """(S, S) float32 signed distance to the mask's outline in pixels: positive outside, zero on
    the boundary between a foreground and a background pixel.

    One distance transform to the foreground's outline pixels gives both signs: a
    foreground pixel d pixels from the nearest outline pixel is d + 0.5 inside, a background
    pixel d − 0.5 outside.
    """
    outline = mask & ~ndi.binary_erosion(mask, border_value=0)
    d = ndi.distance_transform_edt(~outline)
    return np.where(mask, -(d + 0.5), d - 0.5).astype(np.float32)


@numba.njit(cache=True, inline="always")
def _bilinear(img, fi, fj):
    h, w = img.shape
    i0 = int(np.floor(fi))
    j0 = int(np.floor(fj))
    di = fi - i0
    dj = fj - j0
    i0c = min(max(i0, 0), h - 1)
    i1c = min(max(i0 + 1, 0), h - 1)
    j0c = min(max(j0, 0), w - 1)
    j1c = min(max(j0 + 1, 0), w - 1)
    return ((img[i0c, j0c] * (1 - dj) + img[i0c, j1c] * dj) * (1 - di)
            + (img[i1c, j0c] * (1 - dj) + img[i1c, j1c] * dj) * di)


@numba.njit(cache=True, inline="always")
def _depth_at(depth, fi, fj, edge):
    """Depth at continuous pixel index (fi, fj): bilinear on smooth patches, nearest across edges.

    Returns 0 where the nearest pixel is background.
    """
    h, w = depth.shape
    ni = min(max(int(np.floor(fi + 0.5)), 0), h - 1)
    nj = min(max(int(np.floor(fj + 0.5)), 0), w - 1)
    nearest = depth[ni, nj]
    if nearest <= 0.0:
        return 0.0
    i0 = int(np.floor(fi))
    j0 = int(np.floor(fj))
    if i0 < 0 or j0 < 0 or i0 + 1 >= h or j0 + 1 >= w:
        return nearest
    a = depth[i0, j0]
    b = depth[i0, j0 + 1]
    c = depth[i0 + 1, j0]
    d = depth[i0 + 1, j0 + 1]
    lo = min(min(a, b), min(c, d))
    hi = max(max(a, b), max(c, d))
    if lo <= 0.0 or hi - lo > edge:
        return nearest
    di = fi - i0
    dj = fj - j0
    return (a * (1 - dj) + b * dj) * (1 - di) + (c * (1 - dj) + d * dj) * di


@numba.njit(cache=True, inline="always")
def _project(r, t, intr, x, y, z):
    """World point -> (u, v, planar depth) in a view with world-to-camera rotation r, translation t."""
    pcx = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z + t[0]
    pcy = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z + t[1]
    zd = -(r[2, 0] * x + r[2, 1] * y + r[2, 2] * z + t[2])
    if zd <= 1e-12:
        return -1.0, -1.0, zd
    return intr[0] * pcx / zd + intr[2], intr[3] - intr[1] * pcy / zd, zd


@numba.njit(cache=True, inline="always")
def _sdf_at(x, y, z, rotations, translations, intrinsics, sizes, depths, has_depth, silhouettes, edges, slack,
            truncation):
    """max over views of what each view says about the point (x, y, z); see the module docstring."""
    best = -truncation
    seen = False
    for k in range(rotations.shape[0]):
        u, v, zd = _project(rotations[k], translations[k], intrinsics[k], x, y, z)
        if zd <= 1e-9:
            continue
        fx = intrinsics[k, 0]
        size = sizes[k]
        if u < 0.0 or v < 0.0 or u >= size or v >= size:
            continue  # the view did not see this point at all
        seen = True
        fi = v - 0.5
        fj = u - 0.5
        sil = _bilinear(silhouettes[k], fi, fj)
        if sil > 0.0:
            s = sil * zd / fx
        elif not has_depth[k]:
            continue  # a silhouette without depth knows nothing inside the outline
        else:
            dval = _depth_at(depths[k], fi, fj, edges[k])
            s = 0.0 if dval <= 0.0 else dval - zd - slack[k]
        if s > best:
            best = s
            if best >= truncation:
                return truncation
    if not seen:
        return truncation
    return min(max(best, -truncation), truncation)


#: block classes of the coarse pass
_OUTSIDE, _INSIDE, _MIXED = 0, 1, 2


@numba.njit(cache=True, parallel=True)
def _classify_blocks(origin, step, block, bdims, radius, rotations, translations, intrinsics, sizes, has_depth,
                     silhouettes, depth_min, depth_max, out):
    """Prove blocks empty or full: ``radius`` bounds the distance of any point of a block (plus
    a one-voxel margin) from its centre, and the depth maps are min/max-filtered over at least
    that radius's footprint."""
    n_views = rotations.shape[0]
    for bx in numba.prange(bdims[0]):
        for by in range(bdims[1]):
            for bz in range(bdims[2]):
                x = origin[0] + (bx * block + 0.5 * (block - 1)) * step
                y = origin[1] + (by * block + 0.5 * (block - 1)) * step
                z = origin[2] + (bz * block + 0.5 * (block - 1)) * step
                inside_all = True
                cls = _MIXED
                for k in range(n_views):
                    u, v, zd = _project(rotations[k], translations[k], intrinsics[k], x, y, z)
                    if zd - radius <= 1e-9:
                        inside_all = False
                        continue
                    fx = intrinsics[k, 0]
                    r_px = radius * fx / (zd - radius) + 1.0
                    size = sizes[k]
                    if u < r_px or v < r_px or u >= size - r_px or v >= size - r_px:
                        inside_all = False
                        continue
                    sil = _bilinear(silhouettes[k], v - 0.5, u - 0.5)
                    if sil > r_px:
                        cls = _OUTSIDE  # the whole block projects outside this silhouette
                        break
                    if not has_depth[k]:
                        if sil > -r_px:
                            inside_all = False
                        continue
                    i = min(max(int(v), 0), size - 1)
                    j = min(max(int(u), 0), size - 1)
                    if zd + radius < depth_min[k, i, j]:
                        cls = _OUTSIDE  # the view saw through the whole block
                        break
                    if not (zd - radius > depth_max[k, i, j]):
                        inside_all = False  # part of the block may be in front of this view's surface
                if cls == _MIXED and inside_all:
                    cls = _INSIDE
                out[bx, by, bz] = cls


@numba.njit(cache=True, parallel=True)
def _fill_blocks(origin, step, block, dims, blocks, classes, rotations, translations, intrinsics, sizes, depths,
                 has_depth, silhouettes, edges, slack, truncation, out):
    for n in numba.prange(blocks.shape[0]):
        bx, by, bz = blocks[n, 0], blocks[n, 1], blocks[n, 2]
        cls = classes[bx, by, bz]
        for ix in range(bx * block, min((bx + 1) * block, dims[0])):
            for iy in range(by * block, min((by + 1) * block, dims[1])):
                for iz in range(bz * block, min((bz + 1) * block, dims[2])):
                    if cls == _OUTSIDE:
                        out[ix, iy, iz] = truncation
                    elif cls == _INSIDE:
                        out[ix, iy, iz] = -truncation
                    else:
                        out[ix, iy, iz] = _sdf_at(origin[0] + ix * step, origin[1] + iy * step, origin[2] + iz * step,
                                                  rotations, translations, intrinsics, sizes, depths, has_depth,
                                                  silhouettes, edges, slack, truncation)


def _footprint_extrema(depth: np.ndarray, radius_px: int, cell: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the min and max depth within ``radius_px`` (a square window), background = +inf.

    Computed on ``cell``×``cell`` tiles and expanded back: each pixel gets the extrema over
    a window at least as large as asked for, which keeps the block tests conservative at a
    sixteenth of the cost.
    """
    h, w = depth.shape
    ht, wt = -(-h // cell), -(-w // cell)
    padded = np.full((ht * cell, wt * cell), np.inf, np.float32)
    padded[:h, :w] = np.where(depth > 0, depth, np.inf)
    tiles = padded.reshape(ht, cell, wt, cell)
    size = 2 * (-(-radius_px // cell) + 1) + 1
    lo = ndi.minimum_filter(tiles.min(axis=3).min(axis=1), size=size)
    hi = ndi.maximum_filter(tiles.max(axis=3).max(axis=1), size=size)
    expand = (np.arange(h) // cell, np.arange(w) // cell)
    return lo[np.ix_(*expand)], hi[np.ix_(*expand)]


def _stack(images: list, pad: float = 0.0) -> np.ndarray:
    """Same-size stack of 2-D float32 images (padded with ``pad`` where sizes differ)."""
    size = max(max(i.shape) for i in images)
    out = np.full((len(images), size, size), pad, np.float32)
    for k, img in enumerate(images):
        out[k, :img.shape[0], :img.shape[1]] = img
    return out


@numba.njit(cache=True, parallel=True)
def _sdf_points(points, rotations, translations, intrinsics, sizes, depths, has_depth, silhouettes, edges, slack,
                truncation, out):
    for n in numba.prange(points.shape[0]):
        out[n] = _sdf_at(points[n, 0], points[n, 1], points[n, 2], rotations, translations, intrinsics, sizes,
                         depths, has_depth, silhouettes, edges, slack, truncation)


class HullField:
    """The depth hull's signed distance as a function: grids (:meth:`grid`) and points (:meth:`at`).

    Per-view lookups (silhouette distances, depth maps, camera matrices) are prepared once.
    ``slack_levels``: free space is claimed only beyond this many depth levels (see the
    module docstring).
    """

    def __init__(self, views, slack_levels: float = 0.5):
        self.views = list(views)
        with ThreadPoolExecutor(max_workers=2) as pool:  # distance transforms release the GIL
            sils = list(pool.map(silhouette_distance,
                                 [v.depth > 0 if v.depth is not None else v.mask for v in self.views]))
        rotations, translations, intrinsics, depths, has_depth, edges, cams = [], [], [], [], [], [], []
        for v in self.views:
            if v.depth is not None:
                cam = v.depth_camera
                depths.append(v.depth.astype(np.float32))
                # a depth step of more than a few pixel footprints between neighbours is an edge
                edges.append(8.0 * float(np.median(v.depth[v.depth > 0])) / cam.fx)
            else:
                cam = v.camera
                depths.append(np.zeros((1, 1), np.float32))
                edges.append(0.0)
            cams.append(cam)
            has_depth.append(v.depth is not None)
            w2c = cam.world_to_camera
            rotations.append(w2c[:3, :3])
            translations.append(w2c[:3, 3])
            intrinsics.append([cam.fx, cam.fy, cam.cx, cam.cy])
        self.cams = cams
        self.depth_list = depths
        self.has_depth = np.asarray(has_depth, np.bool_)
        self.args = (np.asarray(rotations, np.float64), np.asarray(translations, np.float64),
                     np.asarray(intrinsics, np.float64), np.array([s.shape[0] for s in sils], np.int64))
        self.depths = _stack(depths)
        self.silhouettes = _stack(sils)
        self.edges = np.asarray(edges, np.float64)
        self.slack = np.array([slack_levels * v.depth_step for v in self.views], np.float64)

    @classmethod
    def of_capture(cls, capture) -> "HullField":
        """The field of a capture's views, with the slack its depth needs: estimated (relative)
        depth scales agree to about a level between views, metric depth to rounding."""
        return cls(capture.views.values(), slack_levels=1.5 if capture.depth_estimated else 0.5)

    def at(self, points: np.ndarray, truncation: float) -> np.ndarray:
        """(N, 3) world points -> (N,) float32 signed distance (positive outside)."""
        out = np.empty(len(points), np.float32)
        _sdf_points(np.ascontiguousarray(points, np.float64), *self.args, self.depths, self.has_depth,
                    self.silhouettes, self.edges, self.slack, float(truncation), out)
        return out

    def refine(self, vertices: np.ndarray, step: float, iterations: int = 3) -> tuple[np.ndarray, dict]:
        """Move surface vertices onto the field's exact zero set with damped Newton steps.

        Marching cubes interpolates the field linearly between grid points, which cuts sharp
        convex edges and corners (chamfers) by up to about a voxel; evaluating the field
        itself at the vertices and stepping along its gradient puts them back on the faces.
        Each step is limited to half a voxel, and a vertex that would end further from the
        zero set than it started stays where it was.
        """
        x = vertices.astype(np.float64)
        h = 0.25 * step
        trunc = 6 * step
        offsets = np.array([[h, 0, 0], [-h, 0, 0], [0, h, 0], [0, -h, 0], [0, 0, h], [0, 0, -h]])
        start = np.abs(self.at(x, trunc))
        for _ in range(iterations):
            f = self.at(x, trunc).astype(np.float64)
            probes = self.at((x[:, None, :] + offsets[None]).reshape(-1, 3), trunc).reshape(-1, 6)
            grad = np.stack([probes[:, 0] - probes[:, 1], probes[:, 2] - probes[:, 3],
                             probes[:, 4] - probes[:, 5]], axis=1) / (2 * h)
            g2 = np.maximum((grad ** 2).sum(axis=1), 1e-12)
            move = -(f / g2)[:, None] * grad
            length = np.linalg.norm(move, axis=1, keepdims=True)
            move *= np.minimum(1.0, 0.5 * step / np.maximum(length, 1e-20))
            x = x + move
        end = np.abs(self.at(x, trunc))
        worse = end > start
        x[worse] = vertices[worse]
        moved = np.linalg.norm(x - vertices, axis=1)
        return x.astype(np.float32), {"refined_vertices": int((~worse).sum()),
                                      "mean_move_voxels": round(float(moved.mean() / step), 4)}


def depth_hull_sdf(views, origin: np.ndarray, step: float, dims: tuple[int, int, int],
                   truncation: float, block: int = 8) -> tuple[np.ndarray, dict, np.ndarray]:
    """Evaluate the depth hull's signed distance on a regular grid.

    Parameters:
        views: the capture's views (or a prepared :class:`HullField`); views without depth
            contribute their silhouette only.
        origin: (3,) world position of voxel (0, 0, 0).
        step: voxel edge length, world units.
        dims: voxels along x, y, z.
        truncation: values are clamped to [−truncation, truncation].

    Blocks of ``block``³ voxels that are provably outside (one view saw through all of it or
    it projects outside a silhouette) or provably inside (every view's surface is in front of
    all of it) are filled with ±truncation without per-voxel work.

    Returns ((nx, ny, nz) float32 field, positive outside; statistics of the coarse pass;
    (nx, ny, nz) bool mask of the voxels where the surface can be).
    """
    field = views if isinstance(views, HullField) else HullField(views)
    origin = np.asarray(origin, np.float64)
    dims_a = np.asarray(dims, np.int64)
    bdims = (dims_a + block - 1) // block
    # bound on a block point's distance from the block centre, plus one voxel of margin so that
    # no zero crossing can involve a voxel of a block that was proven empty or full
    radius = (0.5 * np.sqrt(3.0) * block + np.sqrt(3.0)) * step
    corners = origin + np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * (dims_a - 1) * step
    depth_min, depth_max = [], []
    for k, (cam, d) in enumerate(zip(field.cams, field.depth_list)):
        if not field.has_depth[k]:
            depth_min.append(np.zeros_like(d))
            depth_max.append(np.zeros_like(d))
            continue
        zmin = max(float(cam.project(corners)[1].min()), 1e-6)
        r_px = int(np.ceil(radius * cam.fx / max(zmin - radius, 1e-6))) + 2
        lo, hi = _footprint_extrema(d, r_px)
        depth_min.append(lo)
        depth_max.append(hi)
    classes = np.empty(tuple(bdims), np.uint8)
    _classify_blocks(origin, float(step), block, bdims, float(radius), *field.args, field.has_depth,
                     field.silhouettes, _stack(depth_min, np.inf), _stack(depth_max, np.inf), classes)
    out = np.empty(dims, np.float32)
    blocks = np.argwhere(np.ones(tuple(bdims), bool)).astype(np.int64)
    _fill_blocks(origin, float(step), block, dims_a, blocks, classes, *field.args, field.depths, field.has_depth,
                 field.silhouettes, field.edges, field.slack, float(truncation), out)
    stats = {"blocks": int(classes.size), "mixed_blocks": int((classes == _MIXED).sum()),
             "inside_blocks": int((classes == _INSIDE).sum())}
    # cubes that can hold the surface have their lower corner in a mixed block: the pruning
    # margin guarantees that no grid edge touching a pruned voxel changes sign
    active = np.repeat(np.repeat(np.repeat(classes == _MIXED, block, 0), block, 1), block, 2)
    return out, stats, active[:dims[0], :dims[1], :dims[2]]
