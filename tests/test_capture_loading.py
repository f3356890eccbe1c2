"""Loading captures: every rule of shared/spec/input-format.md, exercised with real files.

The reference is the correctly loaded contract capture ``spot_small`` (512² views, 256² 16-bit
``linear16`` depth, cameras.json). Variants are either the same files rearranged (renamed,
re-zipped, extracted, re-encoded from the reference's depth with the spec's formulas) or new
renders of the same mesh from the same rig, so every depth map below samples the *same* planar
depth and must agree with the reference up to the quantisation of its encoding.

Depth comparisons skip the few pixels that the speck filter replaced in either load (an
isolated outlier pixel gets its neighbours' median, whatever its encoding said): those are
found by running the filter on the raw PNG values, and must stay rare.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from meshforge import inspect_capture, load_capture
from meshforge.camera import DEFAULT_DISTANCE, DEFAULT_FOV_Y_DEGREES, VIEW_NAMES, rig, rig_camera
from meshforge.capture import Capture, CaptureManifest
from meshforge.depth import remove_specks
from meshforge.errors import CaptureError
from meshforge.synthetic import render_capture

from .helpers import member, png_bytes, rezip

ALIASES = dict(zip(VIEW_NAMES, ("+z", "-z", "+x", "-x", "+y", "-y")))
NEAR, FAR = DEFAULT_DISTANCE - 1.0, DEFAULT_DISTANCE + 1.0
DEPTH_SIZE = 256
#: focal length of a 256² depth map of the default rig, in pixels
F_DEPTH = 0.5 * DEPTH_SIZE / math.tan(math.radians(DEFAULT_FOV_Y_DEGREES) / 2)
#: half a level of the reference's linear16 depth, plus two float32 roundings near z = 3.5
REF_HALF_LEVEL = 0.5 * (FAR - NEAR) / 65534 + 1e-6


# ── fixtures ─────────────────────────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def ref(spot_small) -> Capture:
    """The contract capture, loaded: the reference every variant is compared with."""
    return load_capture(spot_small.capture)


class Renders:
    """More captures of the same mesh from the same rig (256² views and depth), rendered on first use."""

    def __init__(self, mesh: Path, root: Path):
        self.mesh, self.root = mesh, root
        self._encoded = {}

    def encoded(self, encoding: str) -> Path:
        if encoding not in self._encoded:
            self._encoded[encoding] = render_capture(self.mesh, self.root / f"{encoding}.zip", rgb_size=256,
                                                     depth_size=DEPTH_SIZE, depth_encoding=encoding).capture
        return self._encoded[encoding]

    @cached_property
    def rgba(self) -> Path:
        return render_capture(self.mesh, self.root / "rgba.zip", rgb_size=256, depth_size=DEPTH_SIZE,
                              alpha=True).capture

    @cached_property
    def sample_style(self) -> Path:
        return render_capture(self.mesh, self.root / "sample.zip", style="sample", rgb_size=256,
                              depth_size=DEPTH_SIZE).capture

    @cached_property
    def narrow(self) -> Path:
        """Another rig: 30° field of view at distance 3 (cameras.json says so)."""
        return render_capture(self.mesh, self.root / "narrow.zip", rgb_size=256, depth_size=DEPTH_SIZE,
                              fov_y_degrees=30.0, distance=3.0).capture


@pytest.fixture(scope="module")
def renders(spot_mesh, tmp_path_factory) -> Renders:
    return Renders(spot_mesh, tmp_path_factory.mktemp("capture_loading"))


@pytest.fixture(scope="module")
def sneaker(sneaker_dir) -> Capture:
    return load_capture(sneaker_dir)


# ── helpers ──────────────────────────────────────────────────────────────────────────────

def raw_depth(src: Path, view: str, name: str | None = None) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(member(src, name or f"depth_renders/{view}.png"))))


def speck_touched(raw: np.ndarray) -> np.ndarray:
    """Pixels the loader's speck filter changes in these raw values."""
    return remove_specks(raw)[0] != raw


def assert_depth_matches(loaded: Capture, ref: Capture, tol, touched: dict, ref_touched: dict, what: str):
    """Same foreground; |z − z_ref| ≤ tol(view, z_ref) wherever the speck filter left both alone."""
    for n in VIEW_NAMES:
        z, zr = loaded.views[n].depth, ref.views[n].depth
        assert z.dtype == np.float32 and z.shape == zr.shape, (what, n)
        np.testing.assert_array_equal(z > 0, zr > 0, err_msg=f"{what}: {n}: another foreground")
        fg = zr > 0
        skip = touched[n] | ref_touched[n]
        assert skip.sum() < 0.01 * fg.sum(), f"{what}: {n}: the speck filter changed {skip.sum()} pixels"
        keep = fg & ~skip
        err = np.abs(z - zr)[keep]
        limit = np.broadcast_to(tol(n, zr), zr.shape)[keep]
        worst = int(np.argmax(err - limit))
        assert (err <= limit).all(), (f"{what}: {n}: {int((err > limit).sum())} pixels off, worst {err[worst]:.3g} "
                                      f"> {limit[worst]:.3g}")


