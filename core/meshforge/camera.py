"""Pinhole cameras and the capture rig of shared/spec/input-format.md.

Conventions, used everywhere in meshforge:

- World: right-handed, +Y up, the object near the origin facing +Z.
- ``camera_to_world`` is 4×4 in the OpenGL/Blender convention: the camera looks down its
  own −Z axis, +Y is image up, +X is image right (the NeRF ``transforms.json`` convention).
- Pixels: row 0 is the image top, pixel centres sit at half-integer coordinates, so the
  pixel (row i, column j) has its centre at (u, v) = (j + 0.5, i + 0.5).
- Depth is *planar* z: the distance along the camera's viewing axis, positive in front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: The six views of a capture, in the contract's order.
VIEW_NAMES: tuple[str, ...] = ("front", "back", "left", "right", "top", "bottom")

#: view name -> (unit direction from the origin to the camera, image up vector).
#: ``left`` stands on the object's left, which is world +X because the object faces +Z.
RIG_DIRECTIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "front": ((0, 0, 1), (0, 1, 0)),
    "back": ((0, 0, -1), (0, 1, 0)),
    "left": ((1, 0, 0), (0, 1, 0)),
    "right": ((-1, 0, 0), (0, 1, 0)),
    "top": ((0, 1, 0), (0, 0, 1)),
    "bottom": ((0, -1, 0), (0, 0, 1)),
}

DEFAULT_DISTANCE = 2.5
DEFAULT_FOV_Y_DEGREES = 40.0


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world (4, 4) float64 of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye - target  # the camera's +Z points away from what it looks at
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    norm = np.linalg.norm(right)
    if norm < 1e-9:
        raise ValueError("look_at: the up vector is parallel to the viewing direction")
    right /= norm
    true_up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, back, eye
    return m


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with square pixels allowed to differ (fx, fy), no distortion.

    Parameters:
        camera_to_world: (4, 4) float64, OpenGL convention (see the module docstring).
        fx, fy: focal lengths in pixels of an image of ``width`` × ``height``.
        cx, cy: principal point in pixels (image centre = width/2, height/2).
        width, height: image size in pixels.
    """

    camera_to_world: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    _world_to_camera: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        c2w = np.asarray(self.camera_to_world, dtype=np.float64)
        object.__setattr__(self, "camera_to_world", c2w)
        object.__setattr__(self, "_world_to_camera", np.linalg.inv(c2w))

    # -- construction --------------------------------------------------------
    @classmethod
    def from_fov(cls, camera_to_world, fov_y_degrees: float, width: int, height: int | None = None) -> "Camera":
        """A camera with the principal point at the image centre and a vertical field of view."""
        height = width if height is None else height
        f = 0.5 * height / math.tan(math.radians(fov_y_degrees) / 2)
        return cls(camera_to_world, f, f, width / 2, height / 2, width, height)

    def scaled(self, width: int, height: int | None = None) -> "Camera":
        """The same rays sampled by an image of another size (pixel (u, v) keeps its relative position)."""
        height = width if height is None else height
        sx, sy = width / self.width, height / self.height
        return Camera(self.camera_to_world, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    # -- properties ----------------------------------------------------------
    @property
    def world_to_camera(self) -> np.ndarray:
        return self._world_to_camera

    @property
    def position(self) -> np.ndarray:
        """(3,) float64, world frame."""
        return self.camera_to_world[:3, 3].copy()

    @property
    def forward(self) -> np.ndarray:
        """(3,) unit viewing direction in the world frame (the camera's −Z)."""
        return -self.camera_to_world[:3, 2].copy()

    @property
    def fov_y_degrees(self) -> float:
        return math.degrees(2 * math.atan(0.5 * self.height / self.fy))

    def to_dict(self) -> dict:
        return {
            "camera_to_world": self.camera_to_world.tolist(),
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "width": self.width, "height": self.height,
            "fov_y_degrees": self.fov_y_degrees,
        }

    # -- geometry ------------------------------------------------------------
    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-frame points (float64; visible points have z < 0)."""
        m = self._world_to_camera
        return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> ((N, 2) pixel coordinates (u right, v down), (N,) planar depth z).

        Points behind the camera get z <= 0 and meaningless pixel coordinates.
        """
        pc = self.to_camera(points)
        z = -pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * pc[:, 0] / z + self.cx
            v = self.cy - self.fy * pc[:, 1] / z
        return np.stack([u, v], axis=1), z

    def unproject(self, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) and planar depths (N,) -> (N, 3) world points."""
        uv = np.asarray(uv, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        x = (uv[:, 0] - self.cx) / self.fx * z
        y = (self.cy - uv[:, 1]) / self.fy * z
        pc = np.stack([x, y, -z], axis=1)
        return pc @ self.camera_to_world[:3, :3].T + self.camera_to_world[:3, 3]

    def pixel_grid_rays(self) -> np.ndarray:
        """(H, W, 3) world-frame directions through every pixel centre, scaled to planar depth 1."""
        j, i = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        d = np.stack([(j - self.cx) / self.fx, (self.cy - i) / self.fy, -np.ones_like(j)], axis=-1)
        return d @ self.camera_to_world[:3, :3].T


def rig_camera(view: str, distance: float = DEFAULT_DISTANCE, fov_y_degrees: float = DEFAULT_FOV_Y_DEGREES,
               size: int = 2048) -> Camera:
    """The default-rig camera of one of the six view names (shared/spec/input-format.md)."""
    direction, up = RIG_DIRECTIONS[view]
    c2w = look_at(np.asarray(direction, dtype=np.float64) * distance, up=up)
    return Camera.from_fov(c2w, fov_y_degrees, size)


def rig(distance: float = DEFAULT_DISTANCE, fov_y_degrees: float = DEFAULT_FOV_Y_DEGREES, size: int = 2048,
        views=VIEW_NAMES) -> dict[str, Camera]:
    return {v: rig_camera(v, distance, fov_y_degrees, size) for v in views}


def orbit(count: int, distance: float = DEFAULT_DISTANCE, fov_y_degrees: float = DEFAULT_FOV_Y_DEGREES,
          size: int = 512, elevation_degrees: float = 30.0, azimuth_offset_degrees: float = 45.0,
          alternate_elevation: bool = True) -> dict[str, Camera]:
    """``count`` cameras on a ring around the origin, looking at it.

    The ring starts ``azimuth_offset_degrees`` away from the front view so that no orbit
    camera coincides with a rig camera; with ``alternate_elevation`` every other camera sits
    below the equator. Used for previews and for held-out evaluation views.
    """
    cams = {}
    for i in range(count):
        az = math.radians(azimuth_offset_degrees + 360.0 * i / count)
        el = math.radians(elevation_degrees * (-1 if alternate_elevation and i % 2 else 1))
        d = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
        cams[f"orbit{i:02d}"] = Camera.from_fov(look_at(d * distance), fov_y_degrees, size)
    return cams
