"""Sparse voxel tensors and their operations, in plain PyTorch (no spconv, xformers or flash-attn).

A :class:`SparseTensor` is a set of occupied voxels: ``coords`` (N, 4) int32 rows
``[batch, x, y, z]`` and ``feats`` (N, C). Operations keep the row order of their input
unless they change the voxel set, so per-voxel data (skip connections) stays aligned.

- :class:`SparseConv3d`: submanifold convolution (output voxels = input voxels). Neighbours
  are found by sorting int64 voxel keys and binary-searching the 27 shifted keys; each
  output row is then one product of its gathered 27 neighbours with the flattened kernel
  (absent neighbours read a zero row). The weight layout is spconv 2's
  (out, kx, ky, kz, in) under ``conv.weight`` so that checkpoints load unchanged; the kernel
  is a cross-correlation over the coordinate columns x, y, z (guide §3.8). A 1³ kernel follows
  spconv's own shortcut, which reads the weight's memory as (in, out) rather than transposing
  it; the published weights were trained that way (found by the equivalence harness on the GPU).
- :func:`downsample` / :func:`upsample`: 2× pooling and its inverse (TRELLIS
  ``SparseDownsample``: the mean *including the zero it starts from*, i.e. sum / (children + 1),
  a quirk kept for equivalence; upsampling copies parents back to the remembered children).
- :func:`subdivide`: every voxel becomes its 8 children at twice the resolution.
- :class:`SparseGroupNorm32`: GroupNorm over all voxels of each batch item.
- :func:`full_attention`, :func:`windowed_attention`: attention per batch item, or inside
  the cubic windows of a (shifted) partition, through ``F.scaled_dot_product_attention``.

Neighbour maps and window partitions are cached on the tensor (``cache``), which every
tensor with the same voxels shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# coordinates are packed into one int64 key: 4 fields of 15 bits each (grids up to 32768)
_BITS = 15


@dataclass
class SparseTensor:
    """Occupied voxels and their features.

    Attributes:
        coords: (N, 4) int32 ``[batch, x, y, z]``, grid units.
        feats: (N, C) features, any float dtype.
        cache: neighbour maps, window partitions and the parent records of :func:`downsample`;
            shared by all tensors over the same voxels.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    cache: dict = field(default_factory=dict)

    def replace(self, feats: torch.Tensor) -> "SparseTensor":
        """The same voxels with other features."""
        return SparseTensor(self.coords, feats, self.cache)

    @property
    def batch_size(self) -> int:
        return int(self.coords[:, 0].max()) + 1 if len(self.coords) else 0

    def batch_rows(self) -> list[slice | torch.Tensor]:
        """Rows of each batch item (slices when the rows are sorted by batch, as ours always are)."""
        if "batch_rows" not in self.cache:
            b = self.coords[:, 0].long()
            counts = torch.bincount(b, minlength=self.batch_size).tolist()
            if bool((b[1:] >= b[:-1]).all()):
                starts = [0]
                for c in counts:
                    starts.append(starts[-1] + c)
                rows = [slice(s, e) for s, e in zip(starts[:-1], starts[1:])]
            else:
                rows = [torch.nonzero(b == i).squeeze(1) for i in range(len(counts))]
            self.cache["batch_rows"] = rows
        return self.cache["batch_rows"]

    def per_batch(self, values: torch.Tensor) -> torch.Tensor:
        """(B, C) per-item values -> (N, C) per-voxel values."""
        return values[self.coords[:, 0].long()]


def voxel_keys(coords: torch.Tensor) -> torch.Tensor:
    """(N, 4) int coordinates (each field in [0, 2^15)) -> (N,) int64 keys, ordered like the rows' lexicographic order."""
    c = coords.long()
    return ((c[:, 0] << (3 * _BITS)) | (c[:, 1] << (2 * _BITS)) | (c[:, 2] << _BITS) | c[:, 3])


