"""The CPU rasteriser and renderer: exact on analytic cases, and a capture's views are reproduced by rendering its
ground truth from the loaded cameras (the round trip through files, encodings and camera conventions)."""

from __future__ import annotations

import numpy as np
import pytest

import meshforge
from meshforge.camera import Camera, look_at, rig_camera
from meshforge.mesh import TexturedMesh, load_parts
from meshforge.raster import interpolate, rasterize, rasterize_uv, sample_texture
from meshforge.render import render


def square(z: float, half: float) -> TexturedMesh:
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], np.float32)
    return TexturedMesh(v, np.array([[0, 1, 2], [0, 2, 3]]), uv=np.array([[0, 0], [1, 0], [1, 1], [0, 1]]),
                        texture=np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], np.uint8))


def test_a_square_facing_the_camera_covers_exactly_the_pixels_whose_centres_it_contains():
    cam = Camera(look_at((0, 0, 2)), 100.0, 100.0, 50.0, 50.0, 100, 100)
    # a square at z=0 seen from distance 2 with f=100: half-width 0.5 -> 25 px; edges at pixel 25 and 75
    frags = rasterize(cam, square(0.0, 0.5).vertices, square(0.0, 0.5).faces)
    assert frags.mask.sum() == 50 * 50
    assert frags.mask[25:75, 25:75].all() and not frags.mask[24, 50] and not frags.mask[50, 75]
    assert np.allclose(frags.depth[frags.mask], 2.0, atol=1e-6)  # planar depth
    assert np.allclose(frags.bary.sum(-1)[frags.mask], 1.0, atol=1e-5)


def test_planar_depth_and_perspective_correct_interpolation_on_a_slanted_plane():
    cam = Camera(look_at((0, 0, 3)), 200.0, 200.0, 64.0, 64.0, 128, 128)
    v = np.array([[-1, -1, -0.5], [1, -1, 0.5], [1, 1, 0.5], [-1, 1, -0.5]], np.float32)  # z = x / 2
    f = np.array([[0, 1, 2], [0, 2, 3]])
    frags = rasterize(cam, v, f)
    pos = interpolate(frags, v, f)
    m = frags.mask
    # interpolated world points lie on the plane and on each pixel's ray, and depth is 3 - z
    assert np.allclose(pos[m][:, 2], pos[m][:, 0] / 2, atol=1e-5)
    assert np.allclose(frags.depth[m], 3 - pos[m][:, 2], atol=1e-5)
    uv, z = cam.project(pos[m])
    rows, cols = np.nonzero(m)
    assert np.allclose(uv, np.stack([cols + 0.5, rows + 0.5], 1), atol=1e-3)


def test_nearer_faces_win_and_backfaces_can_be_culled():
    near, far = square(0.5, 0.5), square(-0.5, 1.0)
    v = np.concatenate([near.vertices, far.vertices])
    f = np.concatenate([near.faces, far.faces + 4])
    cam = Camera(look_at((0, 0, 2)), 100.0, 100.0, 50.0, 50.0, 100, 100)
    frags = rasterize(cam, v, f)
    assert set(np.unique(frags.face[50, 40:60])) <= {0, 1}
    flipped = rasterize(cam, near.vertices, near.faces[:, ::-1], cull_backfaces=True)
    assert not flipped.mask.any()
    front = rasterize(cam, near.vertices, near.faces, cull_backfaces=True)
    assert front.mask.sum() == rasterize(cam, near.vertices, near.faces).mask.sum() > 0


def test_texture_lookup_follows_the_v_up_convention_with_texel_centres():
    tex = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], np.uint8)
    # v = 0 is the bottom row: (0.25, 0.25) is the bottom-left texel (blue), (0.75, 0.75) top-right (green)
    assert np.allclose(sample_texture(tex, np.array([[0.25, 0.25]])), [[0, 0, 255]])
    assert np.allclose(sample_texture(tex, np.array([[0.75, 0.75]])), [[0, 255, 0]])
    assert np.allclose(sample_texture(tex, np.array([[0.5, 0.75]])), [[127.5, 127.5, 0]])


def test_uv_rasterisation_covers_the_layout():
    frags = rasterize_uv(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float), np.array([[0, 1, 2], [0, 2, 3]]), 64)
    assert frags.mask.all()


@pytest.mark.parametrize("style", ["contract", "sample"])
def test_rendering_the_ground_truth_from_the_loaded_cameras_reproduces_the_capture(tmp_path, spot_mesh, style):
    synth = meshforge.render_capture(spot_mesh, tmp_path / "c.zip", style=style, rgb_size=512, depth_size=256,
                                     ground_truth=tmp_path / "gt.glb")
    capture = meshforge.load_capture(synth.capture)
    gt = load_parts(synth.ground_truth)
    if style == "sample":  # the estimated world has the object's longest side = 1, like the ground truth
        assert capture.calibration.method == "full"
    bg = (1.0, 1.0, 1.0) if style == "contract" else (0.96, 0.96, 0.955)
    for name, view in capture.views.items():
        out = render(gt, view.camera, background=bg)
        mse = ((out.color - view.image / 255.0) ** 2).mean()
        psnr = 10 * np.log10(1 / mse)
        # masks compared at the depth maps' resolution, where the capture's mask comes from
        drawn = render(gt, view.depth_camera).mask > 0.5
        iou = (drawn & view.depth_mask).sum() / (drawn | view.depth_mask).sum()
        if style == "contract":
            assert psnr >= 40 and iou >= 0.99, (name, psnr, iou)
            depth = render(gt, view.depth_camera).depth
            both = (depth > 0) & (view.depth > 0)
            off = np.abs(depth[both] - view.depth[both]) > 2 * 2.0 / 65534 + 1e-5  # two 16-bit levels
            # only the pixels the speck filter reports replacing may differ (one-pixel features at 256²)
            assert off.sum() <= capture.cleaning[name]["outlier_pixels_replaced"], (name, off.sum())
        else:  # estimated cameras: a few tenths of a degree of fov shift outlines by a pixel or so
            assert psnr >= 24 and iou >= 0.97, (name, psnr, iou)


def test_rig_cameras_follow_the_contract_table():
    left = rig_camera("left", 2.5, 40.0, 100)
    assert np.allclose(left.position, [2.5, 0, 0]) and np.allclose(left.forward, [-1, 0, 0])
    top = rig_camera("top", 2.5, 40.0, 100)
    assert np.allclose(top.camera_to_world[:3, 1], [0, 0, 1])  # image up is +Z
    uv, z = rig_camera("front", 2.5, 40.0, 100).project(np.array([[0.0, 0.0, 0.0], [0.1, 0.1, 0.0]]))
    assert np.allclose(uv[0], [50, 50]) and uv[1, 0] > 50 and uv[1, 1] < 50 and np.allclose(z, 2.5)
