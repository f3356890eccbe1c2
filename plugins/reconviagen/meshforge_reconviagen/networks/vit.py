"""The DINOv2 vision transformer (ViT-L/14 with 4 register tokens) and its block.

Used twice: as TRELLIS's image-condition model (its *pre-norm* tokens, guide §3.2) and as
VGGT's patch embedder (its *normed* patch tokens, §3.3). Key names follow DINOv2's
``vision_transformer.py`` (facebookresearch/dinov2, hub ``dinov2_vitl14_reg``):
``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token`` (unused at inference but in
the checkpoint), ``patch_embed.proj``, ``blocks.{i}``, ``norm``.

:class:`ViTBlock` is also VGGT's aggregator block, which adds LayerNorm on q and k and 2D
rotary position embedding (``rope``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """``fc1`` → exact GELU → ``fc2``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTAttention(nn.Module):
    """``qkv`` → (optional ``q_norm``/``k_norm`` LayerNorms per head, then RoPE) → SDPA → ``proj``."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, norm_eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        if qk_norm:
            self.q_norm = nn.LayerNorm(dim // num_heads, eps=norm_eps)
            self.k_norm = nn.LayerNorm(dim // num_heads, eps=norm_eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # (B, H, N, d) each
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        h = F.scaled_dot_product_attention(q, k, v)
        return self.proj(h.transpose(1, 2).flatten(-2))


class ViTBlock(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm_eps: float, qk_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = ViTAttention(dim, num_heads, qk_norm, norm_eps)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)  # (B, patches row-major, dim)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


class DinoV2(nn.Module):
    """DINOv2 ViT with register tokens (config keys as DINOv2's: img_size, patch_size, embed_dim,
    depth, num_heads, mlp_ratio, num_register_tokens). LayerNorm eps 1e-6."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_register_tokens: int):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + patches, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.blocks = nn.ModuleList(ViTBlock(embed_dim, num_heads, mlp_ratio, 1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, img_size, img_size), already ImageNet-normalised -> (pre-norm tokens, normed tokens),
        each (B, 1 + registers + patches, dim) in the order [cls, registers, patches (row-major)]."""
        if images.shape[-2:] != (self.img_size, self.img_size):
            # DINOv2 would interpolate its position embedding; ReconViaGen always feeds img_size²
            raise ValueError(f"expected {self.img_size}² images, got {tuple(images.shape[-2:])}")
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        # registers go in after the position embedding, which they do not get
        x = torch.cat([x[:, :1], self.register_tokens.expand(len(x), -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return x, self.norm(x)
