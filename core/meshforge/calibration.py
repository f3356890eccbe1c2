"""Estimating what a capture does not say: camera distance, field of view, depth scales.

Six views of one object constrain each other: every surface point that one view's depth
map places in space must project inside every other view's silhouette, and must not lie
in front of a surface another view observed there (free space). We turn those two facts
into residuals measured in pixels of the other view (so they do not depend on the unknown
scale of the world) and estimate:

- ``full``: the rig's distance ``d`` and field of view, and per-view depth scales
  (8/16-bit *relative* depth without cameras.json, like the sample capture);
- ``depth_scale``: per-view depth scales only (relative depth, cameras given);
- ``known``: nothing, but the same residuals are reported as a consistency check.

Relative depth is ``z = a_k · v + b_k``. The proportional model (``b_k = 0``) is tried first;
for it each view's scale only moves that view's points radially from its camera, so the
silhouettes of the other views pin ``a_k`` from both sides and each view's scale can be
found by a 1-D search inside an outer 1-D search over the field of view. The affine model
(``b_k`` free) is then fitted from that start with an extra agreement term and kept only
if it explains the views clearly better. The world's scale is fixed afterwards (the
*gauge*): the object's bounding box gets a longest side of 1.0, so the reported distance
is in object sizes. Views that cannot be made to agree raise :class:`InconsistentViews`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import least_squares, minimize_scalar

from .camera import Camera, rig
from .errors import InconsistentViews

#: a point is an outlier for another view when it falls this many pixels outside its silhouette
SILHOUETTE_TOLERANCE_PX = 2.0
#: views contradict each other "beyond repair" above these outlier fractions (cameras and depth as given)
MAX_OUTLIER_FRACTION = 0.10
MAX_VIEW_OUTLIER_FRACTION = 0.25
#: an *estimated* calibration is trusted only if it leaves at most this fraction of outliers:
#: consistent captures calibrate to well under 0.1 %, a wrong model leaves several percent
MAX_ESTIMATED_OUTLIER_FRACTION = 0.02


@dataclass
class Calibration:
    """What was estimated, and how well the views agree afterwards.

    Attributes:
        method: ``"known"``, ``"depth_scale"`` or ``"full"`` (see the module docstring).
        depth_model: ``"metric"``, ``"proportional"`` (z = a·v) or ``"affine"`` (z = a·v + b).
        distance: camera distance from the origin, world units (rig captures; None otherwise).
        fov_y_degrees: vertical field of view (shared by the rig; None when cameras vary).
        depth_scale: view -> {"a", "b"} for relative depth, raw value to planar z.
        consistency: residual figures, see :func:`consistency_report`.
        gauge: how the world's unknown scale was fixed, for people.
        fov_range_degrees: fields of view whose silhouette cost is within 2× of the best one.
        candidates: the depth models tried and their costs.
        seconds: time spent.
    """

    method: str
    depth_model: str
    distance: float | None = None
    fov_y_degrees: float | None = None
    depth_scale: dict = field(default_factory=dict)
    consistency: dict = field(default_factory=dict)
    gauge: str = ""
    fov_range_degrees: tuple | None = None
    candidates: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


#: lookups are built at no more than this resolution: the silhouettes' information is in their
#: outline, which half the resolution of a 1024² depth map still places to a pixel
WORK_SIZE = 512


def _downsample(mask: np.ndarray, values: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-downsample a mask (majority) and its values (mean of the foreground)."""
    if factor == 1:
        return mask, values.astype(np.float64)
    h = mask.shape[0] // factor
    m = mask[:h * factor, :h * factor].reshape(h, factor, h, factor)
    v = np.where(mask, values, 0).astype(np.float64)[:h * factor, :h * factor].reshape(h, factor, h, factor)
    count = m.sum(axis=(1, 3))
    low_mask = count * 2 >= factor * factor
    low_values = np.where(count > 0, v.sum(axis=(1, 3)) / np.maximum(count, 1), 0.0)
    return low_mask & (low_values > 0), low_values