@pytest.fixture(scope="module")
def ref_touched(spot_small) -> dict:
    return {n: speck_touched(raw_depth(spot_small.capture, n)) for n in VIEW_NAMES}


def assert_same_capture(a: Capture, b: Capture, images: bool = True):
    assert list(a.views) == list(b.views) == list(VIEW_NAMES)
    assert a.depth_encoding == b.depth_encoding
    for n in VIEW_NAMES:
        va, vb = a.views[n], b.views[n]
        if images:
            np.testing.assert_array_equal(va.image, vb.image, err_msg=n)
        np.testing.assert_array_equal(va.mask, vb.mask, err_msg=n)
        np.testing.assert_array_equal(va.depth, vb.depth, err_msg=n)
        np.testing.assert_allclose(va.camera.camera_to_world, vb.camera.camera_to_world, atol=1e-12)
        assert (va.camera.fx, va.camera.fy, va.camera.cx, va.camera.cy) == pytest.approx(
            (vb.camera.fx, vb.camera.fy, vb.camera.cx, vb.camera.cy))
        assert va.mask_source == vb.mask_source


def members_of(src: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(src) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def write_zip(dst: Path, entries: dict) -> Path:
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return dst


def with_cameras(src: Path, dst: Path, doc: dict, depths: dict | None = None) -> Path:
    """A copy of ``src`` with cameras.json replaced (and depth PNGs, view -> array)."""
    replace = {f"depth_renders/{n}.png": png_bytes(a) for n, a in (depths or {}).items()}
    cameras = {"cameras.json": json.dumps(doc).encode()}
    if "cameras.json" in members_of(src):
        return rezip(src, dst, replace={**replace, **cameras})
    return rezip(src, dst, replace=replace, add=cameras)


def encode(z: np.ndarray, encoding: str, near: float, far: float) -> np.ndarray:
    """Metric depth -> raw values, with the formulas of input-format.md (0 stays background)."""
    fg = z > 0
    if encoding == "linear16":
        v, dtype = (z - near) / (far - near) * 65534 + 1, np.uint16
    elif encoding == "linear8":
        v, dtype = (z - near) / (far - near) * 254 + 1, np.uint8
    elif encoding == "inverse16":
        v, dtype = (1 / np.where(fg, z, 1) - 1 / far) / (1 / near - 1 / far) * 65534 + 1, np.uint16
    else:
        raise ValueError(encoding)
    assert v[fg].min() >= 0.5 and v[fg].max() < np.iinfo(dtype).max + 0.5, "depth outside near/far"
    return np.where(fg, np.round(v), 0).astype(dtype)


def half_level(encoding: str, near: float, far: float):
    """tol(view, z): half a quantisation level of ``encoding`` at depth z, in world units."""
    if encoding == "linear16":
        return lambda n, z: 0.5 * (far - near) / 65534
    if encoding == "linear8":
        return lambda n, z: 0.5 * (far - near) / 254
    if encoding == "inverse16":  # dz = z² · d(1/z): the steps grow towards far
        return lambda n, z: 0.5 * z * z * (1 / near - 1 / far) / 65534
    raise ValueError(encoding)


def transforms_zip(dst: Path, rgba: Path, views=VIEW_NAMES, doc: dict | None = None, frame: dict | None = None,
                   extra: dict | None = None, prefix: str = "") -> Path:
    """A NeRF-style transforms.json capture from a capture rendered with alpha (the default rig)."""
    size = Image.open(io.BytesIO(member(rgba, "multi_views/front.png"))).size[0]
    cams = rig(size=size)
    frames = [{"file_path": f"images/{v}.png", "transform_matrix": cams[v].camera_to_world.tolist(),
               **(frame or {}).get(v, {})} for v in views]
    body = {"camera_angle_x": math.radians(DEFAULT_FOV_Y_DEGREES), "frames": frames, **(doc or {})}
    body = {k: v for k, v in body.items() if v is not ...}  # ... = leave the key out
    entries = {f"{prefix}images/{v}.png": member(rgba, f"multi_views/{v}.png") for v in views}
    entries[f"{prefix}transforms.json"] = json.dumps(body).encode()
    entries.update(extra or {})
    return write_zip(dst, entries)


# ── the contract capture ─────────────────────────────────────────────────────────────────

def test_contract_capture_loads_in_the_world_frame(ref, spot_small):
    assert ref.layout == "six_views" and list(ref.views) == list(VIEW_NAMES)
    assert ref.image_size == 512 and ref.depth_size == DEPTH_SIZE and ref.has_depth
    assert ref.depth_encoding == "linear16" and ref.ignored_files == [] and ref.warnings == []
    assert ref.calibration.method == "known" and ref.calibration.depth_model == "metric"
    assert ref.calibration.distance == pytest.approx(DEFAULT_DISTANCE)
    assert ref.calibration.fov_y_degrees == pytest.approx(DEFAULT_FOV_Y_DEGREES)
    assert ref.calibration.consistency["outlier_fraction"] < 0.01
    for n, v in ref.views.items():
        rig_cam = rig_camera(n, size=512)
        np.testing.assert_allclose(v.camera.camera_to_world, rig_cam.camera_to_world, atol=1e-9)
        assert v.camera.fx == pytest.approx(rig_cam.fx) and v.camera.cx == 256
        assert v.image.shape == (512, 512, 3) and v.image.dtype == np.uint8
        assert v.mask.shape == (512, 512) and v.mask.dtype == bool and v.mask_source == "depth"
        fg = v.depth[v.depth > 0]
        assert NEAR <= fg.min() and fg.max() <= FAR
        # depth 0 = background: the mask (upsampled from depth) covers the non-white pixels
        assert (v.image[v.mask].mean(axis=1) < 250).mean() > 0.95
        assert (v.image[~ndi.binary_dilation(v.mask, iterations=2)] == 255).all()  # 2 px: the 256² mask's edge
    # spot was normalised to a bounding box of longest side 1 around the origin: the depth maps,
    # back-projected through the cameras, must land there (to a depth-pixel footprint)
    pts = ref.surface_points()
    footprint = FAR / F_DEPTH
    assert (np.abs(pts) <= 0.5 + footprint).all()
    assert (pts.max(axis=0) - pts.min(axis=0)).max() == pytest.approx(1.0, abs=2 * footprint)
    json.dumps(ref.summary())


def test_enclosing_folder_and_macos_litter(ref, spot_small, tmp_path):
    litter = {
        "__MACOSX/capture/multi_views/._front.png": b"\x00\x05\x16\x07AppleDouble",
        "__MACOSX/capture/._cameras.json": b"\x00\x05\x16\x07AppleDouble",
        "capture/.DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(64),
        "capture/multi_views/.DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(64),
        "capture/depth_renders/._top.png": b"\x00\x05\x16\x07AppleDouble",
    }
    entries = {"capture/": b"", "capture/multi_views/": b"", "capture/depth_renders/": b""}  # folder entries
    entries.update({f"capture/{n}": data for n, data in members_of(spot_small.capture).items()})
    entries.update(litter)
    src = write_zip(tmp_path / "capture.zip", entries)
    cap = load_capture(src)
    assert_same_capture(cap, ref)
    assert sorted(cap.ignored_files) == sorted(litter)
    assert sorted(inspect_capture(src).summary()["ignored_files"]) == sorted(litter)
    # unrelated files at the capture's root are skipped and listed too
    cap2 = load_capture(rezip(spot_small.capture, tmp_path / "notes.zip", add={"README.txt": b"six views of spot"}))
    assert cap2.ignored_files == ["README.txt"]


def test_aliases_depth_suffix_and_case_insensitive_names(ref, spot_small, tmp_path):
    rename = {"cameras.json": "Cameras.JSON"}
    for i, n in enumerate(VIEW_NAMES):
        rename[f"multi_views/{n}.png"] = f"Multi_Views/{ALIASES[n].upper()}.PNG"
        depth_stem = ALIASES[n] if i % 2 else n.upper()
        rename[f"depth_renders/{n}.png"] = f"DEPTH_RENDERS/{depth_stem}_Depth.png"
    src = rezip(spot_small.capture, tmp_path / "aliases.zip", rename=rename)
    assert_same_capture(load_capture(src), ref)
    # cameras.json keys may use the aliases too
    doc = json.loads(member(spot_small.capture, "cameras.json"))
    doc["views"] = {ALIASES[n]: spec for n, spec in doc["views"].items()}
    assert_same_capture(load_capture(with_cameras(spot_small.capture, tmp_path / "alias_keys.zip", doc)), ref)


def test_jpeg_views(ref, spot_small, tmp_path):
    rename, replace = {}, {}
    for i, n in enumerate(VIEW_NAMES):
        name = f"multi_views/{n}.png"
        buf = io.BytesIO()
        Image.open(io.BytesIO(member(spot_small.capture, name))).save(buf, format="JPEG", quality=95)
        replace[name] = buf.getvalue()
        rename[name] = f"multi_views/{n}{('.jpg', '.jpeg', '.JPG')[i % 3]}"
    cap = load_capture(rezip(spot_small.capture, tmp_path / "jpeg.zip", rename=rename, replace=replace))
    assert_same_capture(cap, ref, images=False)
    for n in VIEW_NAMES:
        img = cap.views[n].image
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8
        assert np.abs(img.astype(int) - ref.views[n].image).mean() < 2.0  # JPEG at quality 95


def test_directory_loads_like_the_zip(ref, spot_small, tmp_path):
    with zipfile.ZipFile(spot_small.capture) as zf:
        zf.extractall(tmp_path / "flat")
        zf.extractall(tmp_path / "wrapped" / "my capture")  # one enclosing folder, stripped
    for folder in (tmp_path / "flat", tmp_path / "wrapped"):
        cap = load_capture(folder)
        assert_same_capture(cap, ref)
        assert cap.calibration.to_dict() | {"seconds": 0} == ref.calibration.to_dict() | {"seconds": 0}
        assert cap.source == str(folder)
        assert inspect_capture(folder).summary() == inspect_capture(spot_small.capture).summary()


def test_rgba_views_alpha_is_the_mask(renders, ref):
    cap = load_capture(renders.rgba)
    for n, v in cap.views.items():
        rgba = np.asarray(Image.open(io.BytesIO(member(renders.rgba, f"multi_views/{n}.png"))))
        assert rgba.shape == (256, 256, 4)
        assert v.mask_source == "alpha"
        np.testing.assert_array_equal(v.mask, rgba[..., 3] > 127)
        np.testing.assert_array_equal(v.image, rgba[..., :3])
        # the alpha mask and the depth's foreground describe the same silhouette
        depth_fg = v.depth > 0
        iou = (v.mask & depth_fg).sum() / (v.mask | depth_fg).sum()
        assert iou > 0.97, (n, iou)
        np.testing.assert_array_equal(v.depth, ref.views[n].depth)  # the same 256² linear16 depth


# ── cameras.json overrides ───────────────────────────────────────────────────────────────

def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = ry @ rx
    return m


def test_camera_to_world_override_moves_the_world(ref, spot_small, tmp_path):
    """Every camera_to_world rotated by R: the same pixels and depths land rotated by R."""
    r = _rotation(30.0, 10.0)
    doc = json.loads(member(spot_small.capture, "cameras.json"))
    for spec in doc["views"].values():
        spec["camera_to_world"] = (r @ np.array(spec["camera_to_world"])).tolist()
    cap = load_capture(with_cameras(spot_small.capture, tmp_path / "rotated.zip", doc))
    for n in VIEW_NAMES:
        np.testing.assert_allclose(cap.views[n].camera.camera_to_world, r @ ref.views[n].camera.camera_to_world,
                                   atol=1e-12)
        np.testing.assert_array_equal(cap.views[n].depth, ref.views[n].depth)  # planar z does not change
    np.testing.assert_allclose(cap.surface_points(), ref.surface_points() @ r[:3, :3].T, atol=1e-5)
    assert cap.calibration.method == "known"
    assert cap.calibration.consistency["outlier_fraction"] == ref.calibration.consistency["outlier_fraction"]


def test_partial_cameras_json_keeps_the_defaults(ref, spot_small, tmp_path):
    """Only one view stated (by its alias), no fov: every missing key keeps the default rig's value."""
    doc = {"views": {"+x": {"camera_to_world": rig_camera("left").camera_to_world.tolist()}},
           "depth": {"near": NEAR}}
    assert_same_capture(load_capture(with_cameras(spot_small.capture, tmp_path / "partial.zip", doc)), ref)
    # and without cameras.json at all, 16-bit depth is linear16 between d − 1 and d + 1
    assert_same_capture(load_capture(rezip(spot_small.capture, tmp_path / "none.zip", drop=("cameras.json",))), ref)


def test_fov_and_distance_from_cameras_json(renders, tmp_path):
    cap = load_capture(renders.narrow)
    assert cap.calibration.method == "known"
    assert cap.calibration.fov_y_degrees == pytest.approx(30.0)
    assert cap.calibration.distance == pytest.approx(3.0)
    assert cap.calibration.consistency["outlier_fraction"] < 0.01
    for v in cap.views.values():
        assert v.camera.fov_y_degrees == pytest.approx(30.0)
        assert np.linalg.norm(v.camera.position) == pytest.approx(3.0)
        assert 2.0 <= v.depth[v.depth > 0].min() and v.depth.max() <= 4.0
    footprint = 4.0 / (0.5 * DEPTH_SIZE / math.tan(math.radians(15.0)))
    assert (np.abs(cap.surface_points()) <= 0.5 + footprint).all()
    # the same rig described by intrinsics in pixels instead of a field of view gives the same capture
    doc = json.loads(member(renders.narrow, "cameras.json"))
    f = 0.5 * 256 / math.tan(math.radians(15.0))
    for spec in doc["views"].values():
        del spec["fov_y_degrees"]
        spec.update(fx=f, fy=f, cx=128.0, cy=128.0)
    assert_same_capture(load_capture(with_cameras(renders.narrow, tmp_path / "fxfy.zip", doc)), cap)
    # without the fov (default 40°) the silhouettes no longer agree with the depth
    doc = json.loads(member(renders.narrow, "cameras.json"))
    for spec in doc["views"].values():
        del spec["fov_y_degrees"]
    wrong = with_cameras(renders.narrow, tmp_path / "nofov.zip", doc)
    with pytest.raises(CaptureError) as info:
        load_capture(wrong)
    assert info.value.code == "INCONSISTENT_VIEWS"


def test_intrinsics_are_taken_verbatim_and_scaled_to_the_depth_map(ref, spot_small, tmp_path):
    doc = json.loads(member(spot_small.capture, "cameras.json"))
    f = 0.5 * 512 / math.tan(math.radians(20.0))
    for n, spec in doc["views"].items():
        del spec["fov_y_degrees"]
        spec.update(fx=f, fy=f, cx=256.0, cy=256.0)
    doc["views"]["top"].update(fy=f * 1.001, cx=256.5)  # a real calibration is never exactly round
    cap = load_capture(with_cameras(spot_small.capture, tmp_path / "intrinsics.zip", doc))
    top = cap.views["top"]
    assert (top.camera.fx, top.camera.fy, top.camera.cx, top.camera.cy) == (f, f * 1.001, 256.5, 256.0)
    d = top.depth_camera
    assert (d.width, d.fx, d.fy, d.cx, d.cy) == (DEPTH_SIZE, f / 2, f * 1.001 / 2, 128.25, 128.0)
    assert cap.calibration.fov_y_degrees is None  # the fields of view differ now: none is reported
    for n in VIEW_NAMES:
        np.testing.assert_array_equal(cap.views[n].depth, ref.views[n].depth)
        if n != "top":
            assert cap.views[n].camera.fx == pytest.approx(ref.views[n].camera.fx)


# ── depth encodings ──────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("kind,encoding,near,far", [
    ("planar", "linear16", 1.0, 6.0),
    ("planar", "inverse16", 0.5, 8.0),
    ("planar", "linear8", 1.2, 3.8),
    ("radial", "linear16", 1.0, 4.0),
    ("radial", "inverse16", 1.0, 4.0),
])
def test_depth_block_reencoded_reference(kind, encoding, near, far, ref, ref_touched, spot_small, tmp_path):
    """The reference's planar depth, written in another encoding / near / far / kind with the spec's
    formulas: the loader must return the reference's planar z to half a level of the new encoding."""
    raws, tol_of = {}, half_level(encoding, near, far)
    for n in VIEW_NAMES:
        z = ref.views[n].depth.astype(np.float64)
        if kind == "radial":  # distance along each pixel's ray
            z = z * np.linalg.norm(ref.views[n].depth_camera.pixel_grid_rays(), axis=-1)
        raws[n] = encode(z, encoding, near, far)
    doc = json.loads(member(spot_small.capture, "cameras.json"))
    doc["depth"] = {"kind": kind, "encoding": encoding, "near": near, "far": far}
    cap = load_capture(with_cameras(spot_small.capture, tmp_path / "reencoded.zip", doc, raws))
    assert cap.depth_encoding == encoding and cap.calibration.method == "known"
    touched = {n: speck_touched(raws[n]) for n in VIEW_NAMES}
    # radial → planar divides by the ray length (≥ 1), which only shrinks the error
    assert_depth_matches(cap, ref, lambda n, z: tol_of(n, z) + REF_HALF_LEVEL / 2 + 1e-6, touched,
                         {n: np.zeros_like(t) for n, t in touched.items()}, f"{kind} {encoding}")
    if kind == "radial":  # read as planar, the same values are measurably wrong away from the image centre
        doc["depth"]["kind"] = "planar"
        flat = load_capture(with_cameras(spot_small.capture, tmp_path / "as_planar.zip", doc, raws))
        assert max(np.abs(flat.views[n].depth - ref.views[n].depth).max() for n in VIEW_NAMES) > 0.02


