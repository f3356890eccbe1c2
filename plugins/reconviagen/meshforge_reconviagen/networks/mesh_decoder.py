"""The structured-latent mesh decoder: per-voxel latents -> per-cube surface features at 4× resolution.

TRELLIS ``SLatMeshDecoder`` (guide §3.9; config ``slat_dec_mesh_swin8_B_64l8m256c_fp16``):
``input_layer`` + absolute position embedding on the 64³ coordinates, 12 transformer blocks
with shifted-window self-attention (window 8, every other block shifted by 4), two
subdividing blocks (64³ → 128³ → 256³, 768 → 192 → 96 channels), then ``out_layer`` to 101
channels per 256³ cube: 8 corner SDF values, 8×3 corner deformations, 21 FlexiCubes weights
(β 12, α 8, γ 1) and 8×6 corner colours (see :mod:`..extraction`). With ``use_fp16`` the blocks
and subdividing blocks run in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..published import MESH_FEATURES
from .layers import (Attention, FeedForward, LayerNorm32, absolute_position_embedding, convert_torso_to_fp16,
                     weight_dtype)
from .sparse import SparseConv3d, SparseGroupNorm32, SparseTensor, subdivide, windowed_attention


class SparseTransformerBlock(nn.Module):
    """x + attn(norm1(x)) with windowed self-attention, then x + mlp(norm2(x)); norms without parameters."""

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(channels, num_heads)
        self.norm2 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(channels, mlp_ratio)

    def forward(self, x: SparseTensor, max_tokens: int) -> SparseTensor:
        q, k, v = self.attn.project_self(self.norm1(x.feats))
        h = windowed_attention(x, q, k, v, self.window, self.shift, max_tokens)
        feats = x.feats + self.attn.to_out(h.flatten(-2))
        return x.replace(feats + self.mlp(self.norm2(feats)))


class SubdivideBlock(nn.Module):
    """GroupNorm → SiLU → subdivide → conv → GroupNorm → SiLU → conv, plus the subdivided input
    through a 1³ convolution (TRELLIS ``SparseSubdivideBlock3d``)."""

    def __init__(self, channels: int, out_channels: int, num_groups: int):
        super().__init__()
        self.act_layers = nn.Sequential(SparseGroupNorm32(num_groups, channels))  # + SiLU, parameter-free
        self.out_layers = nn.ModuleList([SparseConv3d(channels, out_channels), SparseGroupNorm32(num_groups, out_channels),
                                         nn.SiLU(), SparseConv3d(out_channels, out_channels)])
        self.skip_connection = SparseConv3d(channels, out_channels, size=1)

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.act_layers[0](x)
        h = subdivide(h.replace(F.silu(h.feats)))
        h = self.out_layers[1](self.out_layers[0](h))
        h = self.out_layers[3](h.replace(F.silu(h.feats)))
        skip = self.skip_connection(h.replace(x.feats.repeat_interleave(8, dim=0)))  # the subdivided input
        return h.replace(h.feats + skip.feats)


class SLatMeshDecoder(nn.Module):
    """Config: resolution, model_channels, latent_channels, num_blocks, num_heads, mlp_ratio,
    window_size, num_groups, use_color, use_fp16."""

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int, num_heads: int,
                 mlp_ratio: float, window_size: int, num_groups: int, use_color: bool, use_fp16: bool):
        super().__init__()
        self.resolution, self.model_channels = resolution, model_channels
        self.input_layer = nn.Linear(latent_channels, model_channels)
        self.blocks = nn.ModuleList(SparseTransformerBlock(model_channels, num_heads, mlp_ratio, window_size,
                                                           window_size // 2 * (i % 2)) for i in range(num_blocks))
        self.upsample = nn.ModuleList([SubdivideBlock(model_channels, model_channels // 4, num_groups),
                                       SubdivideBlock(model_channels // 4, model_channels // 8, num_groups)])
        out = sum(MESH_FEATURES.values()) if use_color else sum(MESH_FEATURES.values()) - MESH_FEATURES["color"]
        self.out_layer = nn.Linear(model_channels // 8, out)
        if use_fp16:
            convert_torso_to_fp16(self.blocks)
            convert_torso_to_fp16(self.upsample)

    @property
    def output_resolution(self) -> int:
        return self.resolution * 4

    def forward(self, x: SparseTensor, max_window_tokens: int = 1 << 20) -> SparseTensor:
        """Latents (N, latent) float32 on the 64³ grid -> features (64·N, 101) float32 on the 256³ grid."""
        dtype = weight_dtype(self.blocks)
        h = self.input_layer(x.feats.to(self.input_layer.weight.dtype))
        h = h + absolute_position_embedding(x.coords[:, 1:], self.model_channels).to(h.dtype)
        h = x.replace(h.to(dtype))
        for block in self.blocks:
            h = block(h, max_window_tokens)
        for block in self.upsample:
            h = block(h)
        return h.replace(self.out_layer(h.feats.to(self.out_layer.weight.dtype)).float())
