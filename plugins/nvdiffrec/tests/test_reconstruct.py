"""nvdiffrec end to end on the CPU test path (PyTorch backend), on a tiny capture of a shared mesh.

Everything here runs the real code: fusion's depth hull initialises the DMTet grid, both passes
optimise, meshforge's pipeline writes the bundle. Failures are provoked, not simulated: an
address-space limit makes the real allocations fail (MODEL_OOM after one retry), learning rates
at their allowed maxima make the optimisation diverge (MODEL_DID_NOT_CONVERGE), a CancelFlag set
from another thread stops it, a 1-second time budget cuts it short.

Sizes are tiny (256² views, a 24-cell grid, 64² renders): the quality thresholds below were
measured at these sizes on the CPU and guard with a margin; they are not the GPU targets of
issue 5 (those are in benchmarks/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import meshforge
from meshforge.evaluation import geometry_scores, heldout_scores
from meshforge.manager import PluginManager
from meshforge.mesh import load_mesh, load_parts
from meshforge.pipeline import run
from meshforge.progress import CancelFlag, Progress

#: tiny but complete: every stage runs, in seconds on a CPU; the PyTorch backend named, so that on a
#: GPU machine too these tests take the CPU test path they are written for ("auto" picks nvdiffrast there)
TINY = {"iterations_pass1": 30, "iterations_pass2": 20, "iterations_vertices": 20, "grid_resolution": 24,
        "train_res": 64, "render_res": 128, "texture_size": 256, "target_faces": 5_000, "colour_grid": "16,32",
        "time_budget_s": 600, "backend": "torch"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while these tests run: on a small, shared CI machine OpenMP's spinning
    threads made an iteration 3-4× slower (536 vs 151 ms measured on 2 loaded cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def manager():
    """A plugin manager that sees nvdiffrec as available on this CPU (the test path)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MESHFORGE_NVDIFFREC_ALLOW_CPU", "1")
        mgr = PluginManager()
        assert mgr.reconstructor("nvdiffrec")  # available (raises ModelUnavailable otherwise)
        yield mgr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, spot_mesh):
    """spot at the smallest accepted size: 256² views, 256² metric depth, 4 held-out orbit views."""
    from meshforge.synthetic import render_capture

    out = tmp_path_factory.mktemp("nvdiffrec_tiny")
    return render_capture(spot_mesh, out / "capture.zip", rgb_size=256, depth_size=256, heldout=4,
                          heldout_dir=out / "heldout", heldout_size=256, ground_truth=out / "gt.glb")


def _gt_bounds(parts) -> np.ndarray:
    return np.stack([np.min([p.bounds[0] for p in parts], 0), np.max([p.bounds[1] for p in parts], 0)])


