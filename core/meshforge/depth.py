"""Depth encodings, and cleaning depth renders of isolated specks.

Encodings (shared/spec/input-format.md), for a raw value ``v`` (0 = background):

- ``linear16``: z = near + (v − 1) / 65534 · (far − near)
- ``linear8``:  z = near + (v − 1) / 254 · (far − near)
- ``inverse16``: 1/z = 1/far + (v − 1) / 65534 · (1/near − 1/far)  (larger value = nearer)
- ``relative8`` / ``relative16``: z = a · v + b with a per-view unknown a > 0, b; the scale is
  found by :mod:`meshforge.calibration`.

``radial`` depth (distance along the ray) is converted to planar z with the camera.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage as ndi

from .camera import Camera

RELATIVE = ("relative8", "relative16")
METRIC = ("linear16", "linear8", "inverse16")


def default_encoding(bits: int) -> str:
    """The encoding assumed when cameras.json does not name one: 8-bit relative, 16-bit metric."""
    return "relative8" if bits == 8 else "linear16"


def metric_depth(values: np.ndarray, encoding: str, near: float, far: float) -> np.ndarray:
    """Raw values (H, W) -> planar or radial distance (H, W) float32 in world units, 0 for background."""
    v = values.astype(np.float64)
    fg = values > 0
    if encoding == "linear16":
        z = near + (v - 1.0) / 65534.0 * (far - near)
    elif encoding == "linear8":
        z = near + (v - 1.0) / 254.0 * (far - near)
    elif encoding == "inverse16":
        inv = 1.0 / far + (v - 1.0) / 65534.0 * (1.0 / near - 1.0 / far)
        z = 1.0 / np.maximum(inv, 1e-12)
    else:
        raise ValueError(f"{encoding!r} is not a metric encoding")
    return np.where(fg, z, 0.0).astype(np.float32)


def radial_to_planar(distance: np.ndarray, camera: Camera) -> np.ndarray:
    """Distance along each pixel's ray (H, W) -> planar z (H, W), for a camera of the depth map's size."""
    rays = camera.pixel_grid_rays()  # planar-depth-1 directions: their length is distance per unit z
    return (distance / np.linalg.norm(rays, axis=-1)).astype(np.float32)


def remove_specks(values: np.ndarray, *, max_speck_pixels: int = 200, relative_size: float = 0.005,
                  tolerance: float | None = None) -> tuple[np.ndarray, dict]:
    """Drop isolated specks from a raw depth map.

    Two kinds of noise are removed:

    - small foreground islands: 8-connected components smaller than both ``max_speck_pixels``
      and ``relative_size`` × the largest component (set to background);
    - single outlier pixels inside the object: none of the 8 neighbours within ``tolerance``
      (default 5 % of the view's value range, at least 3 levels) of the pixel's value while
      at least six neighbours are foreground (replaced by the median of their foreground
      neighbours). Steep surfaces and the tips of one-pixel-wide parts keep at least one
      neighbour at their depth, so they are not touched.

    Returns the cleaned values (same dtype) and counts of what was changed.
    """
    out = values.copy()
    fg = out > 0
    labels, count = ndi.label(fg, structure=np.ones((3, 3), bool))
    removed_islands = removed_pixels = 0
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        small = (sizes < max_speck_pixels) & (sizes < relative_size * sizes.max())
        if small.any():
            drop = np.isin(labels, np.nonzero(small)[0] + 1)
            out[drop] = 0
            removed_islands, removed_pixels = int(small.sum()), int(drop.sum())
            fg = out > 0
    if tolerance is None:
        vals = out[fg]
        span = float(vals.max()) - float(vals.min()) if vals.size else 0.0
        tolerance = max(3.0, 0.05 * span)
    replaced = _replace_outliers(values_in=out.copy(), out=out, tolerance=float(tolerance))
    return out, {"islands_removed": removed_islands, "island_pixels_removed": removed_pixels,
                 "outlier_pixels_replaced": int(replaced)}


@numba.njit(cache=True)
def _replace_outliers(values_in, out, tolerance):
    """Replace foreground pixels with ≥ 6 foreground neighbours of which none is within ``tolerance``
    by the median of those neighbours; decisions use the unmodified ``values_in``."""
    h, w = values_in.shape
    replaced = 0
    neigh = np.empty(8, np.float64)
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            c = values_in[i, j]
            if c == 0:
                continue
            n_fg = 0
            n_near = 0
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    if di == 0 and dj == 0:
                        continue
                    x = values_in[i + di, j + dj]
                    if x > 0:
                        neigh[n_fg] = x
                        n_fg += 1
                        if abs(float(x) - float(c)) <= tolerance:
                            n_near += 1
            if n_fg >= 6 and n_near == 0:
                out[i, j] = np.round(np.median(neigh[:n_fg]))
                replaced += 1
    return replaced