class _ViewData:
    """Per-view lookups used by the residuals: signed distance to the silhouette and depth.

    Lookups live at ``WORK_SIZE``; the sampled points keep full-resolution pixel coordinates
    and depth values, and ``scale`` maps full-resolution pixels to lookup pixels.
    """

    def __init__(self, name: str, mask: np.ndarray, values: np.ndarray, points: int, rng: np.random.Generator):
        self.name = name
        self.full_size = mask.shape[0]
        factor = max(1, self.full_size // WORK_SIZE)
        self.scale = 1.0 / factor
        rows, cols = np.nonzero(mask)
        pick = rng.choice(len(rows), size=min(points, len(rows)), replace=False)
        self.uv = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=1)
        self.v = values[rows[pick], cols[pick]].astype(np.float64)
        self.v_median = float(np.median(values[mask]))
        self.all_uv = np.stack([cols + 0.5, rows + 0.5], axis=1)
        self.all_v = values[rows, cols].astype(np.float64)
        mask, values = _downsample(mask, values, factor)
        self.mask = mask
        self.values = values
        self.size = mask.shape[0]
        # signed distance to the silhouette in pixels: positive outside, negative inside
        self.sdf = ndi.distance_transform_edt(~mask) - ndi.distance_transform_edt(mask)
        # depth where it is certainly free space: nearest foreground value, then a 3×3 minimum,
        # so that interpolation across depth edges never claims free space that is not there
        idx = ndi.distance_transform_edt(~mask, return_distances=False, return_indices=True)
        self.values_min = ndi.minimum_filter(self.values[tuple(idx)], size=3)

    def lookup(self, uv: np.ndarray):
        """Full-resolution pixel coordinates (N, 2) -> (signed distance in full-resolution pixels, free-space depth)."""
        coords = np.stack([uv[:, 1] * self.scale - 0.5, uv[:, 0] * self.scale - 0.5])
        sdf = ndi.map_coordinates(self.sdf, coords, order=1, mode="nearest") / self.scale
        vmin = ndi.map_coordinates(self.values_min, coords, order=0, mode="nearest")
        return sdf, vmin


def _soft_l1(e: np.ndarray) -> np.ndarray:
    return 2.0 * (np.sqrt(1.0 + e * e) - 1.0)