@pytest.mark.parametrize("encoding", ["linear8", "inverse16"])
def test_rendered_metric_encodings(encoding, renders, ref, ref_touched):
    """The mesh rendered again with another metric encoding (near = 1.5, far = 3.5 from cameras.json):
    both loads quantise the same true z, so they agree to half a level of each encoding."""
    src = renders.encoded(encoding)
    cap = load_capture(src)
    assert cap.depth_encoding == encoding
    assert cap.calibration.method == "known" and cap.calibration.consistency["outlier_fraction"] < 0.01
    tol = half_level(encoding, NEAR, FAR)
    touched = {n: speck_touched(raw_depth(src, n)) for n in VIEW_NAMES}
    assert_depth_matches(cap, ref, lambda n, z: tol(n, z) + REF_HALF_LEVEL + 1e-6, touched, ref_touched, encoding)


@pytest.mark.parametrize("encoding,levels", [("relative8", 255), ("relative16", 65535)])
def test_relative_encodings_are_calibrated(encoding, levels, renders, ref, ref_touched):
    """Relative depth (z = a·v, a unknown per view) with the cameras given: each view's scale is
    estimated from the other views' silhouettes. Tolerance: half a level (z_max / levels / 2) plus
    the scale's uncertainty. A scale error moves a view's points along their rays, which the
    perpendicular views see as a lateral shift; the consistency check lets points stray
    SILHOUETTE_TOLERANCE_PX = 2 px outside a silhouette on either side, so the scale is pinned to
    about ±4 depth pixels' footprint (z / f): 1.1 % of z here."""
    src = renders.encoded(encoding)
    cap = load_capture(src)
    assert cap.depth_encoding == encoding
    cal = cap.calibration
    assert cal.method == "depth_scale" and cal.depth_model == "proportional"
    assert cal.consistency["outlier_fraction"] < 0.01
    for n in VIEW_NAMES:
        z_max = float(ref.views[n].depth.max())  # synthetic relative depth: the farthest pixel reads `levels`
        assert cal.depth_scale[n]["a"] == pytest.approx(z_max / levels, rel=4 / F_DEPTH)
        assert cal.depth_scale[n]["b"] == 0.0
    touched = {n: speck_touched(raw_depth(src, n)) for n in VIEW_NAMES}
    assert_depth_matches(cap, ref, lambda n, z: 4 * z / F_DEPTH + 0.5 * z.max() / levels + REF_HALF_LEVEL,
                         touched, ref_touched, encoding)