def test_end_to_end_through_the_pipeline(tiny, manager, tmp_path):
    out = tmp_path / "job"
    start = time.perf_counter()
    report = run(tiny.capture, "nvdiffrec", out, {"nvdiffrec": TINY}, manager=manager)
    elapsed = time.perf_counter() - start
    outcome = report["models"]["nvdiffrec"]
    assert report["status"] == "succeeded" and outcome["status"] == "succeeded", outcome["error"]

    # run statistics: the torch backend on the CPU, the grid built from fusion's hull, every iteration done
    est = outcome["estimates"]
    assert est["backend"] == "torch" and est["device"] == "cpu" and est["oom_retries"] == []
    p1 = est["pass1"]
    assert p1["iterations"] == TINY["iterations_pass1"] and p1["tets"] > 1000 and p1["cell"] > 0
    assert p1["silhouette_iou"] > 0.9, p1
    p2 = est["pass2"]
    assert p2["layout"] == "views" and p2["refine"]["refined_vertices"] > 0
    assert p2["vertices"]["iterations"] == TINY["iterations_vertices"] and 0 < p2["vertices"]["mean_move_cells"] < 1
    assert outcome["timings"]["pass1"] > 0 and outcome["timings"]["pass2"] > 0
    assert not any("time budget" in w for w in outcome["warnings"])

    # the loss curve: recorded every 10 iterations in both passes (pass 2: vertices, then texture), finite, going down
    curve = outcome["diagnostics"]["loss_curve"]
    one = [c for c in curve if c["pass"] == 1]
    moves = [c for c in curve if c["pass"] == 2 and c["stage"] == "vertices"]
    two = [c for c in curve if c["pass"] == 2 and c["stage"] == "texture"]
    assert [c["it"] for c in one] == [0, 10, 20, 29] and [c["it"] for c in two] == [0, 10, 19]
    assert [c["it"] for c in moves] == [0, 10, 19]
    assert all(np.isfinite(c["loss"]) for c in curve)
    assert one[-1]["loss"] < one[0]["loss"] and two[-1]["loss"] < two[0]["loss"], curve
    assert moves[-1]["depth"] < moves[0]["depth"], moves
    assert one[-1]["colour"] + one[-1]["mask"] < one[0]["colour"] + one[0]["mask"], curve

    # the published bundle: GLB, OBJ+MTL+PNG, quality and previews, nothing half-written
    model = out / "nvdiffrec"
    for name in ("mesh.glb", "mesh.obj", "mesh.mtl", "texture.png", "quality.json"):
        assert (model / name).stat().st_size > 0, name
        assert f"nvdiffrec/{name}" in outcome["files"]
    assert not list(out.glob(".*"))
    assert json.loads((out / "report.json").read_text())["models"]["nvdiffrec"]["status"] == "succeeded"

    # read back from the files: textured, in the capture's world frame (where the ground truth is)
    glb = load_mesh(model / "mesh.glb")
    obj = load_mesh(model / "mesh.obj")
    assert glb.is_textured and obj.is_textured and len(glb.faces) <= TINY["target_faces"] * 1.01
    assert np.allclose(np.sort(glb.vertices, axis=0), np.sort(obj.vertices, axis=0), atol=1e-5)
    assert glb.signed_volume() > 0
    gt = load_parts(tiny.ground_truth)
    assert np.abs(glb.bounds - _gt_bounds(gt)).max() < 0.03  # within a grid cell (0.042 here)
    geo = geometry_scores(glb, gt, samples=50_000)
    assert geo["fscore@0.02"] > 0.9 and geo["chamfer_l1"] < 0.01, geo
    # held-out views (not inputs): measured 26.7 dB / 0.960 at this size (fusion: ~30 dB; tiny renders)
    held = heldout_scores(glb, tiny.heldout_dir)
    assert held["psnr"] > 23.0 and held["ssim"] > 0.93, held
    print(f"end to end {elapsed:.1f} s, pass 1 {p1['ms_per_iteration']} ms/iteration, geometry {geo}, held-out "
          f"PSNR {held['psnr']:.2f} SSIM {held['ssim']:.4f}")


