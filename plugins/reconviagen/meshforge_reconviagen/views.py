"""The capture's views as ReconViaGen's inputs: object crops, square, 518², background black.

ReconViaGen cuts the object out with BiRefNet; a meshforge capture already knows each
view's object mask (from alpha, or from depth), so that mask is the alpha channel. The rest
follows ReconViaGen's ``preprocess_image`` (guide §1 step 2):

- bounding box of alpha > 0.8·255, a square of side int(1.1·max(w, h)) centred on it, clipped
  to the image, then padded back to a square with transparent pixels (the crop centred);
- bilinear resize to 518² (align_corners=False) of RGBA/255, RGB set to 0 where alpha ≤ 0.8,
  stored as uint8 (truncated, as the reference does), then read back as RGB/255.

The first view is VGGT's reference frame; we keep the capture's order (front first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PreparedViews:
    """Network inputs from the capture's views.

    Attributes:
        names: view names, in the order of ``images``.
        images: (n, 3, size, size) float32 in [0, 1] (a torch tensor, CPU).
        crops: per view (x0, y0, x1, y1, pad_x, pad_y) of the square crop in image pixels, for reports.
    """

    names: list
    images: object
    crops: list


def crop_view(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, tuple]:
    """One view: (H, W, 3) uint8 + (H, W) bool mask -> ((size, size, 3) uint8 with black background, crop box)."""
    import torch
    import torch.nn.functional as F

    alpha = np.where(mask, 255, 0).astype(np.uint8)
    rows, cols = np.nonzero(alpha > 0.8 * 255)
    if len(rows) == 0:
        raise ValueError("the view's mask is empty")
    x0, y0, x1, y1 = cols.min(), rows.min(), cols.max(), rows.max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = int(max(x1 - x0, y1 - y0) * 1.1)
    h, w = alpha.shape
    box = (max(0, int(cx - side // 2)), max(0, int(cy - side // 2)), min(w, int(cx + side // 2)),
           min(h, int(cy + side // 2)))
    rgba = np.concatenate([image, alpha[..., None]], axis=2)[box[1]:box[3], box[0]:box[2]]
    ch, cw = rgba.shape[:2]
    square = max(ch, cw)
    pad_y, pad_x = (square - ch) // 2 if ch < cw else 0, (square - cw) // 2 if cw <= ch else 0
    padded = np.zeros((square, square, 4), np.uint8)
    padded[pad_y:pad_y + ch, pad_x:pad_x + cw] = rgba
    t = torch.from_numpy(padded.astype(np.float32) / 255).permute(2, 0, 1)[None]
    t = F.interpolate(t, (size, size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    rgb = t[..., :3] * (t[..., 3:4] > 0.8)
    return (rgb * 255).astype(np.uint8), (*box, pad_x, pad_y)


def prepare_views(capture, size: int) -> PreparedViews:
    """Every view of ``capture`` cropped to its object (see the module docstring)."""
    import torch

    names, images, crops = [], [], []
    for name, view in capture.views.items():
        rgb, box = crop_view(view.image, view.mask, size)
        names.append(name)
        images.append(torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1))
        crops.append([int(v) for v in box])
    return PreparedViews(names, torch.stack(images), crops)
