"""Pass 2's G-buffer: the covered pixels of every view, found once, because the mesh stays put.

With the vertices fixed, which face a pixel sees, the point it sees and that point's texture
coordinates are the same in every iteration of the texture fit. Pass 2 therefore rasterises
once and its materials evaluate the covered pixels only (deferred shading): per iteration
that leaves a texture lookup, the material's own arithmetic, one scatter into the images
and the anti-aliasing of edges.
"""

from __future__ import annotations

import math

import torch

#: texture lookups run on an image of this width holding the covered pixels in order (one row
#: of millions would exceed the CUDA grid's height in nvdiffrast's kernels)
LOOKUP_WIDTH = 1024


def texture_at(backend, texture: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``texture`` (1, Ht, Wt, C) at ``coords`` (N, 2) -> (N, C).

    A list of pixels rather than whole frames: a frame's uncovered pixels all look up one
    texel, and the backward pass would add their (zero) gradients there one atomic at a time."""
    n = len(coords)
    rows = max(1, math.ceil(n / LOOKUP_WIDTH))
    grid = torch.cat([coords, coords.new_zeros(rows * LOOKUP_WIDTH - n, 2)]).reshape(1, rows, LOOKUP_WIDTH, 2)
    return backend.texture(texture, grid).reshape(-1, texture.shape[-1])[:n]


class GBuffer:
    """Covered pixels of a fixed mesh in ``B`` views of ``res``² (``N`` of them, view-major)."""

    def __init__(self, backend, vertices: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor,
                 clip: torch.Tensor, res: int):
        self.backend, self.vertices, self.faces, self.clip = backend, vertices, faces, clip
        with torch.no_grad():
            self.rast = backend.rasterize(clip, faces, (res, res))
        self.shape = tuple(self.rast.shape[:3])
        self.covered = (self.rast[..., 3:4] > 0).float()  # (B, H, W, 1)
        self.pixels = torch.nonzero(self.covered.reshape(-1), as_tuple=True)[0]  # (N,) into B·H·W
        self.view = self.pixels // (res * res)  # (N,) which view
        self.face = self.rast[..., 3].reshape(-1)[self.pixels].long() - 1  # (N,) face seen
        self.coords = self.attribute(uv)  # (N, 2) texture coordinates

    def __len__(self) -> int:
        return len(self.pixels)

    def attribute(self, values: torch.Tensor) -> torch.Tensor:
        """Per-vertex ``values`` (V, C) interpolated at the covered pixels -> (N, C)."""
        with torch.no_grad():
            full = self.backend.interpolate(values, self.rast, self.faces)
        return full.reshape(-1, values.shape[-1])[self.pixels]

    def lookup(self, texture: torch.Tensor) -> torch.Tensor:
        """Bilinear lookup of ``texture`` (1, Ht, Wt, C) at the covered pixels -> (N, C)."""
        return texture_at(self.backend, texture, self.coords)

    def image(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) values of the covered pixels -> (B, H, W, C) images, 0 elsewhere."""
        out = torch.zeros(math.prod(self.shape), values.shape[-1], dtype=values.dtype, device=values.device)
        return out.index_put((self.pixels,), values).reshape(*self.shape, values.shape[-1])

    def composite(self, colour: torch.Tensor) -> torch.Tensor:
        """(N, 3) colours -> (B, H, W, 3) views over black, edges anti-aliased as pass 1 renders them."""
        image = self.image(colour)
        stack = self.backend.antialias(torch.cat([image, self.covered], dim=-1), self.rast, self.clip, self.faces)
        return stack[..., :3]