def test_out_of_memory_retries_once_at_half_resolution_then_fails_with_model_oom(tiny, tmp_path):
    """In a child process whose address space is capped at ~1 GiB above what it already maps, a
    4096² pass-1 render cannot be allocated, nor the 2048² retry: the real allocator fails."""
    script = textwrap.dedent("""
        import json, resource, sys
        import torch
        from meshforge.pipeline import run

        torch.set_num_threads(1)  # as in the parent (see one_torch_thread)

        capture, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        # warm up at a tiny size first: imports, numba kernels and thread pools are in place
        # before the limit, so only the model's own allocations can hit it
        warm = {**options, "iterations_pass1": 1, "iterations_pass2": 1, "train_res": 32, "render_res": 32}
        assert run(capture, "nvdiffrec", out + "-warm", {"nvdiffrec": warm}, score=False)["status"] == "succeeded"
        mapped = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30), resource.RLIM_INFINITY))
        big = {**options, "train_res": 4096, "render_res": 4096, "iterations_pass1": 3, "iterations_pass2": 1}
        run(capture, "nvdiffrec", out, {"nvdiffrec": big}, score=False)
    """)
    out = tmp_path / "oom"
    env = {**os.environ, "MESHFORGE_NVDIFFREC_ALLOW_CPU": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(tiny.capture), str(out), json.dumps(TINY)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    error = report["models"]["nvdiffrec"]["error"]
    assert report["status"] == "failed" and error["code"] == "MODEL_OOM", error
    # exactly one retry, at half the render sizes, and both attempts really failed to allocate
    attempts = error["details"]["attempts"]
    assert [(a["train_res"], a["render_res"]) for a in attempts] == [(4096, 4096), (2048, 2048)], attempts
    assert all("memory" in a["error"] for a in attempts), attempts
    # actionable: what failed and what to lower
    assert "also after retrying at half resolution" in error["message"]
    assert "lower train_res" in error["message"] and "more memory" in error["message"]
    assert not (out / "nvdiffrec").exists() and not list(out.glob(".*"))  # nothing half-written
    print(f"MODEL_OOM: {error['message']}; attempts {attempts}")


def test_divergence_fails_with_the_loss_curve(tiny, manager, tmp_path):
    """Learning rates at their allowed maxima fling the SDF to ±1e6: the loss explodes (finite)."""
    options = {**TINY, "lr_geometry": 1e6, "lr_texture": 1e6, "train_res": 32}
    report = run(tiny.capture, "nvdiffrec", tmp_path / "div", {"nvdiffrec": options}, manager=manager, score=False)
    error = report["models"]["nvdiffrec"]["error"]
    assert report["status"] == "failed" and error["code"] == "MODEL_DID_NOT_CONVERGE", error
    assert "lower lr_geometry" in error["message"]
    curve = error["details"]["loss_curve"]
    assert curve[0]["it"] == 0 and len(curve) >= 2
    assert curve[-1]["loss"] > 100 * curve[0]["loss"], curve
    assert not (tmp_path / "div" / "nvdiffrec").exists()


def test_cancel_from_another_thread_stops_at_the_next_check(tiny, manager, tmp_path):
    flag = CancelFlag()
    reached = threading.Event()
    stages, after = [], []

    def on_update(event):
        stages.append(event.stage)
        if event.stage.startswith("pass 1"):
            if flag():
                after.append(event)
            elif stages.count(event.stage) >= 2:  # iteration 10 of pass 1
                reached.set()

    cancelled_at = []

    def canceller():
        reached.wait(120)
        cancelled_at.append(time.perf_counter())
        flag.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    out = tmp_path / "job"
    report = run(tiny.capture, "nvdiffrec", out, {"nvdiffrec": {**TINY, "iterations_pass1": 5000}},
                 progress=Progress(on_update, flag), manager=manager)
    returned = time.perf_counter()
    thread.join()
    outcome = report["models"]["nvdiffrec"]
    assert report["status"] == "cancelled" and outcome["status"] == "cancelled"
    assert outcome["error"]["code"] == "CANCELLED"
    assert len(after) <= 1  # stopped at the next check (every 10 iterations), not later
    assert not any(s.startswith("pass 2") for s in stages)
    assert returned - cancelled_at[0] < 30, returned - cancelled_at[0]
    print(f"cancelled {returned - cancelled_at[0]:.2f} s after the flag was set")
    # nothing half-written: no model folder, no partial folder, only the report
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]


def test_time_budget_keeps_the_result_so_far_with_a_warning(tiny, manager):
    capture = meshforge.load_capture(tiny.capture)
    options = {**TINY, "iterations_pass1": 5000, "iterations_pass2": 5000, "time_budget_s": 1}
    start = time.perf_counter()
    result = meshforge.reconstruct(capture, "nvdiffrec", options, manager=manager)
    elapsed = time.perf_counter() - start
    assert any("time budget reached in pass 1" in w for w in result.warnings), result.warnings
    assert any("time budget reached in pass 2" in w for w in result.warnings), result.warnings
    assert result.estimates["pass1"]["iterations"] < 100
    assert elapsed < 60, elapsed  # 5000 + 5000 iterations would take many minutes here
    print(f"time budget 1 s: returned after {elapsed:.1f} s, {result.warnings}")
    # the result so far is the fusion-initialised surface with the views' texture: usable
    mesh = result.mesh
    assert mesh.is_textured and result.estimates["pass1"]["silhouette_iou"] > 0.9
    geo = geometry_scores(mesh, load_parts(tiny.ground_truth), samples=50_000)
    assert geo["fscore@0.02"] > 0.9, geo


