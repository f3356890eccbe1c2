"""The float16 path of the CUDA runs, exercised on the CPU.

On CUDA :func:`pipeline.load_models` turns the Linear/Conv weights of the networks' torsos to
float16 (``use_fp16``, as TRELLIS's ``convert_module_to_f16``) while norms, embeddings and the
input/output layers stay float32. A tensor that crosses one of those boundaries in the wrong
dtype makes the next convolution or matrix product fail ("Input type (float) and bias type
(c10::Half) should be the same", the full-size GPU bench's failure in the sparse-structure
decoder). The CPU runs used to be float32 throughout, so that class of bug reached the GPU
first. Here the same conversion is applied on the CPU (``load_models(..., fp16=True)``):
torch's CPU kernels in 2.x take float16 for every op these networks use (convolutions,
matrix products, SDPA, layer/group norms), so no bfloat16 stand-in is needed.

Checked: the conversion (which tensors are float16), every network on its own against its
float32 twin (same weights, same inputs; with ``use_fp16`` forced on for every network that
has the flag, ss_condition included, whose published value is unknown offline), and the whole
job through ``meshforge.run`` and the plugin (``MESHFORGE_RECONVIAGEN_FP16=1``) with the tiny
random-weight networks.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import meshforge
from meshforge.manager import PluginManager
from meshforge_reconviagen import manifest as mf
from meshforge_reconviagen import pipeline, random_weights
from meshforge_reconviagen.networks.sparse import SparseTensor
from meshforge_reconviagen.networks.vit import imagenet_normalise
from meshforge_reconviagen.plugin import FP16_ENV, ReconViaGenReconstructor, fp16_setting

CPU = torch.device("cpu")
#: every network stage runs; registration (numpy, no float16) is replaced by the quicker box fit
FAST = {"ss_steps": 3, "slat_steps": 3, "max_voxels": 300, "target_faces": 3000, "texture_size": 256, "frame": "box"}


def _fp16_everywhere(manifest: mf.Manifest) -> mf.Manifest:
    """``manifest`` with ``use_fp16`` on for every network that has the flag."""
    files = tuple(dataclasses.replace(f, config={**f.config, "use_fp16": True}) if "use_fp16" in f.config else f
                  for f in manifest.files)
    return dataclasses.replace(manifest, files=files)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return random_weights.write(mf.load("tiny"), tmp_path_factory.mktemp("weights"), closed_box=True)


@pytest.fixture(scope="module")
def open_weights(tmp_path_factory):
    """Without ``closed_box``, whose constant output norm would hide the decoder's torso from the comparison."""
    return random_weights.write(mf.load("tiny"), tmp_path_factory.mktemp("open-weights"), seed=1)


def _dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {t.dtype for t in module.state_dict().values()}


def test_fp16_models_convert_the_torsos_and_nothing_else(tiny_weights):
    manifest = mf.load("tiny")
    models = pipeline.load_models(manifest, tiny_weights, CPU, fp16=True)
    assert models.fp16
    for spec in manifest.files:
        net = models.nets[spec.network]
        if spec.config.get("use_fp16"):
            assert torch.float16 in _dtypes(net), spec.network
            if spec.network != "slat_condition":  # its only parameters are the converted linear blocks
                assert torch.float32 in _dtypes(net), f"{spec.network}: norms and outer layers stay float32"
        else:
            assert _dtypes(net) == {torch.float32}, spec.network
    # the boundaries where the torso starts: float32 outer layers, float32 norm first in the float16 torso
    dec = models.nets["ss_decoder"]
    assert dec.input_layer.weight.dtype == dec.out_layer[2].weight.dtype == torch.float32
    assert dec.middle_block[0].norm1.weight.dtype == torch.float32
    assert dec.middle_block[0].conv1.weight.dtype == torch.float16 == dec.torso_dtype
    # the default stays as before: float32 on the CPU
    assert not pipeline.load_models(manifest, tiny_weights, CPU).fp16


def _close(half: torch.Tensor, full: torch.Tensor, name: str, tolerance: float = 2e-2) -> None:
    assert half.shape == full.shape, name
    assert torch.isfinite(half).all(), name
    error = (half.float() - full.float()).norm() / full.float().norm().clamp_min(1e-12)
    assert error < tolerance, f"{name}: float16 differs from float32 by {float(error):.3g} (relative)"


