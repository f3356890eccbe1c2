"""meshforge-metrics: the figures against independent computations, the bands at their edges, verdicts on real
reconstructions (good and deliberately bad), quality.json against its schema, and the previews."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from PIL import Image

import meshforge
from meshforge import hookimpl
from meshforge.components import ComponentSpec, ReconstructionResult, Reconstructor
from meshforge.manager import PluginManager
from meshforge.mesh import TexturedMesh, load_parts
from meshforge.pipeline import run
from meshforge.progress import silent
from meshforge_metrics.plugin import MetricsScorer, StaticPreviewer
from meshforge_metrics.scoring import region_psnr, region_ssim
from meshforge_metrics.verdict import DEFAULTS, classify


@pytest.fixture(scope="module")
def schema():
    import jsonschema

    text = resources.files("meshforge_metrics").joinpath("quality.schema.json").read_text()
    return jsonschema.Draft202012Validator(json.loads(text))


def textured_image(seed: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.asarray(Image.fromarray((rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8))
                     .resize((size, size), Image.BICUBIC), np.float32) / 255.0
    return np.clip(img, 0, 1)


# ── the figures ─────────────────────────────────────────────────────────────────────────

def test_region_psnr_equals_the_textbook_formula_on_the_region_only():
    a = textured_image(1)
    noise = np.random.default_rng(2).normal(0, 0.03, a.shape).astype(np.float32)
    b = np.clip(a + noise, 0, 1)
    mask = np.zeros(a.shape[:2], bool)
    mask[40:200, 60:230] = True
    b_outside = b.copy()
    b_outside[~mask] = 1 - a[~mask]  # wildly different outside the region: must not matter
    expected = 10 * math.log10(1.0 / float(((a - b)[mask] ** 2).mean()))
    assert region_psnr(a, b_outside, mask) == pytest.approx(expected, abs=1e-3)
    assert region_psnr(a, a, mask) == pytest.approx(80.0, abs=1e-3)  # piq's ε caps identical images


def test_region_ssim_matches_scikit_image_on_a_full_region():
    from skimage.metrics import structural_similarity

    a = textured_image(3)
    b = np.clip(a + np.random.default_rng(4).normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    full = np.ones(a.shape[:2], bool)
    ours = region_ssim(a, b, full)
    reference = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert ours == pytest.approx(reference, abs=0.01)
    assert region_ssim(a, a, full) == pytest.approx(1.0, abs=1e-6)


def test_region_ssim_ignores_the_background():
    a = textured_image(5)
    b = np.clip(a + np.random.default_rng(6).normal(0, 0.08, a.shape), 0, 1).astype(np.float32)
    mask = np.zeros(a.shape[:2], bool)
    mask[64:192, 64:192] = True
    a_bg, b_bg = a.copy(), b.copy()
    a_bg[~mask] = b_bg[~mask] = 0.95  # identical flat background around a noisy object
    object_only = region_ssim(a_bg, b_bg, mask)
    whole_image = region_ssim(a_bg, b_bg, np.ones_like(mask))
    assert object_only < whole_image - 0.1  # the flat background would have inflated it
    assert object_only == pytest.approx(region_ssim(a, b, mask), abs=0.05)


# ── the bands ───────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("psnr, ssim, iou, status, rule", [
    (25.0, 0.85, 0.99, "normal", "normal"),
    (24.999, 0.95, 0.99, "warning", "warning"),
    (30.0, 0.8499, 0.99, "warning", "warning"),
    (18.0, 0.6, 0.7, "warning", "warning"),
    (17.999, 0.9, 0.99, "failure", "failure_psnr"),
    (30.0, 0.5999, 0.99, "failure", "failure_ssim"),
    (30.0, 0.95, 0.6999, "failure", "failure_iou"),
])
def test_bands_at_their_edges(psnr, ssim, iou, status, rule):
    verdict = classify({"psnr": psnr, "ssim": ssim, "silhouette_iou": iou}, DEFAULTS)
    assert (verdict.status, verdict.rule) == (status, rule)
    assert verdict.reason


def test_bands_follow_options_and_environment(monkeypatch):
    scorer = MetricsScorer()
    options = scorer.resolve_options({"normal_psnr": 30})
    fit = {"front": {"psnr": 27.0, "ssim": 0.9, "silhouette_iou": 0.99, "object_pixels": 100}}
    assert scorer.classify(fit, None, {}, options).status == "warning"
    assert scorer.classify(fit, None, {}, scorer.resolve_options(None)).status == "normal"
    monkeypatch.setenv("MESHFORGE_QUALITY_FAILURE_PSNR", "28")
    assert MetricsScorer().classify(fit, None, {}, MetricsScorer().resolve_options(None)).status == "failure"


def test_holdout_figures_are_reported_apart_and_can_decide():
    scorer = MetricsScorer()
    fit = {v: {"psnr": 32.0, "ssim": 0.95, "silhouette_iou": 0.99, "object_pixels": 10} for v in ("a", "b")}
    held = {v: {"psnr": 16.0, "ssim": 0.7, "silhouette_iou": 0.9, "object_pixels": 10} for v in ("a", "b")}
    report = scorer.classify(fit, held, {}, scorer.resolve_options(None))
    assert report.status == "normal" and report.details["judged"] == "fit"
    assert report.summary["heldout_psnr"] == 16.0 and report.details["heldout"]["views"] == held
    strict = scorer.classify(fit, held, {}, scorer.resolve_options({"holdout_decides": True}))
    assert strict.status == "failure" and strict.details["judged"] == "heldout"


# ── verdicts on real reconstructions ────────────────────────────────────────────────────

def test_the_ground_truth_scores_as_its_own_capture(spot_small, schema):
    """The scorer's renderer reproduces the capture from the ground truth: near-perfect figures."""
    capture = meshforge.load_capture(spot_small.capture)
    gt = load_parts(spot_small.ground_truth)
    scorer = MetricsScorer()
    options = scorer.resolve_options(None)
    fit = scorer.evaluate(gt, capture, list(capture.views), silent(), options)
    for name, f in fit.items():
        # the input's mask comes from the 256² depth map (half the 512² views' resolution): its
        # staircase outline limits the IoU; colour is compared on exact pixels
        assert f["psnr"] >= 40 and f["silhouette_iou"] >= 0.98 and f["ssim"] >= 0.99, (name, f)
        assert f["depth_median_error"] < 1e-4
    report = scorer.classify(fit, None, {}, options)
    assert report.status == "normal"
    assert not list(schema.iter_errors({**report.to_dict(), "scorer": "metrics"}))


