"""VGGT's aggregator: alternating per-frame and global attention over the tokens of n views.

Facts from guide §3.3 (VGGT ``models/aggregator.py``, ``layers/rope.py``, vendored in
ReconViaGen under ``wheels/vggt``). Each view becomes [camera token, 4 register tokens,
37×37 DINOv2 patch tokens]; the special tokens come from ``camera_token`` (1, 2, 1, C) and
``register_token`` (1, 2, 4, C), index 0 for the first view and 1 for all others, so the
first view is the reference. Depth i runs ``frame_blocks[i]`` on each view's tokens, then
``global_blocks[i]`` on all views' tokens at once; output i is both results side by side,
(1, n, tokens, 2C). ReconViaGen reads only a few depths, so only those are kept.

Positions for the 2D rotary embedding: patch (row y, column x) gets (y + 1, x + 1), the
special tokens (0, 0); the first half of each head is rotated by y, the second by x.
"""

from __future__ import annotations

import torch
from torch import nn

from .vit import DinoV2, ViTBlock


class Rope2D:
    """2D rotary position embedding for (B, H, N, d) queries/keys with positions (N, 2) = (y, x).

    Within each half of d: d/4 inverse frequencies 1/base^(2k/(d/2)), angles duplicated
    [a, a], rotation x·cos + rotate_half(x)·sin with rotate_half(x) = [-x2, x1].
    """

    def __init__(self, positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype):
        half = head_dim // 2
        inv = 1.0 / (base ** (torch.arange(0, half, 2, device=positions.device).float() / half))
        self.tables = []
        for axis in (0, 1):
            angles = positions[:, axis].float()[:, None] * inv[None]
            angles = torch.cat([angles, angles], dim=-1).to(dtype)
            self.tables.append((angles.cos(), angles.sin()))

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for (cos, sin), part in zip(self.tables, x.chunk(2, dim=-1)):
            parts.append(part * cos + self._rotate_half(part) * sin)
        return torch.cat(parts, dim=-1)


class VGGTAggregator(nn.Module):
    """The aggregator of VGGT (keys under ``aggregator.`` in VGGT's model.safetensors).

    Config keys: img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
    num_register_tokens, rope_freq, patch_embed (the DINOv2 config).
    """

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 num_register_tokens: int, rope_freq: float, patch_embed: dict):
        super().__init__()
        self.patch_size, self.rope_freq, self.num_heads = patch_size, rope_freq, num_heads
        self.patch_embed = DinoV2(**patch_embed)
        self.frame_blocks = nn.ModuleList(ViTBlock(embed_dim, num_heads, mlp_ratio, 1e-5, qk_norm=True)
                                          for _ in range(depth))
        self.global_blocks = nn.ModuleList(ViTBlock(embed_dim, num_heads, mlp_ratio, 1e-5, qk_norm=True)
                                           for _ in range(depth))
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, num_register_tokens, embed_dim))

    @property
    def patch_start(self) -> int:
        return 1 + self.register_token.shape[2]

    def _special_tokens(self, views: int) -> torch.Tensor:
        """(views, 1 + registers, C): the first view's special tokens, then the others'."""
        tokens = torch.cat([self.camera_token, self.register_token], dim=2)[0]  # (2, 1 + R, C)
        return torch.cat([tokens[:1], tokens[1:].expand(views - 1, -1, -1)], dim=0)

    def _positions(self, grid: int, device) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(grid, device=device), torch.arange(grid, device=device), indexing="ij")
        patches = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1) + 1
        return torch.cat([torch.zeros(self.patch_start, 2, dtype=patches.dtype, device=device), patches])

    def forward(self, images: torch.Tensor, keep: list[int] | None = None) -> dict[int, torch.Tensor]:
        """images (n, 3, H, W) in [0, 1], one object's views -> {depth: (1, n, tokens, 2C)} for the
        depths in ``keep`` (default: all)."""
        from .vit import imagenet_normalise

        n = images.shape[0]
        patches = self.patch_embed(imagenet_normalise(images))[1][:, self.patch_start:]
        x = torch.cat([self._special_tokens(n).to(patches.dtype), patches], dim=1)  # (n, P, C)
        p, c = x.shape[1], x.shape[2]
        grid = images.shape[-1] // self.patch_size
        positions = self._positions(grid, images.device)
        frame_rope = Rope2D(positions, c // self.num_heads, self.rope_freq, x.dtype)
        global_rope = Rope2D(positions.repeat(n, 1), c // self.num_heads, self.rope_freq, x.dtype)
        keep = set(range(len(self.frame_blocks)) if keep is None else keep)
        out = {}
        for depth, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            if depth > max(keep):
                break
            frame = frame_block(x, frame_rope)  # each view alone
            x = global_block(frame.reshape(1, n * p, c), global_rope).reshape(n, p, c)  # all views together
            if depth in keep:
                out[depth] = torch.cat([frame, x], dim=-1)[None]
        return out

