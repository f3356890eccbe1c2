"""Static previews for people: the result from several angles, and a contact sheet against the inputs.

- ``view_<name>.png``: the reconstruction from each input camera, lit by a neutral head-light;
- ``oblique_<n>.png``: from between the rig's axes, 30° above and below (where holes and
  floaters show);
- optionally ``normals_<name>.png`` and ``depth_<name>.png``;
- ``contact_sheet.png``: per input view, input | reconstruction | error heat-map, with the
  view's PSNR, SSIM and silhouette IoU written on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .scoring import compare_view

BACKGROUND = (0.92, 0.92, 0.92)
#: key colours of the error heat-map, black (no error) → purple → orange → yellow (≥ 0.25 mean abs error)
HEAT = np.array([[0, 0, 0], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)


def heat(values: np.ndarray, top: float) -> np.ndarray:
    """(H, W) values in [0, top] -> (H, W, 3) uint8 heat-map colours."""
    t = np.clip(values / top, 0, 1) * (len(HEAT) - 1)
    i = np.minimum(t.astype(int), len(HEAT) - 2)
    f = (t - i)[..., None]
    return (HEAT[i] * (1 - f) + HEAT[i + 1] * f).astype(np.uint8)


def preview_cameras(capture, size: int, obliques: int):
    """name -> camera: the input cameras (at most six) and ``obliques`` cameras between them."""
    from meshforge.camera import orbit

    views = list(capture.views.values())
    if len(views) > 6:
        views = [views[i] for i in np.linspace(0, len(views) - 1, 6).astype(int)]
    cams = {f"view_{v.name}": v.camera.scaled(size) for v in views}
    distance = float(np.median([np.linalg.norm(v.camera.position) for v in views]))
    fov = float(np.median([v.camera.fov_y_degrees for v in views]))
    for i, cam in enumerate(orbit(obliques, distance, fov, size, elevation_degrees=30.0).values()):
        cams[f"oblique_{i}"] = cam
    return cams


def _save(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)).save(path, compress_level=3)
    return path


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def write_previews(mesh, capture, out_dir: Path, options: dict, quality=None, progress=None) -> list[Path]:
    """Write the previews (see the module docstring) and return their paths."""
    from meshforge.render import render, smooth_normals

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = options["size"]
    written = []
    cams = preview_cameras(capture, size, options["obliques"])
    normals = smooth_normals(mesh) if not isinstance(mesh, list) else None
    for i, (name, cam) in enumerate(cams.items()):
        if progress is not None:
            progress.update(0.7 * i / len(cams), "previews")
            progress.check_cancelled()
        shot = render(mesh, cam, background=BACKGROUND, shading="lit", supersample=2, normals=normals)
        written.append(_save(shot.color, out_dir / f"{name}.png"))
        if options["normals"] and name.startswith("view_"):
            n = np.where(shot.mask[..., None] > 0, shot.normal * 0.5 + 0.5, 1.0)
            written.append(_save(n, out_dir / f"normals_{name[5:]}.png"))
        if options["depth"] and name.startswith("view_"):
            d = shot.depth
            fg = d > 0
            img = np.ones(d.shape + (3,), np.float32)
            if fg.any():
                lo, hi = float(d[fg].min()), float(d[fg].max())
                img[fg] = heat(hi - d[fg], max(hi - lo, 1e-9)) / 255.0
            written.append(_save(img, out_dir / f"depth_{name[5:]}.png"))
    if options["contact_sheet"]:
        written.append(contact_sheet(mesh, capture, out_dir / "contact_sheet.png", options["sheet_tile"], quality))
    if progress is not None:
        progress.update(1.0)
    return written


def contact_sheet(mesh, capture, path: Path, tile: int, quality=None) -> Path:
    """One row per input view: input | reconstruction | error heat-map, figures written on the row."""
    per_view = (quality.details.get("views") if quality is not None else None) or {}
    label_h = 24
    rows = []
    font = _font(15)
    for name, view in capture.views.items():
        cmp = compare_view(mesh, view, size=tile, with_depth=False, supersample=2)  # a picture, not a score
        err = np.abs(cmp.rendered - cmp.reference).mean(axis=-1)
        err[~cmp.union] = 0
        row = np.concatenate([cmp.reference, cmp.rendered, heat(err, 0.25) / 255.0], axis=1)
        canvas = Image.new("RGB", (row.shape[1], row.shape[0] + label_h), (255, 255, 255))
        canvas.paste(Image.fromarray(np.clip(row * 255 + 0.5, 0, 255).astype(np.uint8)), (0, label_h))
        f = per_view.get(name, {})
        text = f"{name}:  input | reconstruction | error (0 … 0.25)"
        if f:
            text += f"    PSNR {f['psnr']:.2f} dB   SSIM {f['ssim']:.3f}   IoU {f['silhouette_iou']:.3f}"
        ImageDraw.Draw(canvas).text((6, 4), text, fill=(20, 20, 20), font=font)
        rows.append(np.asarray(canvas))
    sheet = np.concatenate(rows, axis=0)
    header = Image.new("RGB", (sheet.shape[1], 30), (255, 255, 255))
    if quality is not None:
        summary = quality.summary
        ImageDraw.Draw(header).text(
            (6, 6), f"quality {quality.status}: PSNR {summary.get('psnr', float('nan')):.2f} dB, SSIM "
                    f"{summary.get('ssim', float('nan')):.3f} (object region, fit views)", fill=(0, 0, 0), font=_font(17))
    Image.fromarray(np.concatenate([np.asarray(header), sheet], axis=0)).save(path, compress_level=3)
    return path
