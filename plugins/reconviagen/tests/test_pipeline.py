"""The whole ReconViaGen job on the CPU: tiny random-weight networks written as safetensors to a
temporary weights directory, loaded through the same manifest check and loader as real weights,
run on a small capture rendered from a shared mesh, exported as the usual bundle.

Random weights make no meaningful shape; what is checked is that every stage runs, that the
result sits in the capture's world frame, and that it is labelled as random wherever it appears.
"""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
import torch

import meshforge
from meshforge.progress import silent
from meshforge.errors import ModelOutOfMemory, ModelUnavailable
from meshforge.manager import PluginManager
from meshforge_reconviagen import manifest as mf
from meshforge_reconviagen import pipeline, random_weights
from meshforge_reconviagen.extraction import drop_inner_shells, extract
from meshforge_reconviagen.frame import Z_UP_TO_Y_UP, register
from meshforge_reconviagen.plugin import LOW_MEMORY_VOXELS, ReconViaGenReconstructor
from meshforge_reconviagen.sampler import SamplerSettings, sample, time_grid

#: small but complete: every stage runs; ~300 voxels keep the 4× subdivided decoder quick on a CPU
FAST = {"ss_steps": 3, "slat_steps": 3, "max_voxels": 300, "target_faces": 3000, "texture_size": 256}


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    weights = random_weights.write(mf.load("tiny"), tmp_path_factory.mktemp("weights"), closed_box=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(mf.WEIGHTS_ENV, str(weights))
        mp.setenv(mf.MANIFEST_ENV, "tiny")
        mp.setenv("MESHFORGE_RECONVIAGEN_ALLOW_CPU", "1")
        yield weights


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory, spot_mesh):
    from meshforge.synthetic import render_capture

    out = tmp_path_factory.mktemp("capture")
    render_capture(spot_mesh, out / "capture.zip", rgb_size=256, depth_size=256)
    return out / "capture.zip"


@pytest.fixture(scope="module")
def job(tiny_env, small_capture, tmp_path_factory):
    out = tmp_path_factory.mktemp("result")
    report = meshforge.run(small_capture, "reconviagen", out, {"reconviagen": FAST}, score=False)
    return report, out


def _glb_json(path) -> dict:
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, 12)
    return json.loads(data[20:20 + length])


def test_the_job_writes_the_usual_bundle(job):
    report, out = job
    outcome = report["models"]["reconviagen"]
    assert outcome["status"] == "succeeded", outcome
    for name in ("mesh.glb", "mesh.obj", "mesh.mtl", "texture.png"):
        assert (out / "reconviagen" / name).stat().st_size > 0
    timings = outcome["timings"]
    for stage in ("features", "conditions", "structure_sampling", "structure_decoding", "latent_sampling",
                  "mesh_decoding", "extraction", "registration", "texturing"):
        assert stage in timings


def test_random_weight_output_is_labelled_everywhere(job):
    report, out = job
    warnings = " ".join(report["models"]["reconviagen"]["warnings"])
    assert "RANDOM WEIGHTS" in warnings and "NOT A RECONSTRUCTION" in warnings and "TEST ARCHITECTURE" in warnings
    extras = _glb_json(out / "reconviagen" / "mesh.glb")["asset"]["extras"]
    assert extras["weights"].startswith("RANDOM") and "NOT A RECONSTRUCTION" in extras["warning"]
    assert "NOT A RECONSTRUCTION" in (out / "reconviagen" / "mesh.obj").read_text()[:2000]
    estimates = report["models"]["reconviagen"]["estimates"]
    assert set(estimates["weights"]["provenance"].values()) == {"random"}


def test_the_result_is_in_the_capture_world_frame(job, small_capture):
    report, out = job
    mesh = meshforge.load_mesh(out / "reconviagen" / "mesh.glb")
    capture = meshforge.load_capture(small_capture)
    target = capture.surface_points(per_view=2000)
    lo, hi = target.min(0), target.max(0)
    mlo, mhi = mesh.vertices.min(0), mesh.vertices.max(0)
    overlap = np.clip(np.minimum(hi, mhi) - np.maximum(lo, mlo), 0, None).prod()
    union = (hi - lo).prod() + (mhi - mlo).prod() - overlap
    assert overlap / union > 0.3, (lo, hi, mlo, mhi)
    size = np.linalg.norm(hi - lo)
    assert np.linalg.norm((lo + hi) / 2 - (mlo + mhi) / 2) < 0.15 * size
    assert 0.5 < np.linalg.norm(mhi - mlo) / size < 1.5
    assert report["models"]["reconviagen"]["estimates"]["frame"]["method"] == "register"


def test_same_seed_same_mesh(tiny_env, small_capture):
    capture = meshforge.load_capture(small_capture)
    rec = ReconViaGenReconstructor()
    options = rec.resolve_options({**FAST, "max_voxels": 60, "ss_steps": 2, "slat_steps": 2, "target_faces": 500,
                                   "texture_size": 64, "frame": "box"})
    runs = [rec.reconstruct(capture, options, silent()) for _ in range(2)]
    assert np.array_equal(runs[0].mesh.faces, runs[1].mesh.faces)
    assert np.allclose(runs[0].mesh.vertices, runs[1].mesh.vertices)


# ── failure paths ────────────────────────────────────────────────────────────────────────