def test_xatlas_layout_unwraps_bakes_and_optimises_the_texture(tiny, manager, tmp_path):
    """The paper's pass-2 layout: an xatlas unwrap (child process) baked from the views, then optimised."""
    options = {**TINY, "uv_layout": "xatlas", "unwrap_max_faces": 5_000}
    report = run(tiny.capture, "nvdiffrec", tmp_path / "job", {"nvdiffrec": options}, manager=manager, score=False)
    outcome = report["models"]["nvdiffrec"]
    assert outcome["status"] == "succeeded", outcome["error"]
    p2 = outcome["estimates"]["pass2"]
    assert p2["layout"] == "xatlas" and not any("xatlas failed" in w for w in outcome["warnings"]), outcome
    two = [c for c in outcome["diagnostics"]["loss_curve"] if c["pass"] == 2]
    assert two[-1]["loss"] < two[0]["loss"], two
    glb = load_mesh(tmp_path / "job" / "nvdiffrec" / "mesh.glb")
    assert glb.is_textured and glb.uv.min() >= 0 and glb.uv.max() <= 1
    held = heldout_scores(glb, tiny.heldout_dir)
    assert held["psnr"] > 22.0 and held["ssim"] > 0.92, held
    print(f"xatlas layout: {p2}, held-out PSNR {held['psnr']:.2f} SSIM {held['ssim']:.4f}")


def test_vertex_pass_pulls_an_inflated_surface_back_onto_the_depth(tiny):
    """Pass 2's vertex fit on its own: fusion's surface blown up by half a cell along its normals
    comes back to the ground truth (the depth loss, through the PyTorch backend's gradients)."""
    import torch

    from meshforge.mesh import TexturedMesh
    from meshforge_nvdiffrec.backends import make_backend
    from meshforge_nvdiffrec.optimize import Run, _near_far, fit_vertices, prepare_views

    capture = meshforge.load_capture(tiny.capture)
    mesh = meshforge.reconstruct(capture, "fusion", {"resolution": 64, "target_faces": 4000}).mesh
    vertices, inverse = np.unique(mesh.vertices, axis=0, return_inverse=True)  # weld the atlas's seams
    faces = inverse.reshape(-1)[mesh.faces].astype(np.int32)
    extent = float(np.ptp(vertices, axis=0).max())
    cell = extent / 32
    normals = np.zeros_like(vertices)
    tri = vertices[faces]
    np.add.at(normals, faces.ravel(), np.repeat(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), 3, axis=0))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
    inflated = (vertices + 0.5 * cell * normals).astype(np.float32)

    options = {"iterations_vertices": 100, "lr_vertices": 0.05, "mask_weight": 2.0, "depth_weight": 1.0,
               "laplacian_weight_vertices": 0.1}
    device = torch.device("cpu")
    views = prepare_views(capture, 128, device, *_near_far(capture, extent))
    run = Run()
    fitted = fit_vertices(inflated, faces, cell, capture, views, options, device, make_backend("torch", device),
                          Progress(), run, deadline=time.monotonic() + 600)

    gt = load_parts(tiny.ground_truth)
    before = geometry_scores(TexturedMesh(inflated, faces), gt, samples=50_000)["chamfer_l1"]
    after = geometry_scores(TexturedMesh(fitted, faces), gt, samples=50_000)["chamfer_l1"]
    reference = geometry_scores(TexturedMesh(vertices, faces), gt, samples=50_000)["chamfer_l1"]
    print(f"chamfer: inflated {before:.5f}, fitted {after:.5f}, fusion {reference:.5f}; {run.stats['pass2']}")
    assert after < 0.6 * before and after < 1.5 * reference, (before, after, reference)
    stats = run.stats["pass2"]["vertices"]
    assert stats["iterations"] == 100 and 0.2 < stats["mean_move_cells"] < 1.0, stats
    moves = [c for c in run.curve if c.get("stage") == "vertices"]
    assert moves[-1]["depth"] < 0.5 * moves[0]["depth"], moves


def test_vertex_pass_auto_moves_vertices_on_metric_depth_only(tiny, sneaker_dir):
    """The real sample's 8-bit relative depth is scaled by meshforge's calibration: not precise or
    registered enough for sub-cell moves, so "auto" skips the vertex pass there."""
    from meshforge_nvdiffrec.optimize import vertex_pass_wanted

    metric, sample = meshforge.load_capture(tiny.capture), meshforge.load_capture(sneaker_dir)
    assert sample.calibration.method in ("full", "depth_scale")
    assert vertex_pass_wanted(metric, {"vertex_pass": "auto"})
    assert not vertex_pass_wanted(sample, {"vertex_pass": "auto"})
    assert vertex_pass_wanted(sample, {"vertex_pass": "on"}) and not vertex_pass_wanted(metric, {"vertex_pass": "off"})


