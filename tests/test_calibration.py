"""Calibration against known answers: captures rendered with a known distance, field of view and depth encoding."""

from __future__ import annotations

import numpy as np
import pytest

import meshforge
from meshforge.errors import InconsistentViews
from meshforge.evaluation import geometry_scores
from meshforge.mesh import load_parts
from meshforge.synthetic import render_capture
from tests.helpers import member, rezip


@pytest.mark.parametrize("fov, distance", [(40.0, 2.5), (60.0, 1.6)])
def test_relative_depth_without_cameras_recovers_distance_fov_and_scales(tmp_path, bob_mesh, fov, distance):
    synth = render_capture(bob_mesh, tmp_path / "c.zip", style="sample", rgb_size=512, depth_size=512,
                           fov_y_degrees=fov, distance=distance, ground_truth=tmp_path / "gt.glb")
    capture = meshforge.load_capture(synth.capture)
    cal = capture.calibration
    assert cal.method == "full" and cal.depth_model == "proportional"
    # the gauge makes the object's longest side 1, as the ground truth's normalisation does
    assert cal.fov_y_degrees == pytest.approx(fov, abs=1.0)
    assert cal.distance == pytest.approx(distance, rel=0.03)
    assert cal.consistency["outlier_fraction"] < 0.005
    # the calibrated depth places the surface where the ground truth is
    pts = capture.surface_points(per_view=3000)
    gt = load_parts(synth.ground_truth)
    from scipy.spatial import cKDTree
    gt_pts = np.concatenate([p.sample_surface(100_000) for p in gt])
    d, _ = cKDTree(gt_pts).query(pts)
    assert np.median(d) < 0.01 and np.percentile(d, 95) < 0.03


def test_sample_style_capture_reconstructs_close_to_ground_truth(spot_small_sample_style):
    capture = meshforge.load_capture(spot_small_sample_style.capture)
    mesh = meshforge.reconstruct(capture, "fusion", {"resolution": 160}).mesh
    geo = geometry_scores(mesh, load_parts(spot_small_sample_style.ground_truth), samples=80_000)
    assert geo["fscore@0.02"] > 0.9, geo


def test_the_real_sample_calibrates_consistently(sneaker_dir):
    cal = meshforge.load_capture(sneaker_dir).calibration
    assert cal.method == "full" and cal.depth_model == "proportional"
    assert 30 < cal.fov_y_degrees < 90 and 0.5 < cal.distance < 5
    assert cal.consistency["outlier_fraction"] < 0.005
    assert set(cal.depth_scale) == set(meshforge.VIEW_NAMES)
    assert all(s["a"] > 0 and s["b"] == 0 for s in cal.depth_scale.values())


def test_views_that_contradict_each_other_are_refused(spot_small_sample_style, tmp_path):
    src = spot_small_sample_style.capture
    bad = rezip(src, tmp_path / "swapped.zip", replace={
        "depth_renders/left.png": member(src, "depth_renders/top.png"),
        "depth_renders/top.png": member(src, "depth_renders/left.png")})
    with pytest.raises(InconsistentViews) as exc:
        meshforge.load_capture(bad)
    assert exc.value.code == "INCONSISTENT_VIEWS" and exc.value.http_status == 422
    assert "depth render" in exc.value.message and "worst" in exc.value.message
    assert exc.value.details["consistency"]["outlier_fraction"] > 0.1


def test_an_affine_encoding_that_cannot_be_calibrated_is_refused_not_guessed(tmp_path, spot_mesh):
    synth = render_capture(spot_mesh, tmp_path / "affine.zip", style="sample", rgb_size=512, depth_size=512,
                           relative_offset=0.5)
    with pytest.raises(InconsistentViews) as exc:
        meshforge.load_capture(synth.capture)
    assert "could not be calibrated" in exc.value.message and "cameras.json" in exc.value.message
    assert [c["model"] for c in exc.value.details["candidates"]] == ["proportional", "affine"]


def test_cameras_that_do_not_match_the_views_are_refused(spot_small, tmp_path):
    import json

    cams = json.loads(member(spot_small.capture, "cameras.json"))
    cams["views"]["left"], cams["views"]["right"] = cams["views"]["right"], cams["views"]["left"]
    bad = rezip(spot_small.capture, tmp_path / "wrong_cams.zip", replace={"cameras.json": json.dumps(cams)})
    with pytest.raises(InconsistentViews) as exc:
        meshforge.load_capture(bad)
    assert "camera_to_world" in exc.value.message
