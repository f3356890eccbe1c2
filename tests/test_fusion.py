"""The fusion reconstructor end to end on real files: two shared meshes at the contract's full size, and the
real sample capture. Quality is measured against ground truth and on held-out views (not inputs).

The thresholds here guard against regressions with a margin; the targets themselves (F@1% ≥ 0.9,
held-out PSNR ≥ 30 dB, ≤ 5 s) are measured in benchmarks/ (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import pytest

import meshforge
from meshforge.errors import Cancelled
from meshforge.evaluation import geometry_scores, heldout_scores
from meshforge.export import write_mesh_files
from meshforge.mesh import load_mesh, load_parts
from meshforge.plugins.fusion.surface import components
from meshforge.progress import Progress
from meshforge.render import render


def edges_shared_twice(faces: np.ndarray) -> float:
    """Fraction of edges used by exactly two faces (1.0 for a closed manifold mesh)."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return float((counts == 2).mean())


def welded(mesh) -> np.ndarray:
    """Faces re-indexed on unique positions (the atlas splits vertices along seams)."""
    _, inverse = np.unique(mesh.vertices, axis=0, return_inverse=True)
    return inverse.reshape(-1)[mesh.faces]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["spot_full", "bob_full"])
def test_fusion_reconstructs_shared_meshes_against_ground_truth(fixture, request, tmp_path):
    synth = request.getfixturevalue(fixture)
    capture = meshforge.load_capture(synth.capture)
    result = meshforge.reconstruct(capture, "fusion")
    mesh = result.mesh
    gt = load_parts(synth.ground_truth)
    geo = geometry_scores(mesh, gt)
    held = heldout_scores(mesh, synth.heldout_dir)
    assert geo["fscore@0.01"] >= 0.95, geo
    assert geo["chamfer_l1"] < 0.004, geo
    assert held["psnr"] >= 33.0 and held["ssim"] >= 0.98, held
    # closed surface, one piece, outward, in the capture's world frame
    assert edges_shared_twice(welded(mesh)) > 0.999
    faces = welded(mesh)
    assert len(np.unique(components(int(faces.max()) + 1, faces)[1])) == 1  # one piece (bob's torus too)
    assert mesh.signed_volume() > 0
    gt_lo, gt_hi = np.min([p.bounds[0] for p in gt], 0), np.max([p.bounds[1] for p in gt], 0)
    assert np.abs(mesh.bounds - np.stack([gt_lo, gt_hi])).max() < 0.01
    # files: GLB and OBJ read back to the same geometry
    paths = write_mesh_files(mesh, tmp_path)
    back = load_mesh(paths["glb"])
    assert back.is_textured and back.texture.shape == mesh.texture.shape
    assert np.allclose(np.sort(back.vertices, axis=0), np.sort(mesh.vertices, axis=0), atol=1e-5)
    assert result.estimates["faces"]["final"] <= 200_000 * 1.01
    assert result.estimates["texture"]["texture"] == "view_atlas"


@pytest.mark.slow
def test_fusion_on_the_real_sneaker_sample_agrees_with_every_input_silhouette(sneaker_dir):
    capture = meshforge.load_capture(sneaker_dir)
    result = meshforge.reconstruct(capture, "fusion")
    mesh = result.mesh
    assert mesh.is_textured and len(mesh.faces) > 50_000
    assert edges_shared_twice(welded(mesh)) > 0.999
    for name, view in capture.views.items():
        cam = view.camera.scaled(512)
        drawn = render(mesh, cam).mask > 0.5
        wanted = view.mask[::4, ::4]  # 2048 -> 512, pixel centres of 4×4 blocks: close enough at this size
        iou = (drawn & wanted).sum() / (drawn | wanted).sum()
        assert iou > 0.95, (name, iou)
    # the texture shows the sneaker's colours where the views do (red canvas, white sole)
    front = render(mesh, capture.views["front"].camera.scaled(256)).color
    seen = render(mesh, capture.views["front"].camera.scaled(256)).mask > 0.5
    ref = capture.views["front"].image[4::8, 4::8] / 255.0
    both = seen & capture.views["front"].mask[4::8, 4::8]
    assert np.abs(front[both] - ref[both]).mean() < 0.08


def test_fusion_uses_any_subset_of_views(spot_small):
    capture = meshforge.load_capture(spot_small.capture).without("top")
    assert list(capture.views) == ["front", "back", "left", "right", "bottom"]
    mesh = meshforge.reconstruct(capture, "fusion", {"resolution": 96, "target_faces": 20_000}).mesh
    geo = geometry_scores(mesh, load_parts(spot_small.ground_truth), samples=50_000)
    assert geo["fscore@0.02"] > 0.9, geo


def test_fusion_options_change_what_it_does(spot_small):
    capture = meshforge.load_capture(spot_small.capture)
    coarse = meshforge.reconstruct(capture, "fusion", {"resolution": 64, "target_faces": 5_000, "refine": False})
    assert len(coarse.mesh.faces) <= 5_050
    assert coarse.estimates["grid"]["dims"][0] < 80
    vertex = meshforge.reconstruct(capture, "fusion", {"resolution": 64, "texture": "vertex"}).mesh
    assert vertex.vertex_colors is not None and not vertex.is_textured
    assert vertex.vertex_colors.std() > 10  # spot is not one flat colour


def test_fusion_xatlas_texture_mode_bakes_an_unwrapped_atlas(spot_small):
    capture = meshforge.load_capture(spot_small.capture)
    result = meshforge.reconstruct(capture, "fusion", {"resolution": 64, "target_faces": 4_000, "texture": "xatlas",
                                                       "max_texture_size": 512})
    stats = result.estimates["texture"]
    assert stats["texture"] == "uv_bake" and stats["unwrap"] == "xatlas"
    assert result.mesh.texture.shape == (512, 512, 3)
    held = heldout_scores(result.mesh, spot_small.heldout_dir)
    assert held["psnr"] > 24, held


def test_xatlas_failure_falls_back_to_the_view_atlas(spot_small):
    capture = meshforge.load_capture(spot_small.capture)
    # 0.1 s is too short for the child process to even import xatlas: it is killed, and the
    # reconstruction carries on with the view atlas and says so
    result = meshforge.reconstruct(capture, "fusion", {"resolution": 96, "texture": "xatlas",
                                                       "unwrap_time_limit_s": 0.1})
    assert result.estimates["texture"]["texture"] == "view_atlas"
    assert any("UV unwrapping failed" in w and "did not finish" in w for w in result.warnings)
    assert result.mesh.is_textured


def test_fusion_stops_when_cancelled(spot_small):
    capture = meshforge.load_capture(spot_small.capture)
    stages = []

    def on_update(event):
        stages.append(event.stage)

    progress = Progress(on_update, is_cancelled=lambda: "extracting the surface" in stages)
    with pytest.raises(Cancelled):
        meshforge.reconstruct(capture, "fusion", {"resolution": 64}, progress=progress)
    assert "texturing" not in stages