@torch.inference_mode()
def test_every_network_runs_in_float16_and_agrees_with_float32(open_weights):
    manifest = _fp16_everywhere(mf.load("tiny"))
    half = pipeline.load_models(manifest, open_weights, CPU, fp16=True).nets
    full = pipeline.load_models(manifest, open_weights, CPU, fp16=False).nets
    cfg = {f.network: f.config for f in manifest.files}
    g = torch.Generator().manual_seed(0)

    # conditions: the float32 features feed both (DINOv2 and VGGT have no float16 torso)
    size = cfg["dinov2"]["img_size"]
    images = torch.rand(3, 3, size, size, generator=g)
    layers = sorted(set(cfg["ss_condition"]["intermediate_layer_idx"]) | set(cfg["slat_condition"]["intermediate_layer_idx"]))
    aggregated = full["vggt_aggregator"](images, keep=layers)
    for depth, value in half["vggt_aggregator"](images, keep=layers).items():
        _close(value, aggregated[depth], f"vggt depth {depth}", 1e-6)
    prenorm, _ = full["dinov2"](imagenet_normalise(images))
    _close(half["dinov2"](imagenet_normalise(images))[0], prenorm, "dinov2", 1e-6)
    image_cond = F.layer_norm(prenorm, prenorm.shape[-1:])[None]
    patches = image_cond[:, :, cfg["ss_condition"]["patch_start_idx"]:]
    ss_cond = full["ss_condition"](aggregated, patches)
    ss_cond_half = half["ss_condition"](aggregated, patches)
    assert ss_cond_half.dtype == torch.float16
    _close(ss_cond_half, ss_cond, "ss_condition")
    slat_cond = full["slat_condition"](aggregated, image_cond)
    slat_cond_half = half["slat_condition"](aggregated, image_cond)
    for i, (h, f) in enumerate(zip(slat_cond_half, slat_cond, strict=True)):
        _close(h, f, f"slat_condition view {i}")

    # sparse-structure flow and decoder: float32 in, float32 out
    res = cfg["ss_flow"]["resolution"]
    x = torch.randn(1, cfg["ss_flow"]["in_channels"], res, res, res, generator=g)
    t = torch.full((1,), 700.0)
    v = full["ss_flow"](x, t, ss_cond)
    for cond in (ss_cond_half, ss_cond):  # a float16 or float32 condition, as either ss_condition gives
        v_half = half["ss_flow"](x, t, cond)
        assert v_half.dtype == torch.float32
        _close(v_half, v, "ss_flow")
    z = torch.randn(1, cfg["ss_decoder"]["latent_channels"], res, res, res, generator=g)
    logits_half = half["ss_decoder"](z)
    assert logits_half.dtype == torch.float32
    _close(logits_half, full["ss_decoder"](z), "ss_decoder")

    # structured-latent flow and mesh decoder on a 4³ block of voxels
    r = torch.arange(6, 10)
    coords = torch.cartesian_prod(r, r, r)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=coords.dtype), coords], dim=1).int()
    feats = torch.randn(len(coords), cfg["slat_flow"]["in_channels"], generator=g)
    out = full["slat_flow"](SparseTensor(coords, feats), t, slat_cond)
    for cond in (slat_cond_half, slat_cond):
        out_half = half["slat_flow"](SparseTensor(coords, feats), t, cond)
        assert out_half.feats.dtype == torch.float32
        _close(out_half.feats, out.feats, "slat_flow")
    cubes = full["mesh_decoder"](SparseTensor(coords, feats))
    cubes_half = half["mesh_decoder"](SparseTensor(coords, feats))
    assert cubes_half.feats.dtype == torch.float32
    assert torch.equal(cubes_half.coords, cubes.coords)
    _close(cubes_half.feats, cubes.feats, "mesh_decoder")


def test_the_whole_job_runs_with_the_cuda_float16_conversion(monkeypatch, tiny_weights, small_capture_fp16, tmp_path):
    """Through meshforge.run and the plugin, as the bench runs it; MESHFORGE_RECONVIAGEN_FP16=1 on the CPU."""
    monkeypatch.setenv(mf.WEIGHTS_ENV, str(tiny_weights))
    monkeypatch.setenv(mf.MANIFEST_ENV, "tiny")
    monkeypatch.setenv("MESHFORGE_RECONVIAGEN_ALLOW_CPU", "1")
    monkeypatch.setenv(FP16_ENV, "1")
    report = meshforge.run(small_capture_fp16, "reconviagen", tmp_path, {"reconviagen": FAST}, score=False,
                           manager=PluginManager())
    outcome = report["models"]["reconviagen"]
    assert outcome["status"] == "succeeded", outcome.get("error")
    assert outcome["estimates"]["weights"]["fp16"] is True
    assert outcome["estimates"]["voxels"] == FAST["max_voxels"]
    assert outcome["estimates"]["texture"]["faces"] > 0


def test_an_unknown_fp16_setting_makes_the_model_unavailable(monkeypatch, tiny_weights):
    monkeypatch.setenv(mf.WEIGHTS_ENV, str(tiny_weights))
    monkeypatch.setenv(mf.MANIFEST_ENV, "tiny")
    monkeypatch.setenv("MESHFORGE_RECONVIAGEN_ALLOW_CPU", "1")
    for value, expected in (("", None), ("auto", None), ("1", True), ("0", False)):
        monkeypatch.setenv(FP16_ENV, value)
        assert fp16_setting() is expected
        assert ReconViaGenReconstructor().availability().available
    monkeypatch.setenv(FP16_ENV, "half")
    availability = ReconViaGenReconstructor().availability()
    assert not availability.available and FP16_ENV in availability.reason


@pytest.fixture(scope="module")
def small_capture_fp16(tmp_path_factory, spot_mesh):
    from meshforge.synthetic import render_capture

    out = tmp_path_factory.mktemp("capture")
    render_capture(spot_mesh, out / "capture.zip", rgb_size=256, depth_size=256)
    return out / "capture.zip"