def test_an_unknown_vertex_pass_is_refused_before_anything_runs(tiny, manager, tmp_path):
    from meshforge.errors import InvalidOptions

    out = tmp_path / "job"
    with pytest.raises(InvalidOptions) as refused:
        run(tiny.capture, "nvdiffrec", out, {"nvdiffrec": {"vertex_pass": "sometimes"}}, manager=manager)
    assert refused.value.code == "INVALID_OPTIONS"
    assert refused.value.details["where"] == "options.nvdiffrec.vertex_pass"
    assert "'auto', 'on', 'off'" in refused.value.details["reason"]
    assert not out.exists()


def test_pass2_weighs_each_pixel_by_how_squarely_its_view_sees_the_surface(tiny):
    """The texture stage's per-pixel weight is cos^p of the angle between the visible face and the
    ray to the camera: checked against meshforge's own CPU renderer (its face normals and pixel
    rays), zero where no face is drawn, and uniform for p = 0."""
    import torch

    from meshforge.render import render
    from meshforge_nvdiffrec.backends import make_backend
    from meshforge_nvdiffrec.gbuffer import GBuffer
    from meshforge_nvdiffrec.optimize import _clip, _facing, _near_far, prepare_views

    capture = meshforge.load_capture(tiny.capture)
    mesh = meshforge.reconstruct(capture, "fusion", {"resolution": 64, "target_faces": 4000}).mesh
    device, res = torch.device("cpu"), 128
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    views = prepare_views(capture, res, device, *_near_far(capture, extent))
    backend = make_backend("torch", device)
    verts = torch.as_tensor(mesh.vertices)
    faces = torch.as_tensor(mesh.faces, dtype=torch.int32)
    gbuffer = GBuffer(backend, verts, faces, torch.zeros(len(verts), 2), _clip(verts, views), res)

    assert torch.equal(_facing(gbuffer, views.eyes, 0.0), torch.ones(len(gbuffer), 1))
    weight = gbuffer.image(_facing(gbuffer, views.eyes, 2.0))[..., 0].numpy()
    assert weight.shape == (len(capture.views), res, res) and 0.0 <= weight.min() and weight.max() <= 1.0
    for k, view in enumerate(capture.views.values()):
        cam = view.camera.scaled(res)
        drawn = render(mesh, cam, shading="lit")
        covered = drawn.mask > 0.5
        rays = cam.pixel_grid_rays()
        rays /= np.linalg.norm(rays, axis=2, keepdims=True)
        expected = np.einsum("hwc,hwc->hw", drawn.normal, -rays).clip(0) ** 2
        assert (weight[k][~covered] == 0).mean() > 0.99, view.name  # edges may differ by a pixel
        close = np.abs(weight[k] - expected)[covered]
        assert np.median(close) < 0.02 and (close < 0.1).mean() > 0.95, (view.name, np.median(close))
        grazing, frontal = expected[covered] < 0.1, expected[covered] > 0.8
        assert weight[k][covered][grazing].mean() < 0.2 < 0.8 < weight[k][covered][frontal].mean(), view.name