def test_sample_style_capture_calibrates_rig_and_depth(renders, ref, ref_touched):
    """8-bit relative depth without cameras.json (like the sample): distance, field of view and
    per-view scales are estimated; the gauge (object's longest side = 1) is the render's own
    normalisation, so the result is directly comparable with the reference."""
    src = renders.sample_style
    cap = load_capture(src)
    cal = cap.calibration
    assert cap.depth_encoding == "relative8" and cal.method == "full"
    assert cal.depth_model in ("proportional", "affine")
    assert cal.distance == pytest.approx(DEFAULT_DISTANCE, rel=0.02)
    assert cal.fov_y_degrees == pytest.approx(DEFAULT_FOV_Y_DEGREES, abs=1.0)
    assert cal.fov_range_degrees[0] <= cal.fov_y_degrees <= cal.fov_range_degrees[1]
    assert cal.consistency["outlier_fraction"] < 0.02
    for n, v in cap.views.items():
        assert np.linalg.norm(v.camera.position) == pytest.approx(cal.distance)
        assert v.camera.fov_y_degrees == pytest.approx(cal.fov_y_degrees)
        assert v.mask_source == "depth"
    touched = {n: speck_touched(raw_depth(src, n)) for n in VIEW_NAMES}
    # as for relative depth with known cameras: the distance and field of view are pinned by the
    # same silhouettes, so every view's surface is placed to within 4 depth-pixel footprints
    assert_depth_matches(cap, ref, lambda n, z: 4 * z / F_DEPTH + 0.5 * z.max() / 255 + REF_HALF_LEVEL,
                         touched, ref_touched, "sample style")