class Sphere(Reconstructor):
    """A deliberately bad reconstruction: a grey sphere, whatever the capture shows."""

    spec = ComponentSpec("sphere", "1.0", "a sphere for every object")

    def reconstruct(self, capture, options, progress):
        from meshforge.synthetic import _grid_mesh

        def sphere(u, v):
            t, p = 2 * np.pi * u, np.pi * v
            return 0.45 * np.stack([np.cos(t) * np.sin(p), np.cos(p), np.sin(t) * np.sin(p)], -1)

        v, f, _ = _grid_mesh(48, 24, sphere)
        mesh = TexturedMesh(v, f, vertex_colors=np.full((len(v), 3), 128))
        if mesh.signed_volume() < 0:
            mesh.faces = np.ascontiguousarray(mesh.faces[:, ::-1])
        return ReconstructionResult(mesh)


class SpherePlugin:
    @hookimpl
    def register_reconstructors(self):
        return [Sphere()]


def test_a_sphere_for_a_cow_is_a_failure_and_fails_the_model(spot_small, tmp_path, schema):
    pm = PluginManager()
    pm.register(SpherePlugin(), "sphere-plugin")
    try:
        report = run(spot_small.capture, "sphere", tmp_path / "out", manager=pm)
    finally:
        pm.unregister("sphere-plugin")
    model = report["models"]["sphere"]
    assert model["status"] == "failed" and model["error"]["code"] == "QUALITY_FAILED"
    assert model["quality"]["status"] == "failure"
    quality = json.loads((tmp_path / "out" / "sphere" / "quality.json").read_text())
    assert not list(schema.iter_errors(quality))
    assert quality["rule"].startswith("failure_") and "below the failure band" in quality["reason"]
    assert (tmp_path / "out" / "sphere" / "mesh.glb").exists()  # files are kept


