"""Synthetic captures with known answers: render any textured mesh into a contract-compliant ZIP.

The mesh is first normalised (bounding box centred at the origin, longest side 1.0), then
drawn from the six rig cameras (albedo, unlit) with planar depth:

- ``style="contract"``: 16-bit metric depth (``linear16``, near = d − 1, far = d + 1) and a
  cameras.json, white background;
- ``style="sample"``: like the sample capture: 8-bit relative depth proportional to z with
  the farthest foreground pixel at 255, an off-white background, no cameras.json.

Optionally also: held-out orbit views (not inputs) for honest evaluation, and the
normalised ground-truth mesh. :func:`demo_parts` builds a small procedural object so that a
newcomer can try meshforge without any data.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .camera import DEFAULT_DISTANCE, DEFAULT_FOV_Y_DEGREES, VIEW_NAMES, orbit, rig
from .mesh import TexturedMesh, load_parts, merge, normalization
from .render import render

SAMPLE_BACKGROUND = (0.96, 0.96, 0.955)


@dataclass
class SyntheticCapture:
    """Where :func:`render_capture` wrote things."""

    capture: Path
    heldout_dir: Path | None
    ground_truth: Path | None


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def encode_depth(z: np.ndarray, encoding: str, near: float, far: float, relative_offset: float = 0.0) -> np.ndarray:
    """Planar depth (H, W) with 0 = background -> raw PNG values in ``encoding``."""
    fg = z > 0
    if encoding == "linear16":
        v = np.clip((z - near) / (far - near), 0, 1) * 65534 + 1
        return np.where(fg, np.round(v), 0).astype(np.uint16)
    if encoding == "linear8":
        v = np.clip((z - near) / (far - near), 0, 1) * 254 + 1
        return np.where(fg, np.round(v), 0).astype(np.uint8)
    if encoding == "inverse16":
        v = (1 / np.maximum(z, 1e-9) - 1 / far) / (1 / near - 1 / far) * 65534 + 1
        return np.where(fg, np.round(np.clip(v, 1, 65535)), 0).astype(np.uint16)
    if encoding in ("relative8", "relative16"):
        top = 255 if encoding == "relative8" else 65535
        z0 = relative_offset * float(z[fg].min())  # 0: proportional to z, like the sample capture
        v = top * (z - z0) / (float(z[fg].max()) - z0)
        return np.where(fg, np.maximum(1, np.round(v)), 0).astype(np.uint8 if top == 255 else np.uint16)
    raise ValueError(f"unknown depth encoding {encoding!r}")


def render_capture(mesh: str | Path | list[TexturedMesh], out_zip: str | Path, *, style: str = "contract",
                   rgb_size: int = 2048, depth_size: int = 1024, fov_y_degrees: float = DEFAULT_FOV_Y_DEGREES,
                   distance: float = DEFAULT_DISTANCE, depth_encoding: str | None = None,
                   relative_offset: float = 0.0, heldout: int = 0, heldout_dir: str | Path | None = None,
                   heldout_size: int = 512, ground_truth: str | Path | None = None,
                   alpha: bool = False) -> SyntheticCapture:
    """Render a capture of a mesh (file path or parts) into ``out_zip``.

    Parameters:
        style: ``"contract"`` or ``"sample"`` (see the module docstring).
        depth_encoding: override the style's encoding (linear16, linear8, inverse16, relative8, relative16).
        relative_offset: for relative encodings, values are proportional to z − offset·z_min
            (0 = proportional; > 0 makes an affine encoding, to exercise calibration).
        heldout: number of orbit views (30° elevation, between the rig's axes) to render into
            ``heldout_dir`` with a heldout.json of their cameras.
        ground_truth: where to write the normalised mesh (GLB, textured).
        alpha: store views as RGBA with the object mask in alpha.
    """
    parts = load_parts(mesh) if isinstance(mesh, (str, Path)) else mesh
    norm = normalization(parts)
    parts = [p.transformed(norm) for p in parts]
    if style not in ("contract", "sample"):
        raise ValueError("style must be 'contract' or 'sample'")
    encoding = depth_encoding or ("linear16" if style == "contract" else "relative8")
    background = (1.0, 1.0, 1.0) if style == "contract" else SAMPLE_BACKGROUND
    near, far = distance - 1.0, distance + 1.0
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    cams = rig(distance, fov_y_degrees, rgb_size)
    with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in VIEW_NAMES:
            colour = render(parts, cams[name], background=background)
            rgb = np.clip(colour.color * 255 + 0.5, 0, 255).astype(np.uint8)
            if alpha:
                rgb = np.concatenate([rgb, (colour.mask[..., None] > 0.5).astype(np.uint8) * 255], axis=2)
            zf.writestr(f"multi_views/{name}.png", _png(rgb))
            depth = render(parts, cams[name].scaled(depth_size)).depth
            zf.writestr(f"depth_renders/{name}.png",
                        _png(encode_depth(depth, encoding, near, far, relative_offset)))
        if style == "contract":
            zf.writestr("cameras.json", json.dumps({
                "world_up": "+y",
                "views": {n: {"camera_to_world": cams[n].camera_to_world.tolist(), "fov_y_degrees": fov_y_degrees}
                          for n in VIEW_NAMES},
                "depth": {"kind": "planar", "encoding": encoding, "near": near, "far": far},
            }, indent=1))
    held_path = None
    if heldout:
        held_path = Path(heldout_dir) if heldout_dir else out_zip.with_name(out_zip.stem + "-heldout")
        held_path.mkdir(parents=True, exist_ok=True)
        views = orbit(heldout, distance, fov_y_degrees, heldout_size)
        for name, cam in views.items():
            img = render(parts, cam, background=background).color
            Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)).save(held_path / f"{name}.png")
        (held_path / "heldout.json").write_text(json.dumps({
            "fov_y_degrees": fov_y_degrees, "background": list(background),
            "views": {n: c.camera_to_world.tolist() for n, c in views.items()}}, indent=1))
    gt_path = None
    if ground_truth:
        from .export import glb_bytes

        gt_path = Path(ground_truth)
        gt_path.parent.mkdir(parents=True, exist_ok=True)
        if len(parts) == 1:
            gt_path.write_bytes(glb_bytes(parts[0]))
        else:
            v, f, _ = merge(parts)
            gt_path.write_bytes(glb_bytes(TexturedMesh(v, f)))
    return SyntheticCapture(out_zip, held_path, gt_path)


# ── the demo object ──────────────────────────────────────────────────────────────────────

def _grid_mesh(nu: int, nv: int, point, wrap_u: bool = True):
    """Vertices, faces and UVs of a (u, v) parametric surface, u around, v from pole to pole."""
    us = np.linspace(0.0, 1.0, nu + 1)
    vs = np.linspace(0.0, 1.0, nv + 1)
    uu, vv = np.meshgrid(us, vs, indexing="ij")
    verts = point(uu, vv).reshape(-1, 3)
    uv = np.stack([uu, vv], axis=-1).reshape(-1, 2)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return verts, faces, uv


def _demo_texture(size: int, hue: float, seed: int) -> np.ndarray:
    """A colourful, detailed pattern: stripes, a checker, soft blobs (so PSNR means something)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    checker = ((np.floor(x * 16) + np.floor(y * 8)) % 2)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * (x * 6 + y * 2))
    blobs = np.zeros_like(x)
    for cx, cy, r in rng.random((12, 3)):
        blobs += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.002 + 0.01 * r))
    base = np.stack([0.55 + 0.35 * np.cos(2 * math.pi * (hue + k / 3)) for k in range(3)])
    img = base[None, None, :] * (0.55 + 0.25 * stripes[..., None]) + 0.2 * checker[..., None] * np.array(
        [0.9, 0.8, 0.3]) + 0.35 * np.clip(blobs, 0, 1)[..., None] * np.array([0.2, 0.5, 0.9])
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def demo_parts() -> list[TexturedMesh]:
    """A procedural object: a rounded, textured body with a ring handle (genus 1), two materials."""
    def body(u, v):
        theta, phi = 2 * math.pi * u, math.pi * v
        r = 0.5 * np.abs(np.sin(phi)) ** 0.6
        return np.stack([r * np.cos(theta), -0.55 * np.cos(phi) * (1 + 0.15 * np.sin(3 * theta) * np.sin(phi)),
                         0.8 * r * np.sin(theta)], axis=-1)

    def handle(u, v):
        theta, phi = 2 * math.pi * u, 2 * math.pi * v
        R, r = 0.22, 0.06
        return np.stack([0.5 + (R + r * np.cos(phi)) * np.cos(theta), (R + r * np.cos(phi)) * np.sin(theta),
                         r * np.sin(phi)], axis=-1)

    parts = []
    for (verts, faces, uv), texture in ((_grid_mesh(160, 120, body), _demo_texture(1024, 0.05, 1)),
                                        (_grid_mesh(120, 40, handle), _demo_texture(256, 0.6, 2))):
        part = TexturedMesh(verts, faces, uv=uv, texture=texture)
        if part.signed_volume() < 0:  # make faces point outwards, whatever the parametrisation's handedness
            part.faces = np.ascontiguousarray(part.faces[:, ::-1])
        parts.append(part)
    return parts