# ── the real sample ──────────────────────────────────────────────────────────────────────

def test_sneaker_sample_loads_and_calibrates(sneaker, sneaker_dir):
    cap = sneaker
    assert cap.layout == "six_views" and cap.image_size == 2048 and cap.depth_size == 1024
    assert cap.depth_encoding == "relative8"
    assert cap.ignored_files == ["SOURCE.txt"]
    cal = cap.calibration
    assert cal.method == "full" and cal.depth_model in ("proportional", "affine")
    assert cal.candidates and cal.candidates[0]["model"] == "proportional"
    assert math.isfinite(cal.distance) and cal.distance > 0.5
    assert 10.0 < cal.fov_y_degrees < 90.0
    assert cal.fov_range_degrees[0] <= cal.fov_y_degrees <= cal.fov_range_degrees[1]
    assert cal.consistency["outlier_fraction"] < 0.02
    assert all(pv["outlier_fraction"] < 0.05 for pv in cal.consistency["per_view"].values())
    summary = json.loads(json.dumps(cap.summary()))
    assert summary["calibration"]["distance"] == pytest.approx(cal.distance)
    assert summary["calibration"]["fov_y_degrees"] == pytest.approx(cal.fov_y_degrees)
    for n, v in cap.views.items():
        assert v.mask_source == "depth" and v.image.shape == (2048, 2048, 3)
        assert np.linalg.norm(v.camera.position) == pytest.approx(cal.distance)
        assert v.camera.fov_y_degrees == pytest.approx(cal.fov_y_degrees)
        assert cal.depth_scale[n]["a"] > 0
        z = v.depth[v.depth > 0]
        assert z.min() > 0 and z.max() < 2 * cal.distance  # in front of the camera, not behind the object
    # the gauge: the calibrated object has a bounding box of longest side 1
    pts = cap.surface_points(per_view=20000)
    assert (pts.max(axis=0) - pts.min(axis=0)).max() == pytest.approx(1.0, abs=0.02)


