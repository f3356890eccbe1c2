"""Parsing cameras.json and transforms.json into cameras, with errors that name the key.

cameras.json (shared/spec/input-format.md) overrides the default rig per view and states
the depth encoding; every key is optional and a missing one keeps its default. A wrong
type or an impossible value (fov outside (0, 180), near ≥ far, a singular or non-rigid
matrix) raises :class:`BadCameras` with the JSON path of the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .archive import ALIASES
from .camera import VIEW_NAMES
from .errors import BadCameras

DEPTH_KINDS = ("planar", "radial")
DEPTH_ENCODINGS = ("linear16", "linear8", "relative8", "relative16", "inverse16")


@dataclass(frozen=True)
class ViewCameraSpec:
    """What cameras.json says about one view; None fields keep the default rig's value."""

    camera_to_world: np.ndarray | None = None
    fov_y_degrees: float | None = None
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy in RGB-view pixels


@dataclass(frozen=True)
class DepthSpec:
    """How depth values map to distances. ``encoding`` None means: decide from the PNG bit depth."""

    kind: str = "planar"
    encoding: str | None = None
    near: float | None = None
    far: float | None = None


@dataclass(frozen=True)
class CameraFile:
    views: dict
    depth: DepthSpec


def _fail(file: str, key: str, reason: str):
    raise BadCameras(file=file, key=key, reason=reason)