class _Problem:
    def __init__(self, masks: dict, values: dict, points: int = 400, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.names = list(masks)
        self.views = {n: _ViewData(n, masks[n], values[n], points, rng) for n in self.names}
        self.size = next(iter(masks.values())).shape[0]

    def points(self, k: str, camera: Camera, a: float, b: float) -> np.ndarray:
        vd = self.views[k]
        return camera.unproject(vd.uv, a * vd.v + b)

    def silhouette_cost(self, k: str, cams: dict, a: float, b: float = 0.0) -> float:
        """Mean soft-L1 of how far view k's points land outside the other silhouettes (pixels)."""
        pts = self.points(k, cams[k], a, b)
        total, n = 0.0, 0
        for j in self.names:
            if j == k:
                continue
            uv, z = cams[j].project(pts)
            sdf, _ = self.views[j].lookup(uv)
            total += float(_soft_l1(np.maximum(sdf - 0.5, 0.0)).sum())
            n += len(sdf)
        return total / max(n, 1)

    def best_scale(self, k: str, cams: dict, distance: float) -> tuple[float, float]:
        """Proportional depth scale of view k minimising its silhouette cost -> (a, cost)."""
        vd = self.views[k]
        grid = np.log(np.geomspace(0.3, 3.0, 25) * distance / vd.v_median)
        costs = [self.silhouette_cost(k, cams, math.exp(g)) for g in grid]
        i = int(np.argmin(costs))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        r = minimize_scalar(lambda g: self.silhouette_cost(k, cams, math.exp(g)), bounds=(lo, hi),
                            method="bounded", options={"xatol": 1e-4})
        return math.exp(r.x), float(r.fun)

    def scales_for(self, cams: dict, distance: float) -> tuple[dict, float]:
        out, costs = {}, []
        for k in self.names:
            a, c = self.best_scale(k, cams, distance)
            out[k] = a
            costs.append(c)
        return out, float(np.mean(costs))

    def cross_views(self, cams: dict, a: dict, b: dict):
        """Every view's sampled points seen from every other view.

        Yields (k, j, sdf, gap, z, camera j): for view k's points in view j, the signed
        silhouette distance in pixels (> 0 outside), the gap between view j's observed depth
        and the points' depth (> 0: the point floats in front of what view j saw), and the
        points' planar depth in view j.
        """
        for k in self.names:
            pts = self.points(k, cams[k], a[k], b[k])
            for j in self.names:
                if j == k:
                    continue
                uv, z = cams[j].project(pts)
                sdf, vmin = self.views[j].lookup(uv)
                yield k, j, sdf, a[j] * vmin + b[j] - z, z, cams[j]

    def residuals(self, cams: dict, a: dict, b: dict, agreement: float = 0.0) -> np.ndarray:
        """Silhouette excess, free-space violations (pixels) and, optionally, depth agreement.

        For relative depth one raw level is ``a`` world units, the resolution of the data.
        """
        res = []
        for k, j, sdf, gap, z, cam in self.cross_views(cams, a, b):
            inside = sdf <= 0
            footprint = np.maximum(z, 1e-9) / cam.fx
            quant = a[j] + a[k]  # one depth level of each view
            res.append(np.maximum(sdf - 0.5, 0.0))
            res.append(np.where(inside, np.maximum(gap - quant, 0.0) / footprint, 0.0))
            if agreement:
                res.append(agreement * np.where(inside, np.minimum(np.abs(gap), 4 * quant) / quant, 0.0))
        return np.concatenate(res)


def consistency_report(problem: _Problem, cams: dict, a: dict, b: dict, level: dict | None = None) -> dict:
    """How well the views agree: per view, the fraction of its depth points that land outside
    another view's silhouette (by more than 2 px) or in another view's free space (by more
    than two depth levels and 2 px), and the RMS silhouette excess in pixels.

    ``level`` is the size of one raw depth level per view in world units (default ``a``,
    right for relative depth).
    """
    level = a if level is None else level
    outs: dict = {k: [] for k in problem.names}
    excess: dict = {k: [] for k in problem.names}
    for k, j, sdf, gap, z, cam in problem.cross_views(cams, a, b):
        quant = 2 * (level[j] + level[k])
        outs[k].append((sdf > SILHOUETTE_TOLERANCE_PX) | ((sdf <= 0) & (gap > quant + 2 * z / cam.fx)))
        excess[k].append(np.maximum(sdf, 0.0))
    per_view, all_out = {}, []
    for k in problem.names:
        o, e = np.concatenate(outs[k]), np.concatenate(excess[k])
        per_view[k] = {"outlier_fraction": round(float(o.mean()), 4),
                       "silhouette_excess_rms_px": round(float(np.sqrt(np.mean(e * e))), 3)}
        all_out.append(o)
    frac = float(np.concatenate(all_out).mean())
    return {"outlier_fraction": round(frac, 4), "per_view": per_view,
            "tolerances": {"silhouette_px": SILHOUETTE_TOLERANCE_PX, "free_space": "2 depth levels + 2 px"}}


def _raise_if_inconsistent(report: dict, what: str) -> None:
    worst = max(report["per_view"].items(), key=lambda kv: kv[1]["outlier_fraction"])
    if report["outlier_fraction"] > MAX_OUTLIER_FRACTION or worst[1]["outlier_fraction"] > MAX_VIEW_OUTLIER_FRACTION:
        raise InconsistentViews(
            reason=(f"{report['outlier_fraction']:.0%} of the depth points fall outside other views' silhouettes or in "
                    f"their free space (worst: {worst[0]} with {worst[1]['outlier_fraction']:.0%}) {what}; check that "
                    f"each depth render belongs to the view of the same name and that the views show one object"),
            consistency=report)


def _rig_for_views(distance: float, fov: float, size: int, names) -> dict:
    return rig(distance, fov, size, views=names)


def estimate_rig(masks: dict, values: dict, *, points: int = 400, seed: int = 0) -> Calibration:
    """Estimate distance, field of view and per-view depth scales of a default-rig capture.

    Parameters:
        masks: view -> (S, S) bool silhouette at depth-map resolution.
        values: view -> (S, S) raw relative depth values (0 = background).
    """
    t0 = time.perf_counter()
    prob = _Problem(masks, values, points, seed)
    names, size = prob.names, prob.size
    # outer search over the field of view at distance 1; each view's scale found inside
    fovs = np.geomspace(5.0, 110.0, 20)
    scored = []
    for fov in fovs:
        cams = _rig_for_views(1.0, fov, size, names)
        _, cost = prob.scales_for(cams, 1.0)
        scored.append(cost)
    i = int(np.argmin(scored))
    lo, hi = fovs[max(i - 1, 0)], fovs[min(i + 1, len(fovs) - 1)]
    r = minimize_scalar(lambda f: prob.scales_for(_rig_for_views(1.0, f, size, names), 1.0)[1],
                        bounds=(lo, hi), method="bounded", options={"xatol": 0.02})
    fov = float(r.x)
    cams = _rig_for_views(1.0, fov, size, names)
    a, sil_cost = prob.scales_for(cams, 1.0)
    b = {k: 0.0 for k in names}
    # polish jointly: the per-view searches only see silhouettes; adding the free-space residuals
    # makes the views' depth scales agree with each other too (halves the disagreement at rims)
    fov, a = _polish_proportional(prob, fov, a)
    cams = _rig_for_views(1.0, fov, size, names)
    good = [f for f, c in zip(fovs, scored) if c <= 2 * max(sil_cost, 1e-3)]
    fov_range = (float(min(good + [fov])), float(max(good + [fov])))
    model, candidates = "proportional", [{"model": "proportional", "silhouette_cost": round(sil_cost, 5)}]
    prop_res = prob.residuals(cams, a, b, agreement=0.5)
    prop_cost = float(np.mean(_soft_l1(prop_res)))
    candidates[0]["cost"] = round(prop_cost, 5)
    report = consistency_report(prob, cams, a, b)
    candidates[0]["outlier_fraction"] = report["outlier_fraction"]
    if report["outlier_fraction"] > 0.01:
        # the proportional model leaves disagreement: try z = a·v + b, started from it
        fov_a, a_a, b_a = _fit_affine(prob, fov, a)
        cams_a = _rig_for_views(1.0, fov_a, size, names)
        aff_cost = float(np.mean(_soft_l1(prob.residuals(cams_a, a_a, b_a, agreement=0.5))))
        aff_report = consistency_report(prob, cams_a, a_a, b_a)
        candidates.append({"model": "affine", "cost": round(aff_cost, 5),
                           "outlier_fraction": aff_report["outlier_fraction"]})
        if aff_report["outlier_fraction"] < report["outlier_fraction"]:
            model, fov, cams, a, b, report = "affine", fov_a, cams_a, a_a, b_a, aff_report
    _raise_if_inconsistent(report, "even after estimating the camera distance, field of view and depth scales")
    if report["outlier_fraction"] > MAX_ESTIMATED_OUTLIER_FRACTION:
        raise InconsistentViews(
            reason=(f"the relative depth renders could not be calibrated: with the best camera distance, field of "
                    f"view and depth scales found, {report['outlier_fraction']:.1%} of the depth points still "
                    f"disagree with the other views (at most {MAX_ESTIMATED_OUTLIER_FRACTION:.0%} is accepted). "
                    f"meshforge calibrates depth proportional to z (z = a·v) reliably; an affine encoding "
                    f"(z = a·v + b) is tried but not always found. If the depth is metric, or you know the cameras, "
                    f"say so in cameras.json (depth.encoding, near, far; views)"),
            consistency=report, candidates=candidates)
    # gauge: scale the world so that the object's bounding box has a longest side of 1
    cloud = np.concatenate([cams[k].unproject(vd.all_uv, a[k] * vd.all_v + b[k]) for k, vd in prob.views.items()])
    s = 1.0 / float((cloud.max(axis=0) - cloud.min(axis=0)).max())
    return Calibration(
        method="full", depth_model=model, distance=s, fov_y_degrees=fov,
        depth_scale={k: {"a": a[k] * s, "b": b[k] * s} for k in names}, consistency=report,
        gauge="world units are object sizes: the calibrated object's bounding box has a longest side of 1.0",
        fov_range_degrees=fov_range, candidates=candidates, seconds=round(time.perf_counter() - t0, 3))


def _polish(fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Bounded robust least squares from ``x0``; ``x0`` itself when that does not improve the cost.

    A polish refines a solution the searches already found, so it may only move within
    tight bounds (an unbounded run once drifted to scales of e^700).
    """
    start = float(np.mean(_soft_l1(fun(x0))))
    try:
        r = least_squares(fun, x0, loss="soft_l1", f_scale=1.0, x_scale="jac", max_nfev=100, diff_step=1e-4,
                          bounds=(lower, upper))
    except (ValueError, FloatingPointError, OverflowError):
        return x0
    return r.x if float(np.mean(_soft_l1(r.fun))) < start else x0


def _polish_proportional(prob: _Problem, fov: float, a: dict) -> tuple[float, dict]:
    """Joint polish of the field of view and the proportional scales on silhouette + free-space residuals."""
    names, size = prob.names, prob.size
    zeros = {k: 0.0 for k in names}
    x0 = np.concatenate([[fov], np.log([a[k] for k in names])])
    span = np.concatenate([[0.2 * fov], np.full(len(names), 0.1)])

    def fun(x):
        return prob.residuals(_rig_for_views(1.0, float(x[0]), size, names),
                              {k: math.exp(x[1 + i]) for i, k in enumerate(names)}, zeros)

    x = _polish(fun, x0, x0 - span, x0 + span)
    return float(x[0]), {k: math.exp(x[1 + i]) for i, k in enumerate(names)}


def _polish_scales(prob: _Problem, cameras: dict, a: dict) -> dict:
    """Joint polish of the proportional scales with the cameras fixed (see :func:`_polish_proportional`)."""
    names = prob.names
    zeros = {k: 0.0 for k in names}
    x0 = np.log([a[k] for k in names])

    def fun(x):
        return prob.residuals(cameras, {k: math.exp(x[i]) for i, k in enumerate(names)}, zeros)

    x = _polish(fun, x0, x0 - 0.1, x0 + 0.1)
    return {k: math.exp(x[i]) for i, k in enumerate(names)}


def _fit_affine(prob: _Problem, fov: float, a: dict) -> tuple[float, dict, dict]:
    names, size = prob.names, prob.size
    x0 = np.concatenate([[fov], np.log([a[k] for k in names]), np.zeros(len(names))])

    def unpack(x):
        return (float(x[0]), {k: math.exp(x[1 + i]) for i, k in enumerate(names)},
                {k: float(x[1 + len(names) + i]) for i, k in enumerate(names)})

    def fun(x):
        f, aa, bb = unpack(x)
        return prob.residuals(_rig_for_views(1.0, f, size, names), aa, bb, agreement=0.5)

    lo = np.full_like(x0, -np.inf)
    hi = np.full_like(x0, np.inf)
    lo[0], hi[0] = 2.0, 150.0
    r = least_squares(fun, x0, loss="soft_l1", f_scale=1.0, x_scale="jac", bounds=(lo, hi), max_nfev=200,
                      diff_step=1e-3)
    return unpack(r.x)


def estimate_scales(masks: dict, values: dict, cameras: dict, *, points: int = 400, seed: int = 0) -> Calibration:
    """Per-view proportional depth scales for relative depth when the cameras are known.

    ``cameras`` are at depth-map resolution.
    """
    t0 = time.perf_counter()
    prob = _Problem(masks, values, points, seed)
    distance = float(np.mean([np.linalg.norm(c.position) for c in cameras.values()]))
    a, cost = prob.scales_for(cameras, distance)
    b = {k: 0.0 for k in prob.names}
    a = _polish_scales(prob, cameras, a)
    report = consistency_report(prob, cameras, a, b)
    _raise_if_inconsistent(report, "even after estimating each view's depth scale")
    return Calibration(method="depth_scale", depth_model="proportional",
                       depth_scale={k: {"a": a[k], "b": 0.0} for k in prob.names}, consistency=report,
                       candidates=[{"model": "proportional", "silhouette_cost": round(cost, 5)}],
                       gauge="world units of cameras.json", seconds=round(time.perf_counter() - t0, 3))


def check_known(masks: dict, depths: dict, cameras: dict, levels: dict, *, points: int = 400,
                seed: int = 0) -> Calibration:
    """Consistency of a capture whose cameras and metric depth are both known (nothing estimated).

    Parameters:
        depths: view -> planar z (world units, 0 = background).
        cameras: view -> camera at depth-map resolution.
        levels: view -> size of one raw depth level in world units (the data's resolution).
    """
    t0 = time.perf_counter()
    prob = _Problem(masks, depths, points, seed)
    ones = {k: 1.0 for k in prob.names}
    zeros = {k: 0.0 for k in prob.names}
    report = consistency_report(prob, cameras, ones, zeros, level=levels)
    _raise_if_inconsistent(report, "with the cameras as given (check camera_to_world: OpenGL convention, the camera "
                                   "looks down its −Z; and the depth encoding, near and far)")
    fovs = {round(c.fov_y_degrees, 6) for c in cameras.values()}
    dists = {round(float(np.linalg.norm(c.position)), 6) for c in cameras.values()}
    return Calibration(method="known", depth_model="metric",
                       distance=dists.pop() if len(dists) == 1 else None,
                       fov_y_degrees=fovs.pop() if len(fovs) == 1 else None,
                       consistency=report, gauge="world units of the capture",
                       seconds=round(time.perf_counter() - t0, 3))
