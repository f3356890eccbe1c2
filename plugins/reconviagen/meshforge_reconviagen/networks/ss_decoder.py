"""The sparse-structure decoder: a dense 3D CNN from the 16³×8 latent to 64³ occupancy logits.

TRELLIS ``SparseStructureDecoder`` (guide §3.7; config ``ss_vae_conv3d_16l8_fp16``):
``input_layer`` conv, ``middle_block`` res blocks, then per width res blocks and a 2×
upsampling (conv to 8× the next width + 3D pixel shuffle) in ``blocks``, and ``out_layer``
(channel LayerNorm, SiLU, conv). With ``use_fp16`` the res and upsampling blocks run in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ChannelLayerNorm32, convert_torso_to_fp16, weight_dtype


def pixel_shuffle_3d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """(B, C·f³, D, H, W) -> (B, C, f·D, f·H, f·W): channel c·f³ + (i·f + j)·f + k feeds voxel (f·d + i, f·h + j, f·w + k)."""
    b, c, d, h, w = x.shape[0], x.shape[1] // factor ** 3, *x.shape[2:]
    x = x.reshape(b, c, factor, factor, factor, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * factor, h * factor, w * factor)


class ResBlock3d(nn.Module):
    """norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = ChannelLayerNorm32(channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = ChannelLayerNorm32(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(F.silu(self.norm2(h))) + x


class UpsampleBlock3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 8 * out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), 2)


class SparseStructureDecoder(nn.Module):
    """Config: out_channels, latent_channels, num_res_blocks, num_res_blocks_middle, channels, use_fp16."""

    def __init__(self, out_channels: int, latent_channels: int, num_res_blocks: int, num_res_blocks_middle: int,
                 channels: list, use_fp16: bool):
        super().__init__()
        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0]) for _ in range(num_res_blocks_middle)])
        blocks: list[nn.Module] = []
        for i, ch in enumerate(channels):
            blocks += [ResBlock3d(ch) for _ in range(num_res_blocks)]
            if i < len(channels) - 1:
                blocks.append(UpsampleBlock3d(ch, channels[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(ChannelLayerNorm32(channels[-1]), nn.SiLU(),
                                       nn.Conv3d(channels[-1], out_channels, 3, padding=1))
        if use_fp16:
            convert_torso_to_fp16(self.middle_block)
            convert_torso_to_fp16(self.blocks)

    @property
    def torso_dtype(self) -> torch.dtype:
        """float16 with ``use_fp16`` (the convolutions of the res and upsampling blocks; their norms stay float32)."""
        return weight_dtype(self.blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent, 16, 16, 16) -> logits (B, out, 64, 64, 64) in the output layer's dtype (float32).

        Each part gets its input in its own weights' dtype: float32 input layer, torso (float16
        with ``use_fp16``), float32 output layer (as TRELLIS's ``h.type(self.dtype)`` / ``h.type(x.dtype)``).
        """
        h = self.input_layer(z.to(self.input_layer.weight.dtype)).to(self.torso_dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.to(self.out_layer[2].weight.dtype))
