"""Comparing a reconstruction with the capture's own views, honestly.

For each view, the mesh is rendered from that view's calibrated camera with meshforge's
CPU rasteriser (albedo, no lighting: what the views show) and compared with the input:

- **where**: on the object region only, the union of the rendered and the input mask;
  pixels outside it are background in both and are not scored, so an easy white
  background cannot inflate the figures. The input is used as it is; the render is
  composited on the view's own background colour (the median of its pixels outside the
  mask), so a missing part (input object vs background) and an extra part (rendered
  surface vs the input's background) both count as errors. (The input's mask may come
  from a coarser depth map, so input pixels are never blanked by it.)
- **at which size**: ``score_size`` (default 1024², the contract's depth size): views are
  box-downsampled, and renders are drawn at the view's own size and box-downsampled the
  same way, so edges are treated alike.
- **PSNR** (piq.psnr) over exactly the union's pixels.
- **SSIM** (piq.ssim, 11×11 Gaussian windows, σ 1.5) over tiles that cover the union:
  tiles of 42 px stepped by 32 px put every pixel at exactly one window centre; each tile
  counts with the fraction of its pixels inside the union.
- **silhouette IoU** of the two masks, and **depth error** of the rendered depth against the
  capture's calibrated depth where both see the object (median and RMS, as a fraction of
  the object's size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

TILE, STRIDE = 42, 32  # 42 - (11 - 1) = 32: window centres tile the image exactly


@dataclass
class ViewComparison:
    """One view, reconstruction against input, at the scoring size.

    Attributes:
        rendered, reference: (S, S, 3) float32 in [0, 1]; the render on ``background`` outside its mask.
        rendered_mask, reference_mask: (S, S) bool.
        background: (3,) float32, the view's background colour.
        depth_error: (N,) float32 absolute depth differences where both see the object, world units.
    """

    view: str
    rendered: np.ndarray
    reference: np.ndarray
    rendered_mask: np.ndarray
    reference_mask: np.ndarray
    background: np.ndarray
    depth_error: np.ndarray

    @property
    def union(self) -> np.ndarray:
        return self.rendered_mask | self.reference_mask


def _box_downsample(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) or (H, W) -> (size, size, ...) float32 by box filtering (area averaging)."""
    from meshforge.render import box_downsample

    h = image.shape[0]
    if h % size == 0:
        return box_downsample(image, h // size)
    im = Image.fromarray(image if image.dtype == np.uint8 else image.astype(np.float32))
    return np.asarray(im.resize((size, size), Image.BOX), np.float32)


def compare_view(mesh, view, size: int = 1024, with_depth: bool = True,
                 supersample: int | None = None) -> ViewComparison:
    """Render ``mesh`` from ``view``'s camera and line it up with the input (see the module docstring);
    ``with_depth`` also compares depth at the depth map's resolution.

    For scoring (``supersample`` None) the render is drawn at the input's own size and
    box-downsampled exactly like the input, so both images' edges are averaged the same
    way; pictures for people may ask for less.
    """
    from meshforge.render import render

    size = min(size, view.image.shape[0])
    if supersample is None:
        supersample = max(1, round(view.image.shape[0] / size))
    reference_mask = _box_downsample(view.mask.astype(np.float32), size) > 0.5
    reference = _box_downsample(view.image, size) / 255.0
    outside = ~view.mask[::4, ::4]  # a sixteenth of the pixels is plenty for a median
    background = (np.median(view.image[::4, ::4][outside], axis=0) / 255.0 if outside.any()
                  else np.ones(3)).astype(np.float32)
    drawn = render(mesh, view.camera.scaled(size), background=background, supersample=supersample)
    rendered_mask = drawn.mask > 0.5
    rendered = drawn.color
    rendered[~rendered_mask] = background
    depth_error = np.zeros(0, np.float32)
    if with_depth and view.depth is not None:
        from meshforge.mesh import merge
        from meshforge.raster import rasterize

        vertices, faces, _ = merge(mesh if isinstance(mesh, list) else [mesh])
        rendered_depth = rasterize(view.depth_camera, vertices, faces).depth
        both = (rendered_depth > 0) & (view.depth > 0)
        depth_error = np.abs(rendered_depth[both] - view.depth[both]).astype(np.float32)
    return ViewComparison(view.name, rendered, reference, rendered_mask, reference_mask, background, depth_error)


def region_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """piq.psnr of the pixels under ``mask`` (images (H, W, 3) in [0, 1]); 80 dB at most (piq's ε)."""
    import piq
    import torch

    if not mask.any():
        return float("nan")
    x = torch.from_numpy(np.ascontiguousarray(a[mask], np.float32)).T.reshape(1, 3, -1, 1)
    y = torch.from_numpy(np.ascontiguousarray(b[mask], np.float32)).T.reshape(1, 3, -1, 1)
    return float(piq.psnr(x.clamp(0, 1), y.clamp(0, 1), data_range=1.0))


def region_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, min_coverage: float = 0.05) -> float:
    """piq.ssim averaged over tiles covering ``mask``, each weighted by its coverage."""
    import piq
    import torch

    if not mask.any():
        return float("nan")
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    top = max(0, rows.min() - 5)
    left = max(0, cols.min() - 5)
    tiles_a, tiles_b, weights = [], [], []
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    inner = TILE - 10  # the window centres of a tile: its 32×32 interior
    for y in range(top, max(top + 1, rows.max() + 1), STRIDE):
        for x in range(left, max(left + 1, cols.max() + 1), STRIDE):
            y0, x0 = min(y, h - TILE), min(x, w - TILE)
            if y0 < 0 or x0 < 0:
                continue
            y1, x1 = y0 + 5, x0 + 5
            covered = (integral[y1 + inner, x1 + inner] - integral[y1, x1 + inner] - integral[y1 + inner, x1]
                       + integral[y1, x1])
            coverage = covered / float(inner * inner)
            if coverage < min_coverage:
                continue
            tiles_a.append(a[y0:y0 + TILE, x0:x0 + TILE])
            tiles_b.append(b[y0:y0 + TILE, x0:x0 + TILE])
            weights.append(coverage)
    if not weights:  # the object is smaller than one tile: score the whole image
        tiles_a, tiles_b, weights = [a], [b], [1.0]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(tiles_a), np.float32)).permute(0, 3, 1, 2).clamp(0, 1)
    y = torch.from_numpy(np.ascontiguousarray(np.stack(tiles_b), np.float32)).permute(0, 3, 1, 2).clamp(0, 1)
    values = piq.ssim(x, y, data_range=1.0, reduction="none", downsample=False).numpy()
    return float(np.average(values, weights=np.asarray(weights)))


def figures(cmp: ViewComparison, object_size: float) -> dict:
    """The per-view figures written to quality.json."""
    union = cmp.union
    inter = cmp.rendered_mask & cmp.reference_mask
    out = {
        "psnr": round(region_psnr(cmp.rendered, cmp.reference, union), 3),
        "ssim": round(region_ssim(cmp.rendered, cmp.reference, union), 4),
        "silhouette_iou": round(float(inter.sum() / max(union.sum(), 1)), 4),
        "object_pixels": int(union.sum()),
    }
    if len(cmp.depth_error):
        out["depth_median_error"] = round(float(np.median(cmp.depth_error) / object_size), 5)
        out["depth_rms_error"] = round(float(np.sqrt(np.mean(cmp.depth_error ** 2)) / object_size), 5)
    return out


def object_size(capture) -> float:
    """Longest side of the bounding box of the capture's depth points (1.0 without depth)."""
    pts = capture.surface_points(per_view=20_000)
    return float(np.ptp(pts, axis=0).max()) if len(pts) else 1.0
