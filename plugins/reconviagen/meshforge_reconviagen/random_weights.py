"""Random weights in the published layout, for tests, the benchmark and the equivalence harness.

:func:`write` fills every tensor of a manifest with random values of the right shape and
dtype and saves the files a weights directory needs, each marked
``{"meshforge_provenance": "random"}`` so that anything made from them is labelled as such
(:func:`meshforge_reconviagen.weights.provenance`). Scales are chosen so that 24 float16
blocks stay finite: weights ~ N(0, 1/fan_in), gates and modulations 10× smaller, norms near 1.

``closed_box=True`` (tests only) additionally sets two output layers so that random weights
still give a small closed surface: the sparse-structure decoder occupies every voxel whose
27 neighbours are inside the grid, and the mesh decoder's SDF is negative on all its cubes.
Nothing here is, or approximates, a trained model.
"""

from __future__ import annotations

import math
from pathlib import Path

from .manifest import Manifest
from .weights import PROVENANCE_KEY


def _value(name: str, shape: tuple, generator, torch):
    """A random tensor for the parameter called ``name`` (float32)."""
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("pos_emb"):
        return None  # computed, not random: see write()
    if leaf == "gamma" and ("ls1" in name or "ls2" in name):
        return 0.05 + 0.1 * torch.rand(shape, generator=generator)
    if leaf == "gamma":  # RMS norm
        return 1 + 0.05 * torch.randn(shape, generator=generator)
    if len(shape) == 1 and leaf == "weight":  # norms
        return 1 + 0.05 * torch.randn(shape, generator=generator)
    if leaf == "bias":
        return 0.01 * torch.randn(shape, generator=generator)
    if leaf == "weight" and len(shape) >= 2:  # Linear (out, in), Conv3d (out, in, k, k, k), sparse (out, k, k, k, in)
        fan_in = math.prod(shape[1:])
        gain = 0.1 if ("adaLN_modulation" in name or "emb_layers" in name) else 1.0
        return gain * torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    return 0.02 * torch.randn(shape, generator=generator)  # tokens, embeddings


def write(manifest: Manifest, directory: str | Path, seed: int = 0, closed_box: bool = False) -> Path:
    """Write random weights for every file of ``manifest`` into ``directory``; returns it."""
    import torch
    from safetensors.torch import save_file

    from .networks.layers import absolute_position_embedding

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for spec in manifest.files:
        tensors = {}
        for name, (shape, dtypes) in spec.tensors.items():
            value = _value(name, shape, generator, torch)
            if value is None:  # the sparse-structure flow's position embedding buffer
                res = spec.config["resolution"] // spec.config["patch_size"]
                axes = torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij")
                value = absolute_position_embedding(torch.stack(axes, -1).reshape(-1, 3), shape[1])
            tensors[spec.prefix + name] = value.to(getattr(torch, dtypes[0])).contiguous()
        if closed_box:
            _close_the_box(spec, tensors, torch)
        save_file(tensors, str(directory / spec.file), metadata={PROVENANCE_KEY: "random"})
    return directory


def _close_the_box(spec, tensors: dict, torch) -> None:
    """See the module docstring; only the two output layers change."""
    if spec.network == "ss_decoder":
        channels = spec.config["channels"][-1]
        # out_layer = channel LayerNorm (made constant 1), SiLU, 3³ conv: with equal weights the
        # conv counts in-grid neighbours (zero padding), so a threshold between 26 and 27 keeps the interior
        dtype = tensors["out_layer.0.weight"].dtype
        tensors["out_layer.0.weight"] = torch.zeros(channels, dtype=dtype)
        tensors["out_layer.0.bias"] = torch.ones(channels, dtype=dtype)
        unit = torch.nn.functional.silu(torch.tensor(1.0)).item() * channels
        tensors["out_layer.2.weight"] = torch.full_like(tensors["out_layer.2.weight"], 1.0 / unit)
        tensors["out_layer.2.bias"] = torch.full_like(tensors["out_layer.2.bias"], -26.5)
    if spec.network == "mesh_decoder":
        w, b = tensors["out_layer.weight"], tensors["out_layer.bias"]
        w[:8] = 0
        b[:8] = -0.5  # every corner inside
