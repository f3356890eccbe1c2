"""Placing the generated mesh in the capture's world frame.

TRELLIS generates in its own normalised frame: the object inside [−0.5, 0.5]³, z up, turned
however the training data's canonical pose was (ReconViaGen's ``app_fine.py`` has to
*estimate* the input views' poses against the result for the same reason). The capture,
however, knows where the object is: its calibrated depth maps give surface points in world
units. So the mesh is registered to those points:

1. z-up → y-up (the rotation TRELLIS's GLB export applies, (x, y, z) → (x, z, −y));
2. each of the 24 axis-aligned orientations, scaled and centred onto the points' bounding box,
   is refined by a few iterations of similarity ICP (closest points both ways, Umeyama's
   closed form) on a sub-sample; the best few are refined further on more points;
3. the lowest symmetric mean distance wins; upright candidates win ties within 2 %.

The result maps normalised coordinates to world coordinates (scale · R, t) and reports the
residual relative to the object's size, so a poor fit is visible in the result's warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations, product

import numpy as np
from scipy.spatial import cKDTree

#: TRELLIS frame (z up) -> glTF/meshforge frame (y up): (x, y, z) -> (x, z, −y)
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass
class Registration:
    """A similarity transform from the normalised frame to the capture's world frame.

    Attributes:
        matrix: (4, 4) float64; world = matrix @ [normalised, 1].
        scale: world units per normalised unit.
        residual: symmetric mean closest-point distance, as a fraction of the object's bounding-box diagonal.
        orientation: index of the chosen axis-aligned start (0: the plain z-up → y-up mapping).
        upright: whether the chosen start keeps TRELLIS's up as the world's +Y.
    """

    matrix: np.ndarray
    scale: float
    residual: float
    orientation: int
    upright: bool

    def apply(self, points: np.ndarray) -> np.ndarray:
        return points @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def to_dict(self) -> dict:
        return {"matrix": np.round(self.matrix, 6).tolist(), "scale": round(self.scale, 6),
                "residual_fraction": round(self.residual, 5), "orientation": self.orientation,
                "upright": self.upright}


def axis_rotations() -> list[np.ndarray]:
    """The 24 proper rotations that map axes to axes; the identity first, then those keeping +Y."""
    out = []
    for perm in permutations(range(3)):
        for signs in product((1, -1), repeat=3):
            r = np.zeros((3, 3))
            r[np.arange(3), perm] = signs
            if np.linalg.det(r) > 0:
                out.append(r)
    return sorted(out, key=lambda r: (not np.allclose(r, np.eye(3)), r[1, 1] != 1))


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity with dst ≈ s·R·src + t (Umeyama 1991) -> (s, R, t)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    e = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[2, 2] = -1
    r = u @ e @ vt
    var = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ e) / var) if var > 0 else 1.0
    return s, r, mu_d - s * r @ mu_s


def _icp(src: np.ndarray, target: np.ndarray, tree: cKDTree, s: float, r: np.ndarray, t: np.ndarray,
         iterations: int) -> tuple[float, np.ndarray, np.ndarray, float]:
    for _ in range(iterations + 1):
        moved = s * src @ r.T + t
        d_fwd, i_fwd = tree.query(moved)
        d_bwd, i_bwd = cKDTree(moved).query(target)
        error = float(d_fwd.mean() + d_bwd.mean()) / 2
        if _ == iterations:
            break
        pairs_src = np.concatenate([src, src[i_bwd]])
        pairs_dst = np.concatenate([target[i_fwd], target])
        s, r, t = umeyama(pairs_src, pairs_dst)
    return s, r, t, error


def register(mesh_points: np.ndarray, world_points: np.ndarray, seed: int = 0) -> Registration:
    """Fit points sampled on the generated surface (normalised frame) to the capture's surface points (world).

    Parameters:
        mesh_points: (N, 3) float, normalised frame (z up).
        world_points: (M, 3) float, capture world frame (+Y up), e.g. ``capture.surface_points()``.
    """
    rng = np.random.default_rng(seed)

    def subsample(p: np.ndarray, n: int) -> np.ndarray:
        return p[rng.choice(len(p), n, replace=False)] if len(p) > n else p

    lo, hi = world_points.min(0), world_points.max(0)
    diagonal = float(np.linalg.norm(hi - lo)) or 1.0
    coarse_src, coarse_dst = subsample(mesh_points, 800), subsample(world_points, 1500)
    fine_src, fine_dst = subsample(mesh_points, 4000), subsample(world_points, 8000)
    coarse_tree, fine_tree = cKDTree(coarse_dst), cKDTree(fine_dst)
    trials = []
    for index, rot in enumerate(axis_rotations()):
        r0 = rot @ Z_UP_TO_Y_UP
        p = mesh_points @ r0.T
        plo, phi = p.min(0), p.max(0)
        s0 = diagonal / (float(np.linalg.norm(phi - plo)) or 1.0)
        t0 = (lo + hi) / 2 - s0 * (plo + phi) / 2
        s, r, t, err = _icp(coarse_src, coarse_dst, coarse_tree, s0, r0, t0, iterations=6)
        trials.append((err, index, rot[1, 1] == 1, s, r, t))
    trials.sort(key=lambda x: x[0])
    refined = []
    for err, index, upright, s, r, t in trials[:3]:
        s, r, t, err = _icp(fine_src, fine_dst, fine_tree, s, r, t, iterations=15)
        refined.append((err, index, upright, s, r, t))
    best = min(refined, key=lambda x: x[0])
    upright_best = min((x for x in refined if x[2]), key=lambda x: x[0], default=None)
    if upright_best is not None and upright_best[0] <= best[0] * 1.02:
        best = upright_best
    err, index, upright, s, r, t = best
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = s * r, t
    return Registration(matrix, float(s), err / diagonal, int(index), bool(upright))


def fit_to_box(mesh_points: np.ndarray, world_points: np.ndarray) -> Registration:
    """Without orientation search: z-up → y-up, then scale and centre onto the points' bounding box."""
    lo, hi = world_points.min(0), world_points.max(0)
    p = mesh_points @ Z_UP_TO_Y_UP.T
    plo, phi = p.min(0), p.max(0)
    s = float(np.linalg.norm(hi - lo)) / (float(np.linalg.norm(phi - plo)) or 1.0)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = s * Z_UP_TO_Y_UP, (lo + hi) / 2 - s * (plo + phi) / 2
    moved = p * s + matrix[:3, 3]
    err = (cKDTree(world_points).query(moved)[0].mean() + cKDTree(moved).query(world_points)[0].mean()) / 2
    return Registration(matrix, s, float(err) / (float(np.linalg.norm(hi - lo)) or 1.0), 0, True)
