"""Our plain-PyTorch sparse operations against their plainest definitions.

The equivalence harness (benchmarks/reconviagen_equivalence.py) compares whole networks with
the reference on the GPU machine; these pin the building blocks in CI: submanifold convolution
is a dense convolution read back at the occupied voxels, except that a 1³ kernel is spconv's
shortcut (the weight's memory read as (in, out): the mesh decoder's skip connections were
trained with it, and a correct transpose made the whole decoder disagree with the reference,
cosine 0.06); windowed attention is ordinary attention inside each window; subdivision makes
the 8 children of every voxel.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from meshforge_reconviagen.networks.sparse import SparseConv3d, SparseTensor, subdivide, windowed_attention


def random_voxels(n: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(size ** 3, generator=gen)[:n].sort().values
    xyz = torch.stack([idx // size ** 2, (idx // size) % size, idx % size], 1)
    return torch.cat([torch.zeros_like(xyz[:, :1]), xyz], 1).int()


def filled(conv: SparseConv3d, seed: int) -> SparseConv3d:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.randn(conv.conv.weight.shape, generator=gen))
        conv.conv.bias.copy_(torch.randn(conv.conv.bias.shape, generator=gen))
    return conv


def test_submanifold_convolution_is_a_dense_convolution_read_at_the_voxels():
    coords = random_voxels(300, 10, seed=0)
    feats = torch.randn(len(coords), 5, generator=torch.Generator().manual_seed(1))
    conv = filled(SparseConv3d(5, 7, size=3), seed=2)
    ours = conv(SparseTensor(coords, feats)).feats

    c = coords.long()
    grid = torch.zeros(1, 5, 12, 12, 12)
    grid[0, :, c[:, 1] + 1, c[:, 2] + 1, c[:, 3] + 1] = feats.T
    dense = F.conv3d(grid, conv.conv.weight.permute(0, 4, 1, 2, 3), conv.conv.bias)  # (out, in, kx, ky, kz)
    expected = dense[0, :, c[:, 1], c[:, 2], c[:, 3]].T
    assert torch.allclose(ours, expected, atol=1e-5)


def test_a_one_cube_kernel_is_spconvs_product_with_the_weight_memory_read_as_in_by_out():
    coords = random_voxels(50, 6, seed=3)
    feats = torch.randn(len(coords), 4, generator=torch.Generator().manual_seed(4))
    conv = filled(SparseConv3d(4, 6, size=1), seed=5)
    ours = conv(SparseTensor(coords, feats)).feats

    w = conv.conv.weight  # (out, 1, 1, 1, in)
    spconv_way = feats @ w.reshape(4, 6) + conv.conv.bias
    transposed = feats @ w.reshape(6, 4).T + conv.conv.bias
    assert torch.allclose(ours, spconv_way, atol=1e-6)
    assert not torch.allclose(ours, transposed, atol=1e-2)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("max_tokens", [1 << 20, 40])  # one chunk, and many chunks of padded windows
def test_windowed_attention_is_attention_inside_each_window(shift, max_tokens):
    coords = random_voxels(400, 12, seed=6)
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(len(coords), 2, 8, generator=gen) for _ in range(3))
    ours = windowed_attention(SparseTensor(coords, q), q, k, v, window=4, shift=shift, max_tokens=max_tokens)

    window = torch.div(coords[:, 1:].long() + shift, 4, rounding_mode="floor")
    expected = torch.empty_like(q)
    for key in torch.unique(window, dim=0):
        rows = torch.nonzero((window == key).all(1)).squeeze(1)
        h = F.scaled_dot_product_attention(q[rows].transpose(0, 1), k[rows].transpose(0, 1), v[rows].transpose(0, 1))
        expected[rows] = h.transpose(0, 1)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_subdivision_makes_the_eight_children_with_the_parents_features():
    coords = random_voxels(20, 5, seed=8)
    feats = torch.randn(len(coords), 3)
    out = subdivide(SparseTensor(coords, feats))
    assert len(out.coords) == 8 * len(coords)
    parents = out.coords.clone()
    parents[:, 1:] = torch.div(parents[:, 1:], 2, rounding_mode="floor")
    assert torch.equal(parents, coords.repeat_interleave(8, 0))
    assert len(torch.unique(out.coords, dim=0)) == len(out.coords)
    assert torch.equal(out.feats, feats.repeat_interleave(8, 0))