def test_sneaker_specks_are_removed(sneaker, sneaker_dir):
    """The sample has isolated specks: small foreground islands and single outlier pixels."""
    islands = replaced = 0
    for n, v in sneaker.views.items():
        raw = np.asarray(Image.open(sneaker_dir / "depth_renders" / f"{n}.png"))
        counts = sneaker.cleaning[n]
        raw_fg, fg = raw > 0, v.depth > 0
        assert not (fg & ~raw_fg).any()  # nothing added
        assert (raw_fg & ~fg).sum() == counts["island_pixels_removed"]
        eight = np.ones((3, 3), bool)
        n_raw, n_loaded = ndi.label(raw_fg, eight)[1], ndi.label(fg, eight)[1]
        assert n_raw - n_loaded == counts["islands_removed"]
        # what is left is the object: no component both under 200 px and under 0.5 % of the largest
        sizes = np.bincount(ndi.label(fg, eight)[0].ravel())[1:]
        assert ((sizes >= 200) | (sizes >= 0.005 * sizes.max())).all()
        islands += counts["islands_removed"]
        replaced += counts["outlier_pixels_replaced"]
    assert islands >= 1 and replaced >= 1


# ── inspect_capture ──────────────────────────────────────────────────────────────────────

def test_inspect_accepts_good_captures(spot_small, sneaker_dir, renders, ref, tmp_path):
    m = inspect_capture(spot_small.capture)
    assert isinstance(m, CaptureManifest)
    assert m.summary() == {"layout": "six_views", "views": sorted(VIEW_NAMES), "image_size": 512,
                           "depth_size": DEPTH_SIZE, "depth_bits": 16, "depth_encoding": "linear16",
                           "cameras_json": True, "ignored_files": []}
    s = inspect_capture(sneaker_dir).summary()
    assert (s["image_size"], s["depth_size"], s["depth_bits"], s["depth_encoding"], s["cameras_json"]) == \
        (2048, 1024, 8, "relative8", False)
    t = inspect_capture(transforms_zip(tmp_path / "t.zip", renders.rgba)).summary()
    assert t["layout"] == "transforms" and len(t["views"]) == 6 and t["depth_encoding"] is None
    # a manifest is loaded without reading the archive again
    assert_same_capture(load_capture(m), ref)