def _number(value, file: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(file, key, f"expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        _fail(file, key, f"expected a finite number, got {value!r}")
    return float(value)


def parse_matrix(value, file: str, key: str) -> np.ndarray:
    """A 4×4 rigid camera-to-world matrix (rotation orthonormal, det +1, last row 0 0 0 1)."""
    if not isinstance(value, list) or len(value) != 4 or not all(isinstance(r, list) and len(r) == 4 for r in value):
        _fail(file, key, "expected a 4×4 list of lists of numbers")
    m = np.array([[_number(x, file, f"{key}[{i}][{j}]") for j, x in enumerate(row)] for i, row in enumerate(value)])
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        _fail(file, key, f"the last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    rot = m[:3, :3]
    det = float(np.linalg.det(rot))
    if abs(det) < 1e-9:
        _fail(file, key, "the matrix is singular")
    scale = abs(det) ** (1 / 3)
    if not np.allclose(rot.T @ rot / scale**2, np.eye(3), atol=1e-3) or det < 0:
        _fail(file, key, "the rotation part must be a rotation (orthonormal columns, determinant +1)")
    if not np.isclose(scale, 1.0, atol=1e-3):
        _fail(file, key, f"the rotation part is scaled by {scale:.4g}; camera matrices must not scale")
    return m


def parse_cameras_json(data: bytes, file: str = "cameras.json") -> CameraFile:
    """Parse and validate cameras.json."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        _fail(file, "(file)", f"not UTF-8 text ({exc.reason})")
    except json.JSONDecodeError as exc:
        _fail(file, "(file)", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack: hostile, not a camera file
        _fail(file, "(file)", "JSON nested too deeply")
    if not isinstance(doc, dict):
        _fail(file, "(top level)", f"expected a JSON object, got {type(doc).__name__}")
    up = doc.get("world_up", "+y")
    if up not in ("+y", "+Y"):
        _fail(file, "world_up", f"only '+y' is supported, got {up!r}")
    views_doc = doc.get("views", {})
    if not isinstance(views_doc, dict):
        _fail(file, "views", f"expected an object keyed by view name, got {type(views_doc).__name__}")
    views = {}
    for raw_name, spec in views_doc.items():
        name = ALIASES.get(raw_name, raw_name)
        key = f"views.{raw_name}"
        if name not in VIEW_NAMES:
            _fail(file, key, f"unknown view; use one of {', '.join(VIEW_NAMES)}")
        if not isinstance(spec, dict):
            _fail(file, key, f"expected an object, got {type(spec).__name__}")
        c2w = parse_matrix(spec["camera_to_world"], file, f"{key}.camera_to_world") if "camera_to_world" in spec else None
        fov = None
        if "fov_y_degrees" in spec:
            fov = _number(spec["fov_y_degrees"], file, f"{key}.fov_y_degrees")
            if not 0 < fov < 180:
                _fail(file, f"{key}.fov_y_degrees", f"must be between 0 and 180 degrees, got {fov}")
        intr = None
        present = [k for k in ("fx", "fy", "cx", "cy") if k in spec]
        if present:
            if len(present) != 4:
                missing = sorted({"fx", "fy", "cx", "cy"} - set(present))
                _fail(file, key, f"fx, fy, cx, cy come together; missing {', '.join(missing)}")
            intr = tuple(_number(spec[k], file, f"{key}.{k}") for k in ("fx", "fy", "cx", "cy"))
            if intr[0] <= 0 or intr[1] <= 0:
                _fail(file, f"{key}.fx", "focal lengths must be positive")
            if fov is not None:
                _fail(file, key, "give either fov_y_degrees or fx, fy, cx, cy, not both")
        views[name] = ViewCameraSpec(c2w, fov, intr)
    depth_doc = doc.get("depth", {})
    if not isinstance(depth_doc, dict):
        _fail(file, "depth", f"expected an object, got {type(depth_doc).__name__}")
    kind = depth_doc.get("kind", "planar")
    if kind not in DEPTH_KINDS:
        _fail(file, "depth.kind", f"{kind!r} is not one of {', '.join(DEPTH_KINDS)}")
    encoding = depth_doc.get("encoding")
    if encoding is not None and encoding not in DEPTH_ENCODINGS:
        _fail(file, "depth.encoding", f"{encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)}")
    near = _number(depth_doc["near"], file, "depth.near") if "near" in depth_doc else None
    far = _number(depth_doc["far"], file, "depth.far") if "far" in depth_doc else None
    if near is not None and near < 0:
        _fail(file, "depth.near", f"must not be negative, got {near}")
    if near is not None and far is not None and near >= far:
        _fail(file, "depth.near", f"near ({near}) must be smaller than far ({far})")
    if encoding == "inverse16" and near == 0:
        _fail(file, "depth.near", "inverse16 needs near > 0")
    return CameraFile(views, DepthSpec(kind, encoding, near, far))


@dataclass(frozen=True)
class Frame:
    """One view of a transforms.json capture."""

    name: str
    file_path: str
    camera_to_world: np.ndarray
    intrinsics: tuple[float, float, float, float] | None  # fx, fy, cx, cy; None: from camera_angle_x
    depth_file_path: str | None


@dataclass(frozen=True)
class TransformsFile:
    frames: list
    camera_angle_x: float | None
    intrinsics: tuple[float, float, float, float] | None
    depth_scale: float


def parse_transforms_json(data: bytes, file: str = "transforms.json") -> TransformsFile:
    """Parse a NeRF / instant-ngp / nerfstudio transforms.json (see the spec's extension section)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(file, "(file)", f"invalid JSON: {exc}")
    except RecursionError:
        _fail(file, "(file)", "JSON nested too deeply")
    if not isinstance(doc, dict):
        _fail(file, "(top level)", "expected a JSON object")

    def intrinsics_of(d: dict, key: str):
        if "fl_x" in d:
            fx = _number(d["fl_x"], file, f"{key}fl_x")
            fy = _number(d.get("fl_y", d["fl_x"]), file, f"{key}fl_y")
            if fx <= 0 or fy <= 0:
                _fail(file, f"{key}fl_x", "focal lengths must be positive")
            if "cx" not in d or "cy" not in d:
                return (fx, fy, None, None)
            return (fx, fy, _number(d["cx"], file, f"{key}cx"), _number(d["cy"], file, f"{key}cy"))
        return None

    angle = None
    if "camera_angle_x" in doc:
        angle = _number(doc["camera_angle_x"], file, "camera_angle_x")
        if not 0 < angle < math.pi:
            _fail(file, "camera_angle_x", f"must be between 0 and π radians, got {angle}")
    intr = intrinsics_of(doc, "")
    if angle is None and intr is None:
        _fail(file, "camera_angle_x", "give camera_angle_x or fl_x/fl_y/cx/cy")
    frames_doc = doc.get("frames")
    if not isinstance(frames_doc, list) or not frames_doc:
        _fail(file, "frames", "expected a non-empty list of frames")
    frames, names = [], set()
    for i, fr in enumerate(frames_doc):
        key = f"frames[{i}]"
        if not isinstance(fr, dict):
            _fail(file, key, "expected an object")
        path = fr.get("file_path")
        if not isinstance(path, str) or not path:
            _fail(file, f"{key}.file_path", "expected a relative path string")
        if "transform_matrix" not in fr:
            _fail(file, f"{key}.transform_matrix", "missing")
        c2w = parse_matrix(fr["transform_matrix"], file, f"{key}.transform_matrix")
        depth_path = fr.get("depth_file_path")
        if depth_path is not None and not isinstance(depth_path, str):
            _fail(file, f"{key}.depth_file_path", "expected a relative path string")
        name = path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or f"frame{i:03d}"
        if name in names:
            name = f"{name}_{i:03d}"
        names.add(name)
        frames.append(Frame(name, path, c2w, intrinsics_of(fr, f"{key}.") or None, depth_path))
    scale = _number(doc.get("depth_unit_scale_factor", 1e-3), file, "depth_unit_scale_factor")
    if scale <= 0:
        _fail(file, "depth_unit_scale_factor", "must be positive")
    return TransformsFile(frames, angle, intr, scale)
