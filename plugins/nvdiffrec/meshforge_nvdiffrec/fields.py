"""Appearance during pass 1: a colour field in space, in plain PyTorch.

nvdiffrec samples a hash-grid MLP at each surface point (tiny-cuda-nn); we use the same
idea without the MLP or the hash: a few dense grids of increasing resolution over the
object's box, trilinearly sampled and summed (zero outside the box), then a sigmoid. Every grid cell gets its
gradient directly, which converges in hundreds of iterations from six views and needs no
compiled extension. The colour is unlit ("baked": the views' colour, lighting included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ColourGrid(torch.nn.Module):
    """Sum of dense RGB grids at ``resolutions`` over the box [lo, hi] -> colour in [0, 1]."""

    def __init__(self, lo, hi, resolutions=(32, 64, 128), device="cpu"):
        super().__init__()
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float32, device=device))
        self.register_buffer("hi", torch.as_tensor(hi, dtype=torch.float32, device=device))
        extent = (self.hi - self.lo).max()
        # a point that samples nothing and receives no gradient (zero padding outside the box)
        self.register_buffer("outside", self.hi + 10 * extent)
        self.grids = torch.nn.ParameterList()
        for r in resolutions:
            dims = [max(2, int(torch.ceil(r * (self.hi[i] - self.lo[i]) / extent))) for i in range(3)]
            # (1, 3, D=z, H=y, W=x), as grid_sample wants
            self.grids.append(torch.nn.Parameter(torch.zeros(1, 3, dims[2], dims[1], dims[0], device=device)))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) colours."""
        g = ((points - self.lo) / (self.hi - self.lo)) * 2 - 1
        g = g.view(1, 1, 1, -1, 3)
        total = 0
        for grid in self.grids:
            total = total + F.grid_sample(grid, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        return torch.sigmoid(total.view(3, -1).T)

    def smoothness(self) -> torch.Tensor:
        """Mean squared difference between neighbouring cells of the finest grid (nvdiffrec's kd smoothness, on a grid)."""
        g = self.grids[-1]
        return ((g[..., 1:, :, :] - g[..., :-1, :, :]) ** 2).mean() + ((g[..., :, 1:, :] - g[..., :, :-1, :]) ** 2).mean() \
            + ((g[..., :, :, 1:] - g[..., :, :, :-1]) ** 2).mean()
