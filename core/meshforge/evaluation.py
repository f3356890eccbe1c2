"""Measuring a reconstruction against known answers (synthetic captures).

- :func:`geometry_scores`: Chamfer-L1 and F-score at fractions of the object's size, from
  points sampled uniformly on both surfaces.
- :func:`heldout_scores`: PSNR and SSIM of the reconstruction rendered from held-out
  cameras (views that were not inputs) against the ground truth's renders, full frame.

These need a ground truth, which only synthetic captures have (``render-capture``); quality
of real captures is judged by the quality-scorer plugins instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from .camera import Camera
from .mesh import TexturedMesh, bounds_of
from .render import render


def surface_samples(mesh: TexturedMesh | list[TexturedMesh], samples: int, seed: int = 0) -> np.ndarray:
    """About ``samples`` points on the surface of a mesh or its parts, spread by area."""
    parts = mesh if isinstance(mesh, list) else [mesh]
    areas = np.array([p.surface_area() for p in parts])
    counts = np.maximum(1, np.round(samples * areas / areas.sum()).astype(int))
    return np.concatenate([p.sample_surface(int(c), seed + i) for i, (p, c) in enumerate(zip(parts, counts))])


def geometry_scores(mesh: TexturedMesh | list[TexturedMesh], ground_truth: TexturedMesh | list[TexturedMesh],
                    samples: int = 200_000, taus=(0.005, 0.01, 0.02), seed: int = 0) -> dict:
    """Chamfer-L1 and F-score@τ, distances as fractions of the ground truth's longest side.

    Returns ``{"chamfer_l1", "fscore@τ", "precision@τ", "recall@τ"}`` for each τ in ``taus``.
    """
    gt_parts = ground_truth if isinstance(ground_truth, list) else [ground_truth]
    size = float(np.ptp(bounds_of(gt_parts), axis=0).max())
    a, b = surface_samples(mesh, samples, seed), surface_samples(gt_parts, samples, seed)
    d_ab, _ = cKDTree(b).query(a, workers=-1)
    d_ba, _ = cKDTree(a).query(b, workers=-1)
    d_ab, d_ba = d_ab / size, d_ba / size
    out = {"chamfer_l1": float((d_ab.mean() + d_ba.mean()) / 2)}
    for tau in taus:
        p, r = float((d_ab < tau).mean()), float((d_ba < tau).mean())
        out[f"precision@{tau}"] = p
        out[f"recall@{tau}"] = r
        out[f"fscore@{tau}"] = 2 * p * r / max(p + r, 1e-12)
    return out


def heldout_scores(mesh: TexturedMesh | list[TexturedMesh], heldout_dir: str | Path) -> dict:
    """PSNR (dB) and SSIM of ``mesh`` on the held-out views written by ``render-capture --heldout``.

    Full frame, at the held-out images' resolution, on the same background they were rendered
    with. Returns ``{"psnr", "ssim", "per_view": {name: {"psnr", "ssim"}}}``.
    """
    from skimage.metrics import structural_similarity

    folder = Path(heldout_dir)
    spec = json.loads((folder / "heldout.json").read_text())
    background = spec.get("background", [1.0, 1.0, 1.0])
    per_view = {}
    for name, c2w in spec["views"].items():
        ref = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"), np.float64) / 255.0
        cam = Camera.from_fov(np.asarray(c2w), spec["fov_y_degrees"], ref.shape[1], ref.shape[0])
        img = render(mesh, cam, background=background).color.astype(np.float64)
        mse = float(((img - ref) ** 2).mean())
        per_view[name] = {"psnr": 10 * np.log10(1.0 / max(mse, 1e-12)),
                          "ssim": float(structural_similarity(img, ref, channel_axis=2, data_range=1.0))}
    return {"psnr": float(np.mean([v["psnr"] for v in per_view.values()])),
            "ssim": float(np.mean([v["ssim"] for v in per_view.values()])), "per_view": per_view}
