"""The structured-latent flow: a sparse DiT predicting the velocity of 8 latent channels per voxel.

TRELLIS ``SLatFlowModel`` as modified by ReconViaGen (guide §3.8; config
``slat_flow_img_dit_L_64l8p2_fp16``): ``input_layer``; ``input_blocks`` (sparse res blocks,
the last one pooling 64³ → 32³); the 32³ absolute position embedding; 24 modulated cross
blocks over all voxels, cross-attending to each view's condition and averaging; then
``out_blocks`` that upsample back and take the input blocks' outputs as skip connections;
a parameter-free LayerNorm and ``out_layer``. With ``use_fp16`` the three block lists run in
float16 (the final LayerNorm too, as in the reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (CrossBlock, LayerNorm32, TimestepEmbedder, absolute_position_embedding, convert_torso_to_fp16,
                     weight_dtype)
from .sparse import SparseConv3d, SparseTensor, cross_attention, downsample, full_attention, upsample


class SparseResBlock3d(nn.Module):
    """Optional 2× down/upsampling first; then norm1 → SiLU → conv1 → norm2 · (1 + scale) + shift →
    SiLU → conv2, plus ``skip_connection`` of the (resampled) input. (scale, shift) come from the
    time embedding through ``emb_layers.1``, *scale first*."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, resample: str | None = None):
        super().__init__()
        self.resample = resample
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, out_channels)
        self.conv2 = SparseConv3d(out_channels, out_channels)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.skip_connection = nn.Linear(channels, out_channels) if channels != out_channels else nn.Identity()

    def forward(self, x: SparseTensor, t_emb: torch.Tensor) -> SparseTensor:
        scale, shift = self.emb_layers(t_emb).to(x.feats.dtype).chunk(2, dim=1)
        if self.resample == "down":
            x = downsample(x)
        elif self.resample == "up":
            x = upsample(x)
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))
        h = self.norm2(h.feats) * (1 + x.per_batch(scale)) + x.per_batch(shift)
        h = self.conv2(x.replace(F.silu(h)))
        return x.replace(h.feats + self.skip_connection(x.feats))


class SparseCrossBlock(CrossBlock):
    """:class:`CrossBlock` over voxels: self-attention among all voxels of an item, cross-attention to
    its context (or the average over a list of contexts, one per view)."""

    def forward(self, x: SparseTensor, context, t_emb: torch.Tensor) -> SparseTensor:  # type: ignore[override]
        mods = [x.per_batch(m[:, 0]) for m in self.modulation(t_emb)]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods
        feats = x.feats
        h = self.norm1(feats) * (1 + scale_a) + shift_a
        q, k, v = self.self_attn.project_self(h)
        feats = feats + self.self_attn.to_out(full_attention(x, q, k, v).flatten(-2)) * gate_a
        h = self.norm2(feats)
        q = self.cross_attn.project_query(h)
        contexts = context if isinstance(context, list) else [context]
        for ctx in contexts:
            k, v = self.cross_attn.project_context(ctx)
            feats = feats + self.cross_attn.to_out(cross_attention(x, q, k, v).flatten(-2)) / len(contexts)
        h = self.norm3(feats) * (1 + scale_m) + shift_m
        return x.replace(feats + self.mlp(h) * gate_m)


class SLatFlow(nn.Module):
    """Config: resolution, in/out_channels, model_channels, cond_channels, num_blocks, num_heads,
    mlp_ratio, patch_size (2^stages of io blocks), num_io_res_blocks, io_block_channels,
    qk_rms_norm, qk_rms_norm_cross, use_fp16."""

    def __init__(self, resolution: int, in_channels: int, out_channels: int, model_channels: int, cond_channels: int,
                 num_blocks: int, num_heads: int, mlp_ratio: float, patch_size: int, num_io_res_blocks: int,
                 io_block_channels: list, qk_rms_norm: bool, qk_rms_norm_cross: bool, use_fp16: bool):
        super().__init__()
        if 2 ** len(io_block_channels) != patch_size:
            raise ValueError("patch_size must be 2 ** len(io_block_channels)")
        self.resolution, self.in_channels, self.model_channels = resolution, in_channels, model_channels
        self.t_embedder = TimestepEmbedder(model_channels)
        self.input_layer = nn.Linear(in_channels, io_block_channels[0])
        self.input_blocks = nn.ModuleList()
        for width, next_width in zip(io_block_channels, io_block_channels[1:] + [model_channels]):
            self.input_blocks.extend(SparseResBlock3d(width, model_channels, width) for _ in range(num_io_res_blocks - 1))
            self.input_blocks.append(SparseResBlock3d(width, model_channels, next_width, resample="down"))
        self.blocks = nn.ModuleList(SparseCrossBlock(model_channels, cond_channels, num_heads, mlp_ratio, qk_rms_norm,
                                                     qk_rms_norm_cross) for _ in range(num_blocks))
        self.out_blocks = nn.ModuleList()
        for width, prev_width in zip(reversed(io_block_channels), [model_channels] + list(reversed(io_block_channels[1:]))):
            self.out_blocks.append(SparseResBlock3d(2 * prev_width, model_channels, width, resample="up"))
            self.out_blocks.extend(SparseResBlock3d(2 * width, model_channels, width) for _ in range(num_io_res_blocks - 1))
        self.out_layer = nn.Linear(io_block_channels[0], out_channels)
        if use_fp16:
            for torso in (self.input_blocks, self.blocks, self.out_blocks):
                convert_torso_to_fp16(torso)

    @property
    def torso_dtype(self) -> torch.dtype:
        return weight_dtype(self.blocks)

    def forward(self, x: SparseTensor, t: torch.Tensor, cond) -> SparseTensor:
        """x: noisy latents (N, in) float32 on voxels of the 64³ grid; t (B,) in [0, 1000]; cond: (B, M, C)
        or a list of them (one per view) -> velocity (N, out) float32 on the same voxels."""
        dtype = self.torso_dtype
        h = x.replace(self.input_layer(x.feats.to(self.input_layer.weight.dtype)).to(dtype))
        t_emb = self.t_embedder(t).to(dtype)
        cond = [c.to(dtype) for c in cond] if isinstance(cond, list) else cond.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, t_emb)
            skips.append(h.feats)
        h = h.replace(h.feats + absolute_position_embedding(h.coords[:, 1:], self.model_channels).to(dtype))
        for block in self.blocks:
            h = block(h, cond, t_emb)
        for block, skip in zip(self.out_blocks, reversed(skips)):
            h = block(h.replace(torch.cat([h.feats, skip], dim=1)), t_emb)
        out = F.layer_norm(h.feats, h.feats.shape[-1:])
        return h.replace(self.out_layer(out.to(self.out_layer.weight.dtype)).to(x.feats.dtype))
