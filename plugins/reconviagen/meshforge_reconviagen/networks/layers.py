"""Dense building blocks of the TRELLIS networks.

Float32 norms, multi-head attention with per-head RMS normalisation of q and k, the
feed-forward net, timestep and absolute-position embeddings, and the transformer cross
blocks (with and without adaLN modulation). Attribute names are the checkpoints' key
names (guide §3.1; TRELLIS ``modules/attention/modules.py``, ``modules/transformer/*.py``).

The sparse networks reuse these modules on a :class:`~.sparse.SparseTensor`'s feature
rows: the parameters are the same, only the attention kernel differs, which is why
:class:`Attention` exposes its projections (:meth:`~Attention.project_self`, …).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (fp16 torsos keep fp32 statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel axis of a (B, C, *spatial) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class MultiHeadRMSNorm(nn.Module):
    """x / |x| · gamma · √d per head, in float32: (…, heads, d) -> same shape and dtype."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(x.shape[-1])
        return (F.normalize(x.float(), dim=-1) * self.gamma * scale).to(x.dtype)


class Attention(nn.Module):
    """TRELLIS multi-head attention, head width 64 in every published config.

    Self-attention has ``to_qkv``; cross-attention ``to_q`` (from x) and ``to_kv`` (from the
    context, ``ctx_channels`` wide). ``qk_rms_norm`` adds ``q_rms_norm``/``k_rms_norm``.
    Heads split channels as (head, d): channel = head · d + i.
    """

    def __init__(self, channels: int, num_heads: int, ctx_channels: int | None = None, qk_rms_norm: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.is_cross = ctx_channels is not None
        if self.is_cross:
            self.to_q = nn.Linear(channels, channels)
            self.to_kv = nn.Linear(ctx_channels, 2 * channels)
        else:
            self.to_qkv = nn.Linear(channels, 3 * channels)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(channels // num_heads, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(channels // num_heads, num_heads)
        self.to_out = nn.Linear(channels, channels)

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        return x.unflatten(-1, (parts, self.num_heads, -1)).unbind(-3)

    def _normed(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self, "q_rms_norm"):
            return self.q_rms_norm(q), self.k_rms_norm(k)
        return q, k

    def project_self(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(…, C) -> q, k, v, each (…, heads, d)."""
        q, k, v = self._heads(self.to_qkv(x), 3)
        return (*self._normed(q, k), v)

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        q = self.to_q(x).unflatten(-1, (self.num_heads, -1))
        return self.q_rms_norm(q) if hasattr(self, "q_rms_norm") else q

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self._heads(self.to_kv(context), 2)
        return (self.k_rms_norm(k) if hasattr(self, "k_rms_norm") else k), v

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, C), context (B, M, ctx_channels) for cross-attention -> (B, L, C)."""
        if self.is_cross:
            q = self.project_query(x)
            k, v = self.project_context(context)
        else:
            q, k, v = self.project_self(x)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.to_out(h.transpose(1, 2).flatten(-2))


class FeedForward(nn.Module):
    """``mlp.0`` Linear(C, ratio·C) → GELU (tanh approximation) → ``mlp.2`` Linear(ratio·C, C)."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) float times (0..1000) -> (B, dim) float32, [cos, sin] halves (TRELLIS order, not [sin, cos])."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid of the time, then ``mlp.0`` Linear(256, C) → SiLU → ``mlp.2`` Linear(C, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, channels), nn.SiLU(), nn.Linear(channels, channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_sinusoid(t).to(self.mlp[0].weight.dtype))


def absolute_position_embedding(coords: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, 3) grid coordinates -> (N, channels) float32.

    Per axis x, y, z: [sin(c·f), cos(c·f)] with f = 1/10000^(k/F), k < F = channels // 6;
    zero-padded to ``channels`` (1024 = 3·340 + 4 zeros). No parameters.
    """
    count = channels // coords.shape[1] // 2
    freqs = 1.0 / (10000 ** (torch.arange(count, dtype=torch.float32, device=coords.device) / count))
    angles = coords.float().reshape(-1)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(coords.shape[0], -1)
    return F.pad(emb, (0, channels - emb.shape[1]))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class CrossBlock(nn.Module):
    """Transformer block: self-attention, cross-attention to a context, feed-forward.

    With ``modulated`` (TRELLIS ``ModulatedTransformerCrossBlock``) the time embedding drives
    ``adaLN_modulation.1`` → shift/scale/gate of the self-attention and feed-forward
    branches; without it (``ModulatedTransformerCrossBlock_woT``) all three are plain
    residuals. ``norm1``/``norm3`` have no parameters; the cross-attention input ``norm2`` has.

    A list of contexts (ReconViaGen: one per view) is cross-attended one by one from the same
    normalised input and averaged.
    """

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False, modulated: bool = True):
        super().__init__()
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(channels, num_heads, qk_rms_norm=qk_rms_norm)
        self.cross_attn = Attention(channels, num_heads, ctx_channels=ctx_channels, qk_rms_norm=qk_rms_norm_cross)
        self.mlp = FeedForward(channels, mlp_ratio)
        if modulated:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels))

    def modulation(self, t_emb: torch.Tensor | None) -> tuple:
        """(B, C) time embedding -> six (B, 1, C) tensors: shift, scale, gate (attention), shift, scale, gate (MLP)."""
        if not hasattr(self, "adaLN_modulation"):
            return (None,) * 6
        return tuple(m.unsqueeze(1) for m in self.adaLN_modulation(t_emb).chunk(6, dim=1))

    def forward(self, x: torch.Tensor, context, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, C); context (B, M, ctx) or a list of them; t_emb (B, C) when modulated."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(t_emb)
        h = self.norm1(x)
        h = self.self_attn(h if shift_a is None else modulate(h, shift_a, scale_a))
        x = x + (h if gate_a is None else h * gate_a)
        h = self.norm2(x)
        contexts = context if isinstance(context, list) else [context]
        for ctx in contexts:
            x = x + self.cross_attn(h, ctx) / len(contexts)
        h = self.norm3(x)
        h = self.mlp(h if shift_m is None else modulate(h, shift_m, scale_m))
        return x + (h if gate_m is None else h * gate_m)


def weight_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the first Linear/Conv/sparse-conv weight inside ``module``: what its inputs must be cast to.

    Not ``next(module.parameters())``: the first parameter is often a norm's weight, which
    :func:`convert_torso_to_fp16` leaves in float32 while the convolutions after it are float16.
    """
    from .sparse import SparseConv3d

    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return sub.weight.dtype
        if isinstance(sub, SparseConv3d):
            return sub.conv.weight.dtype
    raise ValueError(f"{type(module).__name__} has no Linear or convolution")


def convert_torso_to_fp16(module: nn.Module) -> None:
    """Turn every Linear/Conv weight and bias inside ``module`` to float16, as TRELLIS's
    ``convert_module_to_f16`` does; norms, RMS gammas and embeddings stay float32."""
    from .sparse import SparseConv3d

    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv3d, SparseConv3d)):
            sub.half()
