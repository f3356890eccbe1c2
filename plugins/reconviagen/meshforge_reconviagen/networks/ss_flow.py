"""The sparse-structure flow: a DiT that predicts the velocity of a dense 16³×8 latent.

TRELLIS ``SparseStructureFlowModel`` (guide §3.6; config ``ss_flow_img_dit_L_16l8_fp16``):
patchify (patch 1 in the published config: one token per cell, x-major order), ``input_layer``,
plus the absolute position embedding of the grid (stored in the checkpoint as ``pos_emb``),
24 modulated cross blocks attending to the multi-view condition, then a parameter-free
LayerNorm in float32 and ``out_layer``. With ``use_fp16`` the blocks run in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CrossBlock, TimestepEmbedder, absolute_position_embedding, convert_torso_to_fp16, weight_dtype


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, R, R, R) -> (B, C·p³, R/p, R/p, R/p); channel index c·p³ + (i·p + j)·p + k for the offset (i, j, k)."""
    b, c, r = x.shape[0], x.shape[1], x.shape[2] // p
    x = x.reshape(b, c, r, p, r, p, r, p).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * p ** 3, r, r, r)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b, c, r = x.shape[0], x.shape[1] // p ** 3, x.shape[2]
    x = x.reshape(b, c, p, p, p, r, r, r).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, r * p, r * p, r * p)


class SparseStructureFlow(nn.Module):
    """Config as TRELLIS's JSON: resolution, in/out_channels, model_channels, cond_channels,
    num_blocks, num_heads, mlp_ratio, patch_size, qk_rms_norm, qk_rms_norm_cross, use_fp16."""

    def __init__(self, resolution: int, in_channels: int, out_channels: int, model_channels: int, cond_channels: int,
                 num_blocks: int, num_heads: int, mlp_ratio: float, patch_size: int, qk_rms_norm: bool,
                 qk_rms_norm_cross: bool, use_fp16: bool):
        super().__init__()
        self.resolution, self.in_channels, self.patch_size = resolution, in_channels, patch_size
        self.t_embedder = TimestepEmbedder(model_channels)
        grid = resolution // patch_size
        axes = torch.meshgrid(*[torch.arange(grid)] * 3, indexing="ij")
        self.register_buffer("pos_emb", absolute_position_embedding(torch.stack(axes, -1).reshape(-1, 3), model_channels))
        self.input_layer = nn.Linear(in_channels * patch_size ** 3, model_channels)
        self.blocks = nn.ModuleList(CrossBlock(model_channels, cond_channels, num_heads, mlp_ratio, qk_rms_norm,
                                               qk_rms_norm_cross) for _ in range(num_blocks))
        self.out_layer = nn.Linear(model_channels, out_channels * patch_size ** 3)
        if use_fp16:
            convert_torso_to_fp16(self.blocks)

    @property
    def torso_dtype(self) -> torch.dtype:
        return weight_dtype(self.blocks)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, in, R, R, R) float32, t (B,) in [0, 1000], cond (B, M, cond_channels) -> velocity like x."""
        dtype = self.torso_dtype
        h = patchify(x, self.patch_size)
        grid = h.shape[2:]
        h = self.input_layer(h.flatten(2).transpose(1, 2).to(self.input_layer.weight.dtype)) + self.pos_emb[None]
        t_emb = self.t_embedder(t).to(dtype)
        h, cond = h.to(dtype), cond.to(dtype)
        for block in self.blocks:
            h = block(h, cond, t_emb)
        h = F.layer_norm(h.to(self.out_layer.weight.dtype), h.shape[-1:])
        h = self.out_layer(h).transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return unpatchify(h, self.patch_size).to(x.dtype)
