"""A loaded capture: views, masks, metric depth and cameras, all in one world frame.

Two steps, so that a service can refuse bad uploads quickly:

- :func:`inspect_capture` checks everything that needs no pixel decoding: the archive,
  file names, image headers (format, size, pixel format), cameras.json. Milliseconds.
- :func:`load_capture` decodes the images, cleans depth specks, converts depth to planar z
  in world units and, where the capture does not say, estimates the camera distance,
  field of view and depth scales (:mod:`meshforge.calibration`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import calibration as calib
from .archive import CaptureFiles, Limits, read_capture_files
from .camera import DEFAULT_DISTANCE, DEFAULT_FOV_Y_DEGREES, VIEW_NAMES, Camera, rig_camera
from .camerafile import CameraFile, DepthSpec, TransformsFile, parse_cameras_json, parse_transforms_json
from .depth import METRIC, RELATIVE, default_encoding, metric_depth, radial_to_planar, remove_specks
from .errors import BadCameras, EmptyDepth, MissingView, SizeMismatch, TooFewViews, UnreadableImage
from .images import ImageHeader, decode_depth, decode_view, inspect_image
from .progress import Progress, silent


@dataclass
class View:
    """One view of the object.

    Attributes:
        name: ``front`` ... ``bottom`` (or a frame name for transforms.json captures).
        image: (H, W, 3) uint8 sRGB.
        mask: (H, W) bool object mask at image resolution (from alpha, else from depth).
        depth: (S, S) float32 planar z in world units, 0 = background; None if the capture has none.
        camera: the view's camera at image resolution.
        mask_source: ``"alpha"`` or ``"depth"``.
        depth_step: world units of one raw depth level (the data's depth resolution), 0 if unknown.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray | None
    camera: Camera
    mask_source: str = "depth"
    depth_step: float = 0.0

    @property
    def depth_camera(self) -> Camera:
        """The camera at the depth map's resolution (same rays, coarser pixels)."""
        h, w = self.depth.shape
        return self.camera.scaled(w, h)

    @property
    def depth_mask(self) -> np.ndarray:
        return self.depth > 0


@dataclass
class Capture:
    """Views of one object with everything a reconstructor needs.

    Attributes:
        views: name -> :class:`View`, in the capture's order.
        layout: ``"six_views"`` or ``"transforms"``.
        depth_encoding: the encoding the depth PNGs were read with (None without depth).
        calibration: what was estimated and how consistent the views are.
        source: file or directory it was loaded from.
        ignored_files: archive members that were skipped.
        cleaning: view -> counts of depth specks removed.
        warnings: things a user should know.
    """

    views: dict
    layout: str = "six_views"
    depth_encoding: str | None = None
    calibration: calib.Calibration | None = None
    source: str = ""
    ignored_files: list = field(default_factory=list)
    cleaning: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def image_size(self) -> int:
        return next(iter(self.views.values())).image.shape[0]

    @property
    def depth_size(self) -> int | None:
        v = next(iter(self.views.values()))
        return None if v.depth is None else v.depth.shape[0]

    @property
    def has_depth(self) -> bool:
        return all(v.depth is not None for v in self.views.values())

    @property
    def depth_estimated(self) -> bool:
        """Whether the depth was scaled by meshforge's calibration (relative depth, e.g. 8-bit
        renders) rather than given in world units."""
        return self.calibration is not None and self.calibration.method in ("full", "depth_scale")

    def without(self, *names: str) -> "Capture":
        """The same capture with some views left out (for held-out scoring)."""
        unknown = set(names) - set(self.views)
        if unknown:
            raise KeyError(f"no view(s) {sorted(unknown)} in this capture")
        return replace(self, views={k: v for k, v in self.views.items() if k not in names})

    def surface_points(self, per_view: int | None = None, seed: int = 0) -> np.ndarray:
        """(N, 3) float64 world points back-projected from every view's depth map."""
        rng = np.random.default_rng(seed)
        pts = []
        for v in self.views.values():
            if v.depth is None:
                continue
            rows, cols = np.nonzero(v.depth > 0)
            if per_view is not None and len(rows) > per_view:
                pick = rng.choice(len(rows), per_view, replace=False)
                rows, cols = rows[pick], cols[pick]
            uv = np.stack([cols + 0.5, rows + 0.5], axis=1)
            pts.append(v.depth_camera.unproject(uv, v.depth[rows, cols]))
        return np.concatenate(pts) if pts else np.zeros((0, 3))

    def summary(self) -> dict:
        """JSON-serialisable description for reports."""
        return {
            "source": Path(self.source).name if self.source else "",
            "layout": self.layout,
            "views": list(self.views),
            "image_size": self.image_size,
            "depth_size": self.depth_size,
            "depth_encoding": self.depth_encoding,
            "mask_source": {k: v.mask_source for k, v in self.views.items()},
            "cameras": {k: v.camera.to_dict() for k, v in self.views.items()},
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "depth_cleaning": self.cleaning,
            "ignored_files": self.ignored_files,
            "warnings": self.warnings,
        }


@dataclass
class CaptureManifest:
    """What :func:`inspect_capture` found, before decoding pixels."""

    files: CaptureFiles
    headers: dict                    # (kind, view) -> ImageHeader
    camera_file: CameraFile | None
    transforms: TransformsFile | None
    depth_encoding: str | None

    @property
    def layout(self) -> str:
        return "transforms" if self.transforms is not None else "six_views"

    def summary(self) -> dict:
        views = sorted({v for (k, v) in self.headers if k == "view"})
        any_view = next((h for (k, _), h in self.headers.items() if k == "view"), None)
        any_depth = next((h for (k, _), h in self.headers.items() if k == "depth"), None)
        return {"layout": self.layout, "views": views,
                "image_size": any_view.width if any_view else None,
                "depth_size": any_depth.width if any_depth else None,
                "depth_bits": any_depth.bits if any_depth else None,
                "depth_encoding": self.depth_encoding,
                "cameras_json": self.files.cameras is not None,
                "ignored_files": self.files.ignored}


# ── inspection ───────────────────────────────────────────────────────────────────────────

def _check_same_size(headers: dict, kind: str, label: str) -> None:
    items = [(v, h) for (k, v), h in headers.items() if k == kind]
    if not items:
        return
    first_view, first = items[0]
    for view, h in items[1:]:
        if h.width != first.width:
            raise SizeMismatch(file=h.file, size=h.width, other=first.file, other_size=first.width, kind=label)


#: image bytes kept per member by ``inspect_capture(headers_only=True)``: PNG headers are in the first
#: 33 bytes; a JPEG's frame header follows its metadata segments (EXIF and XMP ≤ 64 KiB each)
HEADER_BYTES = 1 << 20


def inspect_capture(source: str | Path | CaptureFiles, limits: Limits = Limits(),
                    name: str | None = None, *, headers_only: bool = False) -> CaptureManifest:
    """Check a capture without decoding its pixels; raises a :class:`CaptureError` subclass.

    ``name`` is how error messages call the archive (e.g. the name it was uploaded under).
    ``headers_only``: every member is still read through (CRC, sizes), but only the first
    ``HEADER_BYTES`` of each image are kept, so memory does not grow with the images' size; the
    manifest can then describe the capture but not be loaded (what a service needs before
    accepting an upload).
    """
    if headers_only and not isinstance(source, CaptureFiles):
        files = read_capture_files(source, limits, name, keep_bytes=HEADER_BYTES)
        try:
            return _inspect(files, limits)
        except UnreadableImage as exc:
            cut = [n for n, d in [*files.views.values(), *files.depths.values(), *files.frames.values()]
                   if len(d) >= HEADER_BYTES]
            if exc.details.get("file") not in cut:
                raise
            # a JPEG with more than HEADER_BYTES of metadata before its frame header: read it whole
    files = source if isinstance(source, CaptureFiles) else read_capture_files(source, limits, name)
    return _inspect(files, limits)


def _inspect(files: CaptureFiles, limits: Limits) -> CaptureManifest:
    headers: dict = {}
    if files.transforms is not None:
        tf = parse_transforms_json(files.transforms[1], files.transforms[0])
        for frame in tf.frames:
            name, data = _frame_file(files, frame.file_path)
            headers[("view", frame.name)] = inspect_image(name, data, "view", limits)
            if frame.depth_file_path:
                dname, ddata = _frame_file(files, frame.depth_file_path)
                headers[("depth", frame.name)] = inspect_image(dname, ddata, "depth", limits)
        if len(tf.frames) < 3:
            raise TooFewViews(count=len(tf.frames), minimum=3)
        _check_same_size(headers, "view", "views")
        _check_same_size(headers, "depth", "depth renders")
        return CaptureManifest(files, headers, None, tf, "linear" if any(k == "depth" for k, _ in headers) else None)
    for view, (name, data) in files.views.items():
        headers[("view", view)] = inspect_image(name, data, "view", limits)
    for view, (name, data) in files.depths.items():
        headers[("depth", view)] = inspect_image(name, data, "depth", limits)
    _check_same_size(headers, "view", "views")
    _check_same_size(headers, "depth", "depth renders")
    bits = {h.bits for (k, _), h in headers.items() if k == "depth"}
    if len(bits) > 1:
        h8 = next(h for (k, _), h in headers.items() if k == "depth" and h.bits == 8)
        h16 = next(h for (k, _), h in headers.items() if k == "depth" and h.bits == 16)
        raise SizeMismatch(f"{h8.file} is an 8-bit PNG but {h16.file} is 16-bit; all depth renders must have one "
                           f"bit depth (8-bit relative or 16-bit metric depth)", file=h8.file, size=h8.width,
                           other=h16.file, other_size=h16.width, kind="depth renders")
    bit = bits.pop()
    camfile = parse_cameras_json(files.cameras[1], files.cameras[0]) if files.cameras else None
    encoding = (camfile.depth.encoding if camfile and camfile.depth.encoding else None) or default_encoding(bit)
    needs = 16 if encoding.endswith("16") else 8
    if needs != bit:
        raise BadCameras(file=files.cameras[0] if files.cameras else "cameras.json", key="depth.encoding",
                         reason=f"{encoding} needs {needs}-bit depth PNGs, but the depth renders are {bit}-bit")
    return CaptureManifest(files, headers, camfile, None, encoding)


def _frame_file(files: CaptureFiles, path: str) -> tuple[str, bytes]:
    """Find a transforms.json frame's image among the archive members (extension optional)."""
    clean = path.removeprefix("./")
    candidates = [clean] + [clean + ext for ext in (".png", ".jpg", ".jpeg")]
    by_lower = {k.lower(): k for k in files.frames}
    for c in candidates:
        key = by_lower.get(c.lower())
        if key is not None:
            return files.frames[key]
    raise MissingView(f"{path!r} is missing: transforms.json lists it but the capture has no such file",
                      folder=str(Path(clean).parent), view=Path(clean).name, expected=f"the file {path!r}",
                      missing=[path])


# ── loading ──────────────────────────────────────────────────────────────────────────────

def load_capture(source: str | Path | CaptureManifest, limits: Limits = Limits(),
                 progress: Progress | None = None) -> Capture:
    """Load a capture from a ZIP, a directory or a manifest, calibrating what it does not state.

    Raises a :class:`meshforge.errors.CaptureError` subclass naming the file, view or key
    that is wrong.
    """
    progress = progress or silent()
    manifest = source if isinstance(source, CaptureManifest) else inspect_capture(source, limits)
    if not manifest.files.complete:
        raise ValueError("this manifest kept only the images' headers (inspect_capture(headers_only=True)); "
                         "load the capture from its file")
    progress.update(0.05, "reading the capture")
    if manifest.transforms is not None:
        return _load_transforms(manifest, progress)
    return _load_six_views(manifest, progress)


def _decode_all(manifest: CaptureManifest, names: list[str]) -> tuple[dict, dict]:
    files = manifest.files

    def view_job(n):
        return n, decode_view(manifest.headers[("view", n)], files.views[n][1])

    def depth_job(n):
        return n, decode_depth(manifest.headers[("depth", n)], files.depths[n][1])

    # PNG decoding releases the GIL: two threads halve the wall time on two cores
    with ThreadPoolExecutor(max_workers=2) as pool:
        views = dict(pool.map(view_job, names))
        depths = dict(pool.map(depth_job, names))
    return views, depths


def _upsample_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square mask, keeping pixel (u, v) at its relative position."""
    idx = ((np.arange(size) + 0.5) * mask.shape[0] / size).astype(np.int64)
    return mask[np.ix_(idx, idx)]


def _cameras_from_file(camfile: CameraFile | None, size: int) -> tuple[dict, bool]:
    """view -> camera at image resolution, and whether the file actually stated cameras."""
    stated = bool(camfile and camfile.views)
    cams = {}
    for view in VIEW_NAMES:
        spec = camfile.views.get(view) if camfile else None
        c2w = spec.camera_to_world if spec is not None and spec.camera_to_world is not None else \
            rig_camera(view, DEFAULT_DISTANCE, DEFAULT_FOV_Y_DEGREES, size).camera_to_world
        if spec is not None and spec.intrinsics is not None:
            fx, fy, cx, cy = spec.intrinsics
            cams[view] = Camera(c2w, fx, fy, cx, cy, size, size)
        else:
            fov = spec.fov_y_degrees if spec is not None and spec.fov_y_degrees is not None else DEFAULT_FOV_Y_DEGREES
            cams[view] = Camera.from_fov(c2w, fov, size)
    return cams, stated


def _load_six_views(manifest: CaptureManifest, progress: Progress) -> Capture:
    names = list(VIEW_NAMES)
    decoded, raw = _decode_all(manifest, names)
    progress.update(0.3, "cleaning depth")
    files = manifest.files
    cleaning, masks = {}, {}
    for n in names:
        if not (raw[n] > 0).any():
            raise EmptyDepth(file=files.depths[n][0])
        raw[n], cleaning[n] = remove_specks(raw[n])
        masks[n] = raw[n] > 0
    size = manifest.headers[("view", names[0])].width
    dsize = manifest.headers[("depth", names[0])].width
    cams, stated = _cameras_from_file(manifest.camera_file, size)
    depth_cams = {n: c.scaled(dsize) for n, c in cams.items()}
    spec = manifest.camera_file.depth if manifest.camera_file else DepthSpec()
    encoding = manifest.depth_encoding
    warnings = []
    progress.update(0.4, "calibrating")
    if encoding in RELATIVE:
        if spec.kind == "radial":
            warnings.append("radial relative depth is treated as planar: its scale is unknown anyway")
        if stated:
            cal = calib.estimate_scales(masks, raw, depth_cams)
        else:
            cal = calib.estimate_rig(masks, raw)
            cams = {n: rig_camera(n, cal.distance, cal.fov_y_degrees, size) for n in names}
            depth_cams = {n: c.scaled(dsize) for n, c in cams.items()}
        depth = {n: np.where(masks[n], cal.depth_scale[n]["a"] * raw[n] + cal.depth_scale[n]["b"], 0.0)
                 .astype(np.float32) for n in names}
        levels = {n: float(cal.depth_scale[n]["a"]) for n in names}
    else:
        depth, levels = {}, {}
        for n in names:
            d = float(np.linalg.norm(cams[n].position))
            near = spec.near if spec.near is not None else d - 1.0
            far = spec.far if spec.far is not None else d + 1.0
            if near < 0 or near >= far:
                raise BadCameras(file="cameras.json", key="depth.near",
                                 reason=f"the default near/far ({near:g}, {far:g}) of view {n} are not usable; state them")
            z = metric_depth(raw[n], encoding, near, far)
            if spec.kind == "radial":
                z = np.where(masks[n], radial_to_planar(z, depth_cams[n]), 0.0).astype(np.float32)
            depth[n] = z
            levels[n] = (far - near) / (65534.0 if encoding.endswith("16") else 254.0)
            if encoding == "inverse16":
                levels[n] = far * far * (1 / near - 1 / far) / 65534.0  # coarsest step, at the far end
        cal = calib.check_known(masks, depth, depth_cams, levels)
    progress.update(0.9, "building views")
    views = {}
    for n in names:
        rgb, alpha = decoded[n]
        if alpha is not None:
            mask, source = alpha, "alpha"
        else:
            mask, source = _upsample_mask(masks[n], size), "depth"
        views[n] = View(n, rgb, mask, depth[n], cams[n], source, levels[n])
    progress.update(1.0)
    return Capture(views, "six_views", encoding, cal, files.source, list(files.ignored), cleaning, warnings)


def _load_transforms(manifest: CaptureManifest, progress: Progress) -> Capture:
    tf = manifest.transforms
    files = manifest.files
    views, warnings = {}, []
    for i, frame in enumerate(tf.frames):
        progress.update(0.1 + 0.8 * i / len(tf.frames), "reading frames")
        header = manifest.headers[("view", frame.name)]
        rgb, alpha = decode_view(header, _frame_file(files, frame.file_path)[1])
        w = h = header.width
        if frame.intrinsics or tf.intrinsics:
            fx, fy, cx, cy = frame.intrinsics or tf.intrinsics
            cx = w / 2 if cx is None else cx
            cy = h / 2 if cy is None else cy
            cam = Camera(frame.camera_to_world, fx, fy, cx, cy, w, h)
        else:
            f = 0.5 * w / np.tan(tf.camera_angle_x / 2)
            cam = Camera(frame.camera_to_world, f, f, w / 2, h / 2, w, h)
        depth = None
        if frame.depth_file_path:
            dname, ddata = _frame_file(files, frame.depth_file_path)
            raw = decode_depth(manifest.headers[("depth", frame.name)], ddata)
            raw, _ = remove_specks(raw)
            depth = (raw.astype(np.float32) * tf.depth_scale).astype(np.float32)
        if alpha is None and depth is None:
            raise UnreadableImage(file=header.file, reason="a transforms.json frame needs an alpha channel (the object "
                                                           "mask) or a depth file")
        mask = alpha if alpha is not None else _upsample_mask(depth > 0, w)
        views[frame.name] = View(frame.name, rgb, mask, depth, cam, "alpha" if alpha is not None else "depth")
    if len(views) < 3:
        raise TooFewViews(count=len(views), minimum=3)
    progress.update(1.0)
    return Capture(views, "transforms", "linear" if any(v.depth is not None for v in views.values()) else None,
                   None, files.source, list(files.ignored), {}, warnings)