def lookup(sorted_keys: torch.Tensor, order: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Row index of each query key in the tensor whose keys sorted are ``sorted_keys`` (``order`` =
    the argsort), or -1 where absent."""
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=len(sorted_keys) - 1)
    found = sorted_keys[pos] == queries
    return torch.where(found, order[pos], torch.full_like(pos, -1))


def neighbour_map(x: SparseTensor, size: int) -> torch.Tensor:
    """(N, size³) long: row of the voxel at each kernel offset (x slowest, z fastest), or N where there is none."""
    name = f"neighbours_{size}"
    if name not in x.cache:
        keys = voxel_keys(x.coords)
        sorted_keys, order = torch.sort(keys)
        r = size // 2
        steps = torch.arange(-r, r + 1, device=keys.device)
        offsets = torch.cartesian_prod(steps, steps, steps)  # (size³, 3), x slowest
        table = torch.full((len(keys), len(offsets)), len(keys), dtype=torch.long, device=keys.device)
        for k, offset in enumerate(offsets):
            shifted = x.coords.long()
            shifted = torch.cat([shifted[:, :1], shifted[:, 1:] + offset], dim=1)
            inside = (shifted[:, 1:] >= 0).all(dim=1)
            found = lookup(sorted_keys, order, voxel_keys(shifted[inside]))
            table[inside, k] = torch.where(found >= 0, found, len(keys))
        x.cache[name] = table
    return x.cache[name]


class _KernelWeights(nn.Module):
    """Holds ``weight`` (out, k, k, k, in) and ``bias`` (out), the layout of spconv's ``SubMConv3d``."""

    def __init__(self, in_channels: int, out_channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, size, size, size, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))