def test_pbr_appearance_learns_material_and_light_and_exports_them(tiny, manager, tmp_path):
    """appearance "pbr" through the pipeline: base colour, roughness, metallic and specular maps
    under a learned split-sum light. The tiny capture is rendered unlit (albedo), so the light
    the fit finds must stay close to uniform white and the material close to a rough dielectric
    with little specular whose base colour is the albedo; the light is written as a Radiance
    file beside the mesh."""
    out = tmp_path / "job"
    options = {**TINY, "appearance": "pbr", "light_resolution": 8, "iterations_joint": 10}
    report = run(tiny.capture, "nvdiffrec", out, {"nvdiffrec": options}, manager=manager)
    outcome = report["models"]["nvdiffrec"]
    assert outcome["status"] == "succeeded", outcome["error"]
    model = out / "nvdiffrec"
    for name in ("mesh.glb", "mesh.obj", "texture.png", "roughness.png", "metallic.png", "specular.png",
                 "environment.hdr"):
        assert f"nvdiffrec/{name}" in outcome["files"] and (model / name).stat().st_size > 0, name

    appearance = outcome["estimates"]["pass2"]["appearance"]
    light = np.asarray(appearance["light_mean_rgb"])
    assert appearance["mode"] == "pbr" and 0.7 < light.mean() < 1.3 and np.ptp(light) < 0.1, appearance
    assert appearance["metallic_mean"] < 0.1 and appearance["roughness_mean"] > 0.5, appearance
    assert appearance["specular_mean"] < 0.2, appearance
    assert outcome["estimates"]["pass2"]["joint"]["skipped"].startswith("appearance pbr"), outcome["estimates"]
    texture_curve = [c for c in outcome["diagnostics"]["loss_curve"] if c.get("stage") == "texture"]
    assert texture_curve[-1]["loss"] < texture_curve[0]["loss"], texture_curve
    # the fit under the learned light, and the base colour alone on views the model did not see
    assert outcome["estimates"]["pass2"]["texture_fit_psnr"] > 25.0, outcome["estimates"]["pass2"]
    glb = load_mesh(model / "mesh.glb")
    held = heldout_scores(glb, tiny.heldout_dir)
    assert held["psnr"] > 23.0, held  # as the baked appearance's threshold in the end-to-end test
    header = (model / "environment.hdr").read_bytes()[:64]
    assert header.startswith(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 64 +X 128\n")
    print(f"pbr: {appearance}, fit {outcome['estimates']['pass2']['texture_fit_psnr']} dB, "
          f"held-out (base colour) {held['psnr']:.2f} dB")


def test_an_unsupported_light_resolution_is_refused_before_anything_runs(tiny, manager, tmp_path):
    from meshforge.errors import InvalidOptions

    out = tmp_path / "job"
    with pytest.raises(InvalidOptions) as refused:
        run(tiny.capture, "nvdiffrec", out, {"nvdiffrec": {"appearance": "pbr", "light_resolution": 12}},
            manager=manager)
    assert refused.value.details["where"] == "options.nvdiffrec.light_resolution"
    assert "not one of 4, 8, 16, 32" in refused.value.details["reason"] and not out.exists()


def test_pbr_light_and_material_are_learned_through_the_renderer(tiny):
    """Gradients reach the environment light through rasterisation, the split sum and the sRGB
    curve: views of spot rendered under a sky light (bright above, dim below; its mean is held
    at 1) are fitted by a light that starts uniform, with the material held fixed; the fitted
    light is as bright above and as dim below, and the fit error falls by more than half. Then
    the other way round: the light known, a polished metal is fitted from the start's rough
    dielectric."""
    import torch

    from meshforge.texturing import bake_view_atlas
    from meshforge_nvdiffrec.backends import make_backend
    from meshforge_nvdiffrec.gbuffer import GBuffer
    from meshforge_nvdiffrec.lighting import cube_directions
    from meshforge_nvdiffrec.materials import PbrMaterial
    from meshforge_nvdiffrec.optimize import _clip, _near_far, prepare_views

    capture = meshforge.load_capture(tiny.capture)
    shape = meshforge.reconstruct(capture, "fusion", {"resolution": 48, "target_faces": 3000}).mesh
    mesh, _ = bake_view_atlas(shape.vertices, shape.faces, capture, max_size=256)
    device, backend = torch.device("cpu"), make_backend("torch", torch.device("cpu"))
    views = prepare_views(capture, 64, device, *_near_far(capture, float(np.ptp(mesh.vertices, axis=0).max())))
    verts = torch.as_tensor(mesh.vertices)
    faces = torch.as_tensor(mesh.faces, dtype=torch.int32)
    uv = torch.as_tensor(np.stack([mesh.uv[:, 0], 1.0 - mesh.uv[:, 1]], 1))
    start = torch.as_tensor(mesh.texture, dtype=torch.float32)[None] / 255.0
    gbuffer = GBuffer(backend, verts, faces, uv, _clip(verts, views), views.res)
    covered = gbuffer.covered

    def material():
        return PbrMaterial(start, gbuffer, views.eyes, light_resolution=4)

    truth = material()
    up = torch.as_tensor(cube_directions(4)[0][..., 1])  # each texel's direction's height (+Y is up)
    with torch.no_grad():
        truth.light.base.copy_(torch.where(up[..., None] > 0, 1.6, 0.3).float().expand(6, 4, 4, 3))
        sky = truth.light.radiance()
        target = gbuffer.composite(truth.colour())

    def fit(fitted, parameters, iterations=60):
        opt = torch.optim.Adam(parameters, lr=0.05)
        errors = []
        for _ in range(iterations):
            loss = ((gbuffer.composite(fitted.colour()) - target).abs() * covered).sum() / covered.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            fitted.clamp_()
            errors.append(loss.item())
        return errors

    fitted = material()
    errors = fit(fitted, [fitted.light.base])
    light = fitted.light.radiance().detach()
    above, below = light[up > 0.5].mean().item(), light[up < -0.5].mean().item()
    truth_above, truth_below = sky[up > 0.5].mean().item(), sky[up < -0.5].mean().item()
    print(f"fit error {errors[0]:.4f} -> {errors[-1]:.4f}; light above {above:.2f}, below {below:.2f} "
          f"(truth {truth_above:.2f}, {truth_below:.2f})")
    assert errors[-1] < 0.5 * errors[0], errors
    assert abs(above - truth_above) < 0.2 and abs(below - truth_below) < 0.15, (above, below)

    # and the material: a polished metal under that light, fitted from the rough dielectric start
    with torch.no_grad():
        truth.roughness_metallic.copy_(torch.tensor([0.25, 1.0]).expand_as(truth.roughness_metallic))
        truth.specular.fill_(1.0)
        target = gbuffer.composite(truth.colour())
    fitted = material()
    with torch.no_grad():
        fitted.light.base.copy_(truth.light.base)
    errors = fit(fitted, [fitted.roughness_metallic, fitted.specular], iterations=150)
    with torch.no_grad():  # roughness and metallic where the views see the surface
        roughness, metallic = gbuffer.lookup(fitted.roughness_metallic).mean(dim=0).tolist()
        specular = gbuffer.lookup(fitted.specular).mean().item()
    print(f"material fit error {errors[0]:.4f} -> {errors[-1]:.4f}; roughness {roughness:.2f}, metallic "
          f"{metallic:.2f}, specular {specular:.2f} (truth 0.25, 1.0, 1.0)")
    # from no specular at the start, metallic and the specular share rise together (a two-tone sky
    # lets diffuse and specular trade: 0.57 / 0.57 after 150 steps); roughness only blurs the
    # sky's horizon on a 4² light: each moves the right way, not all the way
    assert errors[-1] < 0.1 * errors[0] and metallic > 0.5 and roughness < 0.7 and specular > 0.5, (
        errors, roughness, metallic, specular)


def test_joint_stage_moves_vertices_and_texture_together_and_keeps_the_surface_closed(tiny, manager, tmp_path):
    """``iterations_joint``: after the texture stage, vertices (welded across the atlas's seams) and
    texture move together under the colour loss, held by coverage, depth and the Laplacian."""
    options = {**TINY, "iterations_joint": 30}
    report = run(tiny.capture, "nvdiffrec", tmp_path / "out", {"nvdiffrec": options}, manager=manager)
    outcome = report["models"]["nvdiffrec"]
    assert outcome["status"] == "succeeded", outcome["error"]
    joint = outcome["estimates"]["pass2"]["joint"]
    assert joint["iterations"] == 30 and 0 < joint["mean_move_cells"] < 0.5 and joint["max_move_cells"] < 2, joint
    curve = [c for c in outcome["diagnostics"]["loss_curve"] if c.get("stage") == "joint"]
    assert [c["it"] for c in curve] == [0, 10, 20, 29]
    assert curve[-1]["colour"] < curve[0]["colour"], curve

    # the seams' split vertices moved as one: welded by position, the surface has no open edge
    mesh = load_mesh(tmp_path / "out" / "nvdiffrec" / "mesh.glb")
    _, weld = np.unique(mesh.vertices, axis=0, return_inverse=True)
    faces = weld.reshape(-1)[mesh.faces]
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    assert (uses == 1).sum() == 0, f"{(uses == 1).sum()} open edges of {len(uses)}"

    # where the vertices stay put (here by choice; by default on estimated depth), so does the joint stage
    report = run(tiny.capture, "nvdiffrec", tmp_path / "off", {"nvdiffrec": {**options, "vertex_pass": "off"}},
                 manager=manager)
    assert report["models"]["nvdiffrec"]["estimates"]["pass2"]["joint"] == {
        "iterations": 0, "skipped": "the vertices stay put (vertex_pass)"}