def test_inspect_reads_headers_only(spot_small, tmp_path):
    """Broken pixel data behind a valid header passes inspection and fails only when decoded."""
    data = bytearray(member(spot_small.capture, "multi_views/left.png"))
    start = data.index(b"IDAT") + 100
    data[start:start + 200] = bytes(200)
    src = rezip(spot_small.capture, tmp_path / "broken.zip", replace={"multi_views/left.png": bytes(data)})
    assert inspect_capture(src).summary()["views"] == sorted(VIEW_NAMES)
    with pytest.raises(CaptureError) as info:
        load_capture(src)
    assert info.value.code == "UNREADABLE_IMAGE" and "multi_views/left.png" in info.value.message


def _bad(spot_small, tmp_path, kind):
    src = spot_small.capture
    if kind == "not-a-zip":
        (tmp_path / "x.zip").write_bytes(member(src, "multi_views/front.png"))
        return tmp_path / "x.zip"
    if kind == "missing-view":
        return rezip(src, tmp_path / "x.zip", drop=("multi_views/back.png",))
    if kind == "unknown-view":
        return rezip(src, tmp_path / "x.zip", rename={"multi_views/back.png": "multi_views/rear.png"})
    if kind == "size-mismatch":
        small = np.asarray(Image.open(io.BytesIO(member(src, "multi_views/back.png"))).resize((256, 256)))
        return rezip(src, tmp_path / "x.zip", replace={"multi_views/back.png": png_bytes(small)})
    if kind == "bad-cameras":
        return rezip(src, tmp_path / "x.zip", replace={"cameras.json": b'{"views": {"front": {"fov_y_degrees": 0}}}'})
    if kind == "eight-bit-linear16":
        d8 = {f"depth_renders/{n}.png": png_bytes((raw_depth(src, n) >> 8).astype(np.uint8)) for n in VIEW_NAMES}
        return rezip(src, tmp_path / "x.zip", replace=d8)
    if kind == "too-many-files":
        return rezip(src, tmp_path / "x.zip", add={f"extra/{i}.txt": b"x" for i in range(60)})
    raise ValueError(kind)