class SparseConv3d(nn.Module):
    """Submanifold 3D convolution with a cubic kernel of odd ``size`` (TRELLIS ``SparseConv3d``)."""

    def __init__(self, in_channels: int, out_channels: int, size: int = 3):
        super().__init__()
        self.size = size
        self.conv = _KernelWeights(in_channels, out_channels, size)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """Each output row is one matrix product of its gathered neighbourhood (k³·in) with the
        flattened kernel; rows go in chunks that bound the gathered copy (256 MB on CUDA, 64 MB on CPU)."""
        w = self.conv.weight.flatten(1)  # (out, k³·in), offsets x-major like neighbour_map
        feats = x.feats.to(w.dtype)
        if self.size == 1:
            # spconv 2.x computes a 1³ convolution as features @ weight.view(in, out): the memory of the
            # (out, 1, 1, 1, in) tensor read as (in, out), not its transpose. The published checkpoints
            # were made and are run with spconv, so their 1³ weights mean that product (mesh decoder skips).
            return x.replace(F.linear(feats, self.conv.weight.reshape(w.shape[1], w.shape[0]).T, self.conv.bias))
        table = neighbour_map(x, self.size)
        padded = torch.cat([feats, feats.new_zeros(1, feats.shape[1])])  # row N: absent neighbours
        out = feats.new_empty(len(feats), w.shape[0])
        max_elements = (1 << 27) if feats.is_cuda else (1 << 24)
        step = max(1, max_elements // w.shape[1])
        for start in range(0, len(feats), step):
            rows = table[start:start + step]
            out[start:start + step] = F.linear(padded[rows].flatten(1), w, self.conv.bias)
        return x.replace(out)


def downsample(x: SparseTensor, factor: int = 2) -> SparseTensor:
    """Pool voxels into their parents at 1/``factor`` resolution (rows sorted by parent key).

    The value is TRELLIS's: ``scatter_reduce(mean)`` onto zeros *with* ``include_self``, which is
    sum / (children + 1). The parents' voxel set is cached on ``x`` (so repeated calls over the
    same voxels, one per sampling step, share neighbour maps) and remembers the children for
    :func:`upsample`.
    """
    name = f"parents_{factor}"
    if name not in x.cache:
        parents = x.coords.clone()
        parents[:, 1:] = torch.div(parents[:, 1:], factor, rounding_mode="floor")
        keys, inverse = torch.unique(voxel_keys(parents), return_inverse=True)
        mask = (1 << _BITS) - 1
        coords = torch.stack([keys >> (3 * _BITS), (keys >> (2 * _BITS)) & mask, (keys >> _BITS) & mask,
                              keys & mask], dim=1).int()
        counts = torch.bincount(inverse, minlength=len(keys))
        x.cache[name] = (coords, inverse, counts, {"children": (x.coords, inverse, x.cache)})
    coords, inverse, counts, cache = x.cache[name]
    sums = x.feats.new_zeros(len(coords), x.feats.shape[1]).index_add_(0, inverse, x.feats)
    return SparseTensor(coords, sums / (counts.to(sums.dtype)[:, None] + 1), cache)


def upsample(x: SparseTensor) -> SparseTensor:
    """Back to the voxels :func:`downsample` came from, each child taking its parent's features."""
    coords, inverse, cache = x.cache["children"]
    return SparseTensor(coords, x.feats[inverse], cache)


def subdivide(x: SparseTensor) -> SparseTensor:
    """Each voxel becomes its 8 children 2·c + {0,1}³ at twice the resolution, with its features."""
    offsets = torch.tensor([[0, i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)],
                           dtype=x.coords.dtype, device=x.coords.device)
    parent = x.coords.clone()
    parent[:, 1:] *= 2
    coords = (parent[:, None] + offsets[None]).reshape(-1, 4)
    return SparseTensor(coords, x.feats.repeat_interleave(8, dim=0))


class SparseGroupNorm32(nn.GroupNorm):
    """GroupNorm (affine, eps 1e-5) over the voxels of each batch item, computed in float32."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = torch.empty_like(x.feats)
        for rows in x.batch_rows():
            f = x.feats[rows].float().T.unsqueeze(0)  # (1, C, N_b)
            out[rows] = super().forward(f)[0].T.to(x.feats.dtype)
        return x.replace(out)


def full_attention(x: SparseTensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Self-attention among the voxels of each batch item: q, k, v (N, H, d) -> (N, H, d)."""
    out = torch.empty_like(q)
    for rows in x.batch_rows():
        h = F.scaled_dot_product_attention(q[rows].transpose(0, 1)[None], k[rows].transpose(0, 1)[None],
                                           v[rows].transpose(0, 1)[None])
        out[rows] = h[0].transpose(0, 1)
    return out


def cross_attention(x: SparseTensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Voxels of batch item b attend to context b: q (N, H, d), k/v (B, M, H, d) -> (N, H, d)."""
    out = torch.empty_like(q)
    for b, rows in enumerate(x.batch_rows()):
        h = F.scaled_dot_product_attention(q[rows].transpose(0, 1)[None], k[b].transpose(0, 1)[None],
                                           v[b].transpose(0, 1)[None])
        out[rows] = h[0].transpose(0, 1)
    return out


@dataclass
class WindowPartition:
    """Voxels grouped by window: ``order`` sorts rows by window, ``lengths`` are the windows' sizes."""

    order: torch.Tensor
    lengths: list


def window_partition(x: SparseTensor, window: int, shift: int) -> WindowPartition:
    """Partition by window id floor((coord + shift) / window) per axis, within each batch item."""
    name = f"windows_{window}_{shift}"
    if name not in x.cache:
        w = x.coords.clone()
        w[:, 1:] = torch.div(w[:, 1:] + shift, window, rounding_mode="floor")
        keys = voxel_keys(w)
        sorted_keys, order = torch.sort(keys, stable=True)
        _, lengths = torch.unique_consecutive(sorted_keys, return_counts=True)
        x.cache[name] = WindowPartition(order, lengths.tolist())
    return x.cache[name]


def windowed_attention(x: SparseTensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                       shift: int, max_tokens: int = 1 << 20) -> torch.Tensor:
    """Self-attention inside each window (TRELLIS "swin" mode): q, k, v (N, H, d) -> (N, H, d).

    Windows are padded to the longest one of a chunk and masked; chunks hold at most
    ``max_tokens`` padded rows, which bounds memory.
    """
    part = window_partition(x, window, shift)
    order, lengths = part.order, part.lengths
    out = torch.empty_like(q)
    start, i = 0, 0
    while i < len(lengths):
        # take windows in order while (count · longest) stays under the budget
        j, longest = i, 0
        while j < len(lengths) and (j - i + 1) * max(longest, lengths[j]) <= max(max_tokens, lengths[i]):
            longest = max(longest, lengths[j])
            j += 1
        sizes = torch.tensor(lengths[i:j], device=q.device)
        count = int(sizes.sum())
        rows = order[start:start + count]
        window_of = torch.repeat_interleave(torch.arange(j - i, device=q.device), sizes)
        first = torch.cumsum(sizes, 0) - sizes
        slot = torch.arange(count, device=q.device) - first[window_of]
        valid = torch.zeros(j - i, longest, dtype=torch.bool, device=q.device)
        valid[window_of, slot] = True

        def padded(t: torch.Tensor) -> torch.Tensor:
            p = t.new_zeros(j - i, longest, *t.shape[1:])
            p[window_of, slot] = t[rows]
            return p.transpose(1, 2)  # (windows, H, longest, d)

        h = F.scaled_dot_product_attention(padded(q), padded(k), padded(v), attn_mask=valid[:, None, None, :])
        out[rows] = h.transpose(1, 2)[window_of, slot]
        start += count
        i = j
    return out