def test_a_job_without_usable_weights_fails_fast(monkeypatch, small_capture, tiny_env, tmp_path):
    broken = tmp_path / "w"
    broken.mkdir()
    for f in tiny_env.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "slat_flow.safetensors").unlink()
    monkeypatch.setenv(mf.WEIGHTS_ENV, str(broken))
    start = time.perf_counter()
    # this process's plugin manager saw the model available; the job re-checks before any work
    report = meshforge.run(small_capture, "reconviagen", tmp_path / "out", score=False)
    assert time.perf_counter() - start < 3.0
    error = report["models"]["reconviagen"]["error"]
    assert error["code"] == "MODEL_UNAVAILABLE" and "slat_flow.safetensors: missing" in error["message"]
    # a fresh process (a new plugin manager) refuses the request before it starts
    with pytest.raises(ModelUnavailable) as exc:
        meshforge.validate_request("reconviagen", None, PluginManager())
    assert "slat_flow.safetensors: missing" in exc.value.message


def test_out_of_memory_retries_once_with_less_then_fails_with_model_oom(monkeypatch, tiny_env):
    """Fault injection: CPU runs cannot exhaust GPU memory, so the pipeline is made to raise the
    error torch raises; what is tested is the plugin's reaction."""
    calls = []

    def exhausted(models, capture, options, progress, window_tokens):
        calls.append((models.offload, options["max_voxels"], window_tokens))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pipeline, "reconstruct", exhausted)
    rec = ReconViaGenReconstructor()
    with pytest.raises(ModelOutOfMemory) as exc:
        rec.reconstruct(None, rec.resolve_options(None), silent())
    assert exc.value.code == "MODEL_OOM"
    assert calls == [(False, 32768, 1 << 20), (True, LOW_MEMORY_VOXELS, 1 << 18)]


# ── parts, exactly ───────────────────────────────────────────────────────────────────────

def test_sampler_follows_the_flow_euler_rules():
    """A velocity model that records its calls checks the time grid, the interval and both guidance rules."""
    s = SamplerSettings(steps=4, cfg_strength=2.0, cfg_interval=(0.5, 1.0), rescale_t=3.0)
    grid = time_grid(4, 3.0)
    expected = [3 * t / (1 + 2 * t) for t in (1, 0.75, 0.5, 0.25, 0)]
    assert np.allclose(grid, expected)
    seen = []

    def model(x, t, cond):
        seen.append((round(t, 6), cond))
        return torch.full_like(x, 1.0 if cond == "c" else 3.0)

    x = sample(model, torch.zeros(2), "c", "n", s)
    # inside the interval (t ≥ 0.5): (1 + w)·1 − w·3 = −3; outside: 1
    velocities = [-3.0 if t >= 0.5 else 1.0 for t in grid[:-1]]
    assert torch.allclose(x, torch.full((2,), -sum(v * (a - b) for v, a, b in zip(velocities, grid, grid[1:]))))
    assert [c for _, c in seen] == [c for t in grid[:-1] for c in (("c", "n") if t >= 0.5 else ("c",))]
    assert len(seen) == 8  # t = 1, 0.9, 0.75, 0.5 are all guided
    gap = SamplerSettings(steps=1, cfg_strength=2.0, cfg_interval=(0.0, 1.0), rescale_t=1.0, guidance="gap")
    assert torch.allclose(sample(model, torch.zeros(1), "c", "n", gap), torch.tensor([1.0]))  # −(2·1 − 1·3)


def test_extraction_of_a_sphere_is_closed_and_faces_outwards():
    res = 32
    cubes = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    corners = cubes[:, None, :] + torch.tensor([[i, j, k] for k in (0, 1) for j in (0, 1) for i in (0, 1)])
    sdf = (corners.float() / res - 0.5).norm(dim=-1) - 0.3 + 1.0 / res  # the decoder's −1/res bias undone
    near = (sdf.abs() < 3.0 / res).any(dim=1)
    feats = torch.zeros(int(near.sum()), 101)
    feats[:, :8] = sdf[near]
    mesh = extract(cubes[near], feats, res)
    v, f = mesh.vertices.numpy().astype(np.float64), mesh.faces.numpy()
    f, info = drop_inner_shells(v, f)
    radius = np.linalg.norm(v[np.unique(f)], axis=1)
    assert abs(radius.mean() - 0.3) < 0.01 and radius.std() < 0.01
    tri = v[f]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert abs(volume - 4 / 3 * np.pi * 0.3 ** 3) < 0.05 * volume
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # closed, every edge shared by two faces


def test_registration_recovers_a_similarity_transform():
    rng = np.random.default_rng(1)
    # an asymmetric object in the generator's frame (z up)
    pts = rng.uniform(-0.5, 0.5, (4000, 3)) * np.array([0.9, 0.4, 0.2]) + np.array([0.0, 0.0, 0.1])
    pts = np.concatenate([pts, rng.uniform(-0.05, 0.05, (800, 3)) + np.array([0.4, 0.15, 0.2])])
    angle = np.deg2rad(90)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    world = 2.5 * pts @ (turn @ Z_UP_TO_Y_UP).T + np.array([0.3, -0.2, 0.1])
    fit = register(pts, world)
    assert fit.residual < 0.01
    assert np.allclose(fit.apply(pts), world, atol=0.02)
    assert abs(fit.scale - 2.5) < 0.05