@pytest.mark.parametrize("kind,code", [
    ("not-a-zip", "NOT_A_ZIP"), ("missing-view", "MISSING_VIEW"), ("unknown-view", "UNKNOWN_VIEW"),
    ("size-mismatch", "SIZE_MISMATCH"), ("bad-cameras", "BAD_CAMERAS_JSON"),
    ("eight-bit-linear16", "BAD_CAMERAS_JSON"), ("too-many-files", "TOO_MANY_FILES"),
])
def test_inspect_rejects_like_load(kind, code, spot_small, tmp_path):
    src = _bad(spot_small, tmp_path, kind)
    codes = []
    for call in (inspect_capture, load_capture):
        with pytest.raises(CaptureError) as info:
            call(src)
        codes.append(info.value.code)
    assert codes == [code, code]


# ── transforms.json captures ─────────────────────────────────────────────────────────────

def test_transforms_json_capture(renders, tmp_path):
    frame = {"back": {"file_path": "./images/back"}}  # "./" and a missing extension are accepted
    src = transforms_zip(tmp_path / "t.zip", renders.rgba, frame=frame, prefix="",
                         extra={"__MACOSX/._transforms.json": b"\x00\x05\x16\x07"})
    cap = load_capture(src)
    assert cap.layout == "transforms" and list(cap.views) == list(VIEW_NAMES)
    assert cap.calibration is None and cap.depth_encoding is None and not cap.has_depth
    assert cap.ignored_files == ["__MACOSX/._transforms.json"]
    f = 0.5 * 256 / math.tan(math.radians(DEFAULT_FOV_Y_DEGREES) / 2)
    for n, v in cap.views.items():
        rgba = np.asarray(Image.open(io.BytesIO(member(renders.rgba, f"multi_views/{n}.png"))))
        assert v.mask_source == "alpha" and v.depth is None
        np.testing.assert_array_equal(v.mask, rgba[..., 3] > 127)
        np.testing.assert_array_equal(v.image, rgba[..., :3])
        np.testing.assert_allclose(v.camera.camera_to_world, rig_camera(n, size=256).camera_to_world, atol=1e-12)
        assert (v.camera.fx, v.camera.fy, v.camera.cx, v.camera.cy) == pytest.approx((f, f, 128, 128))


def test_transforms_json_intrinsics_and_depth(renders, ref, tmp_path):
    """fl_x/fl_y/cx/cy instead of camera_angle_x, an enclosing folder, and depth files in millimetres
    (depth_unit_scale_factor 0.001, the instant-ngp default): depth to half a millimetre."""
    views = ("front", "left", "top")  # three views are enough
    f = 0.5 * 256 / math.tan(math.radians(20.0))
    mm = {n: np.where(ref.views[n].depth > 0, np.round(ref.views[n].depth * 1000.0), 0).astype(np.uint16)
          for n in views}
    frame = {n: {"depth_file_path": f"depth/{n}.png"} for n in views}
    extra = {f"scan/depth/{n}.png": png_bytes(mm[n]) for n in views}
    src = transforms_zip(tmp_path / "t.zip", renders.rgba, views, prefix="scan/", frame=frame, extra=extra,
                         doc={"camera_angle_x": ..., "fl_x": f, "fl_y": f, "cx": 128.0, "cy": 128.5})
    cap = load_capture(src)
    assert list(cap.views) == list(views) and cap.has_depth and cap.depth_encoding == "linear"
    for n, v in cap.views.items():
        assert (v.camera.fx, v.camera.fy, v.camera.cx, v.camera.cy) == (f, f, 128.0, 128.5)
        assert v.mask_source == "alpha"
        keep = (ref.views[n].depth > 0) & ~speck_touched(mm[n])
        np.testing.assert_array_equal(v.depth > 0, ref.views[n].depth > 0)
        assert np.abs(v.depth - ref.views[n].depth)[keep].max() <= 0.5e-3 + 1e-6


def test_transforms_json_needs_three_views(renders, tmp_path):
    assert len(load_capture(transforms_zip(tmp_path / "three.zip", renders.rgba, ("front", "left", "top"))).views) == 3
    src = transforms_zip(tmp_path / "two.zip", renders.rgba, ("front", "left"))
    for call in (inspect_capture, load_capture):
        with pytest.raises(CaptureError) as info:
            call(src)
        assert info.value.code == "TOO_FEW_VIEWS" and info.value.details == {"count": 2, "minimum": 3}
