"""ReconViaGen's two multi-view condition modules: VGGT + DINOv2 tokens -> what the flows attend to.

Facts from guide §3.4/§3.5 (ReconViaGen ``models/sparse_structure_flow.py``
``ModulatedMultiViewCond`` and ``models/structured_latent_flow.py`` ``ModulatedSLATMultiViewCond``).
Both read the aggregator at four depths (``intermediate_layer_idx``, 4/11/17/23).

- :class:`SSMultiViewCondition`: 4096 learnt tokens (``multiview_cond_tokens``) pass four
  unmodulated cross blocks; block j attends to every patch token of every view, VGGT depth
  ℓ_j (frame ‖ global) next to the view's DINOv2 patch token. Output (1, 4096, C): the context
  of the sparse-structure flow.
- :class:`SLatMultiViewCondition`: per view and token, c ← ReLU(Linear_j([VGGT_ℓj ‖ c])) +
  DINOv2 token, four times. Output: one (1, tokens, C) context per view for the SLat flow,
  whose cross-attention averages over views. ReconViaGen's checkpoint also has
  ``fuse_blocks.*``, which its forward never uses; we do not build them (the loader skips them).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import CrossBlock, convert_torso_to_fp16, weight_dtype


class SSMultiViewCondition(nn.Module):
    """``ModulatedMultiViewCond``: config channels, aggregator_channels, image_channels, num_heads,
    mlp_ratio, num_init_tokens, qk_rms_norm, qk_rms_norm_cross, intermediate_layer_idx,
    patch_start_idx, use_fp16 (blocks and tokens in float16)."""

    def __init__(self, channels: int, aggregator_channels: int, image_channels: int, num_heads: int, mlp_ratio: float,
                 num_init_tokens: int, qk_rms_norm: bool, qk_rms_norm_cross: bool, intermediate_layer_idx: list,
                 patch_start_idx: int, use_fp16: bool):
        super().__init__()
        self.layers = list(intermediate_layer_idx)
        self.patch_start = patch_start_idx
        self.cond_blocks = nn.ModuleList(
            CrossBlock(channels, aggregator_channels + image_channels, num_heads, mlp_ratio, qk_rms_norm,
                       qk_rms_norm_cross, modulated=False) for _ in self.layers)
        dtype = torch.float16 if use_fp16 else torch.float32
        self.multiview_cond_tokens = nn.Parameter(torch.zeros(1, num_init_tokens, channels, dtype=dtype))
        if use_fp16:
            convert_torso_to_fp16(self.cond_blocks)

    def forward(self, aggregated: dict[int, torch.Tensor], image_patches: torch.Tensor) -> torch.Tensor:
        """aggregated {depth: (1, n, tokens, Ca)}, image_patches (1, n, patches, Ci) -> (1, num_init_tokens, C)."""
        dtype = weight_dtype(self.cond_blocks)
        cond = self.multiview_cond_tokens.to(dtype)
        images = image_patches.flatten(1, 2)
        for block, layer in zip(self.cond_blocks, self.layers):
            views = aggregated[layer][:, :, self.patch_start:].flatten(1, 2)
            cond = block(cond, torch.cat([views, images], dim=-1).to(dtype))
        return cond


class SLatMultiViewCondition(nn.Module):
    """``ModulatedSLATMultiViewCond``: config channels, aggregator_channels, intermediate_layer_idx,
    use_fp16 (``linear_blocks`` and the running condition in float16)."""

    def __init__(self, channels: int, aggregator_channels: int, intermediate_layer_idx: list, use_fp16: bool):
        super().__init__()
        self.layers = list(intermediate_layer_idx)
        self.linear_blocks = nn.ModuleList(nn.Sequential(nn.Linear(aggregator_channels + channels, channels), nn.ReLU())
                                           for _ in self.layers)
        if use_fp16:
            convert_torso_to_fp16(self.linear_blocks)

    def forward(self, aggregated: dict[int, torch.Tensor], image_tokens: torch.Tensor) -> list[torch.Tensor]:
        """aggregated {depth: (1, n, tokens, Ca)}, image_tokens (1, n, tokens, C) -> n tensors (1, tokens, C)."""
        dtype = weight_dtype(self.linear_blocks)
        original = image_tokens[0].to(dtype)  # (n, tokens, C)
        cond = original
        for block, layer in zip(self.linear_blocks, self.layers):
            cond = block(torch.cat([aggregated[layer][0], cond], dim=-1).to(dtype)) + original
        return [c[None] for c in cond]