def test_fusion_run_is_scored_previewed_and_documented(spot_small, tmp_path, schema):
    report = run(spot_small.capture, "fusion", tmp_path / "out",
                 {"fusion": {"resolution": 128}, "previews": {"normals": True, "depth": True, "size": 256}})
    model = report["models"]["fusion"]
    assert model["status"] == "succeeded" and model["quality"]["status"] == "normal"
    assert model["quality"]["psnr"] > 28 and model["quality"]["ssim"] > 0.95
    folder = tmp_path / "out" / "fusion"
    quality = json.loads((folder / "quality.json").read_text())
    assert not list(schema.iter_errors(quality))
    assert set(quality["views"]) == set(meshforge.VIEW_NAMES)
    assert quality["heldout"] is None and quality["judged"] == "fit"
    assert "union of both object masks" in quality["compared"]
    previews = {p.name for p in (folder / "previews").iterdir()}
    assert {f"view_{v}.png" for v in meshforge.VIEW_NAMES} <= previews
    assert {"oblique_0.png", "oblique_1.png", "contact_sheet.png"} <= previews
    assert {f"normals_{v}.png" for v in meshforge.VIEW_NAMES} <= previews
    assert Image.open(folder / "previews" / "view_front.png").size == (256, 256)
    sheet = Image.open(folder / "previews" / "contact_sheet.png")
    assert sheet.size[0] == 3 * 256 and sheet.size[1] > 6 * 256
    assert model["timings"]["quality"] > 0 and model["timings"]["previews"] > 0


def test_holdout_reruns_fusion_without_each_view(spot_small, tmp_path, schema):
    report = run(spot_small.capture, "fusion", tmp_path / "out",
                 {"fusion": {"resolution": 96, "target_faces": 20000}, "previews": {"contact_sheet": False}},
                 holdout=True)
    quality = json.loads((tmp_path / "out" / "fusion" / "quality.json").read_text())
    assert not list(schema.iter_errors(quality))
    held = quality["heldout"]
    assert set(held["views"]) == set(meshforge.VIEW_NAMES)
    assert quality["summary"]["heldout_psnr"] == pytest.approx(held["mean"]["psnr"])
    # a view the model did not see is harder than one it was fitted to
    assert held["mean"]["psnr"] < quality["summary"]["psnr"]
    assert report["models"]["fusion"]["quality"]["status"] in ("normal", "warning")


def test_cli_scores_by_default_and_skips_with_no_score(spot_small, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "meshforge.cli", "run", str(spot_small.capture), "--quiet",
                               "--options", '{"fusion": {"resolution": 64}}', *args], capture_output=True,
                              text=True, timeout=600)

    scored = cli("--out", str(tmp_path / "a"))
    assert scored.returncode == 0 and "quality normal" in scored.stdout
    assert (tmp_path / "a" / "fusion" / "quality.json").exists()
    skipped = cli("--out", str(tmp_path / "b"), "--no-score")
    assert skipped.returncode == 0 and not (tmp_path / "b" / "fusion" / "quality.json").exists()


def test_unknown_scorer_options_are_refused_before_work(spot_small, tmp_path):
    from meshforge.errors import InvalidOptions

    with pytest.raises(InvalidOptions) as exc:
        run(spot_small.capture, "fusion", tmp_path / "out", {"metrics": {"normal_psnr": 200}})
    assert "options.metrics.normal_psnr" in exc.value.message
    with pytest.raises(InvalidOptions):
        run(spot_small.capture, "fusion", tmp_path / "out", {"previews": {"sizes": 3}})


def test_the_previewer_declares_itself():
    spec = StaticPreviewer().spec
    assert spec.name == "previews" and spec.option("size").default == 512
