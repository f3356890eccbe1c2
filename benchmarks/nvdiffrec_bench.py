"""nvdiffrec against fusion on captures rendered from shared meshes: time, peak GPU memory, quality.

Per mesh: render a contract capture (2048² views, 1024² depth) with 8 held-out orbit views
and the ground truth; run fusion and nvdiffrec (default options, or ``--options``) and score
both against the ground truth (F-score at 0.5 % and 1 % of the object size) and on the
held-out views (PSNR, SSIM, and where the error lies: :func:`error_split`). Time is end to
end per model: load_capture → reconstruct → write GLB/OBJ; nvdiffrec's first run also pays
for compiling nvdiffrast and is reported separately. Run on the GPU machine (see benchmarks/README.md).

    python benchmarks/nvdiffrec_bench.py --meshes spot,bob --data .device-data/meshes --out result.json

Smaller captures (``--sizes``) let the CPU path compare variants, slowly (RESULTS.md has one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

MESHES = {"spot": "spot/spot.obj", "bob": "bob/bob_tri.obj", "water_bottle": "water_bottle/WaterBottle.gltf",
          "ycb_banana": "ycb_banana/textured_simple_reoriented.obj", "avocado": "avocado/Avocado.gltf",
          "blub": "blub/blub_triangulated.obj", "wooden_stool": "wooden_stool/painted_wooden_stool_1k.gltf"}


def ensure_capture(name: str, work: Path, meshes: Path, sizes=(2048, 1024, 512)) -> Path:
    """``work``/capture.zip of mesh ``name`` (a contract capture: views, depth and held-out view
    sizes ``sizes``), with its held-out views in ``work``/heldout and the ground truth in
    ``work``/gt.glb; rendered from ``meshes`` only if absent, so the scripts share captures."""
    import meshforge

    capture = work / "capture.zip"
    if not capture.exists():
        rgb_size, depth_size, heldout_size = sizes
        meshforge.render_capture(meshes / MESHES[name], capture, rgb_size=rgb_size, depth_size=depth_size,
                                 heldout=8, heldout_dir=work / "heldout", heldout_size=heldout_size,
                                 ground_truth=work / "gt.glb")
    return capture


def write_result(path: str | None, benchmark: str, rows: list) -> None:
    """The JSON a CPU sweep leaves in benchmarks/results: its rows, the machine and the command."""
    if path:
        Path(path).write_text(json.dumps({
            "benchmark": benchmark, "rows": rows,
            "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
            "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:])}, indent=2))


def timed_run(model: str, capture_path: Path, out: Path, options: dict) -> tuple[dict, object]:
    import torch

    import meshforge

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    capture = meshforge.load_capture(capture_path)
    result = meshforge.reconstruct(capture, model, options)
    meshforge.write_mesh_files(result.mesh, out)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"seconds": round(seconds, 2), "peak_gpu_gib": round(peak, 2) if peak is not None else None,
            "timings": result.timings, "warnings": result.warnings,
            "faces": int(len(result.mesh.faces)), "estimates": {k: v for k, v in result.estimates.items()
                                                                if k in ("pass1", "pass2", "faces", "texture")}}, \
        result.mesh


def replace_texture_start(start) -> None:
    """Make nvdiffrec's texture stage start from ``start(vertices, faces, capture, **kwargs)``
    instead of the view atlas of its own surface (pass 2 calls ``bake_view_atlas`` for that)."""
    import meshforge.texturing as texturing

    texturing.bake_view_atlas = start


def pin_texture_start(path: Path) -> None:
    """Every later nvdiffrec run starts its texture stage from one saved mesh and texture.

    Pass 1 and the vertex stage sum gradients with atomic additions on the GPU, so two runs
    at one seed reach slightly different surfaces; with the view atlas (pass 2's start) pinned,
    runs differ only in the texture stage, which is how two versions or settings of it are
    compared. The first run saves its start to ``path``; a later process given it loads it."""
    import pickle

    from meshforge.texturing import bake_view_atlas

    def pinned(vertices, faces, capture, **kwargs):
        if not path.exists():
            path.write_bytes(pickle.dumps(bake_view_atlas(vertices, faces, capture, **kwargs)))
        return pickle.loads(path.read_bytes())

    replace_texture_start(pinned)


def _welded(parts) -> tuple[np.ndarray, np.ndarray]:
    """One (vertices, faces) of a mesh's parts, coincident vertices merged: texture seams split
    them, and the view atlas, which picks each face's view together with its neighbours' and
    fills unseen faces from them, would see faces without neighbours (fusion's own surface,
    split along its seams, scores 36.0 dB on bob instead of 38.6)."""
    parts = parts if isinstance(parts, list) else [parts]
    vertices = np.concatenate([p.vertices for p in parts])
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    unique, index = np.unique(np.round(vertices, 7), axis=0, return_inverse=True)
    return unique.astype(np.float32), index.reshape(-1)[faces].astype(np.int64)


def texture_on(surface) -> None:
    """nvdiffrec's texture stage works on another surface (a mesh or its parts): the ground
    truth's (an oracle: what texturing from these views gives on exact geometry) or fusion's."""
    from meshforge.texturing import bake_view_atlas

    vertices, faces = _welded(surface)
    replace_texture_start(lambda _v, _f, capture, **kwargs: bake_view_atlas(vertices, faces, capture, **kwargs))


def surface_error(mesh, gt) -> dict | None:
    """Distances from 50k points of ``mesh``'s surface to the true surface (exact, point to
    triangle; trimesh with rtree), as percentiles in % of the object's size; None without rtree."""
    import importlib.util

    import trimesh

    if importlib.util.find_spec("rtree") is None:  # trimesh's closest_point needs it
        return None
    from meshforge.evaluation import bounds_of, surface_samples

    size = float(np.ptp(bounds_of(gt), axis=0).max())
    _, distance, _ = trimesh.proximity.closest_point(trimesh.Trimesh(*_welded(gt), process=False),
                                                     surface_samples(mesh, 50_000, 3))
    return {f"p{q}": round(float(np.percentile(distance, q) / size * 100), 4) for q in (50, 90, 99)}


def seen_by_inputs(points: np.ndarray, capture, tolerance: float) -> np.ndarray:
    """Which of the (N, 3) points of the true surface an input view sees: its depth map has a
    value within ``tolerance`` of the point's depth where the point projects."""
    seen = np.zeros(len(points), bool)
    for view in capture.views.values():
        cam = view.depth_camera
        uv, z = cam.project(points)
        j, i = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (z > 0) & (j >= 0) & (i >= 0) & (j < cam.width) & (i < cam.height)
        depth = np.zeros(len(z))
        depth[inside] = view.depth[i[inside], j[inside]]
        seen |= inside & (depth > 0) & (np.abs(depth - z) < tolerance)
    return seen


def _tolerance(gt) -> float:
    """0.5 % of the ground truth's bounding-box diagonal."""
    points = np.concatenate([part.vertices for part in gt])
    return 0.005 * float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


def recall_split(mesh, gt, capture, tau: float = 0.005, samples: int = 200_000) -> dict:
    """Recall at ``tau`` of the object's longest side, on the true surface that the input views
    see and on the rest: which part of the F-score no model can earn from the views."""
    from scipy.spatial import cKDTree

    from meshforge.evaluation import bounds_of, surface_samples

    size = float(np.ptp(bounds_of(gt), axis=0).max())
    truth = surface_samples(gt, samples)
    found = cKDTree(surface_samples(mesh, samples)).query(truth, workers=-1)[0] / size < tau
    seen = seen_by_inputs(truth, capture, _tolerance(gt))
    return {"unseen_share": round(float(1 - seen.mean()), 4), "recall_seen": round(float(found[seen].mean()), 4),
            "recall_unseen": round(float(found[~seen].mean()), 4) if (~seen).any() else None}


def error_split(mesh, gt, heldout_dir: Path, capture) -> dict:
    """Where the held-out squared error lies, summed over the views: on pixels that the model and
    the ground truth disagree are covered ("silhouette": a geometry error at the outline), in a
    2-pixel band inside the true outline, or in the interior (colour), split by whether any input
    view sees that point of the true surface (its depth agrees with the capture's depth map there
    within 0.5 % of the object's size). Also the mean number of silhouette pixels per view and the
    PSNR the model would score were its outline exact."""
    from PIL import Image
    from scipy import ndimage

    from meshforge.camera import Camera
    from meshforge.render import render

    spec = json.loads((heldout_dir / "heldout.json").read_text())
    sums = {"silhouette": 0.0, "band": 0.0, "interior_seen": 0.0, "interior_unseen": 0.0}
    tolerance = _tolerance(gt)
    flips, pixels = [], 0
    for name, c2w in spec["views"].items():
        ref = np.asarray(Image.open(heldout_dir / f"{name}.png").convert("RGB"), np.float64) / 255.0
        cam = Camera.from_fov(np.asarray(c2w), spec["fov_y_degrees"], ref.shape[1], ref.shape[0])
        ours = render(mesh, cam, background=spec["background"])
        true_render = render(gt, cam)
        truth = true_render.mask > 0.5
        rows, cols = np.nonzero(truth)
        world = cam.unproject(np.stack([cols + 0.5, rows + 0.5], axis=1), true_render.depth[rows, cols])
        seen = np.zeros(truth.shape, bool)
        seen[rows, cols] = seen_by_inputs(world, capture, tolerance)
        error = ((ours.color.astype(np.float64) - ref) ** 2).sum(axis=2)
        flip = (ours.mask > 0.5) != truth
        band = ~flip & (truth & ~ndimage.binary_erosion(truth, iterations=2))
        inner = ~flip & ~band
        for key, where in (("silhouette", flip), ("band", band), ("interior_seen", inner & seen),
                           ("interior_unseen", inner & ~seen)):
            sums[key] += float(error[where].sum())
        flips.append(int(flip.sum()))
        pixels += error.size * 3
    total = sum(sums.values())
    exact_outline = total - sums["silhouette"]
    return {"share": {k: round(v / total, 3) for k, v in sums.items()},
            "silhouette_pixels_per_view": round(float(np.mean(flips)), 1),
            "psnr_if_outline_exact": round(float(10 * np.log10(pixels / max(exact_outline, 1e-12))), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshes", default="spot,bob,water_bottle,ycb_banana")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"))
    ap.add_argument("--work", default="/tmp/nvdiffrec-bench")
    ap.add_argument("--options", default="{}", help="nvdiffrec options as JSON")
    ap.add_argument("--label", default="default")
    ap.add_argument("--sizes", default="2048,1024,512", help="captures' view, depth and held-out view sizes (smaller "
                    "ones for the CPU path, with MESHFORGE_NVDIFFREC_ALLOW_CPU=1 and a --work of their own)")
    ap.add_argument("--skip-fusion", action="store_true")
    ap.add_argument("--skip-nvdiffrec", action="store_true", help="fusion only (runs on a CPU machine)")
    ap.add_argument("--pin-texture-start", help="a file: every run's texture stage starts from the mesh saved "
                    "there (saved by the first run if absent; for one mesh, repeated); see pin_texture_start")
    ap.add_argument("--texture-on", choices=("ground-truth", "fusion"), help="nvdiffrec's texture stage works on "
                    "this surface instead of its own (fusion: needs fusion's run, so not with --skip-fusion); see texture_on")
    ap.add_argument("--out")
    args = ap.parse_args()

    import meshforge
    from meshforge.evaluation import geometry_scores, heldout_scores
    from meshforge.mesh import load_parts

    options = json.loads(args.options)
    rgb_size, depth_size, heldout_size = (int(x) for x in args.sizes.split(","))
    if args.pin_texture_start:
        pin_texture_start(Path(args.pin_texture_start))
    rows = []
    for name in args.meshes.split(","):
        work = Path(args.work) / name
        capture = ensure_capture(name, work, Path(args.data), (rgb_size, depth_size, heldout_size))
        gt = load_parts(work / "gt.glb")
        if args.texture_on == "ground-truth":
            texture_on(gt)
        loaded = meshforge.load_capture(capture)  # for the scores; each model's run loads its own, timed
        row = {"mesh": name}
        for model, opts in (("fusion", {}), ("nvdiffrec", options)):
            if model == "fusion" and args.skip_fusion or model == "nvdiffrec" and args.skip_nvdiffrec:
                continue
            info, mesh = timed_run(model, capture, work / f"{model}-{args.label}", opts)
            geo = geometry_scores(mesh, gt)
            held = heldout_scores(mesh, work / "heldout")
            info.update({"fscore@0.5%": round(geo["fscore@0.005"], 4), "fscore@1%": round(geo["fscore@0.01"], 4),
                         "chamfer_l1": round(geo["chamfer_l1"], 5), "heldout_psnr": round(held["psnr"], 2),
                         "heldout_ssim": round(held["ssim"], 4),
                         "heldout_per_view_psnr": {k: round(v["psnr"], 2) for k, v in held["per_view"].items()},
                         "recall_split@0.5%": recall_split(mesh, gt, loaded),
                         "heldout_error_split": error_split(mesh, gt, work / "heldout", loaded),
                         "surface_error_pct": surface_error(mesh, gt)})
            if model == "fusion" and args.texture_on == "fusion":
                texture_on(mesh)
            row[model] = info
            brief = {k: v for k, v in info.items() if k not in ("estimates", "timings", "heldout_per_view_psnr")}
            print(json.dumps({"mesh": name, "model": model, **brief}), flush=True)
        rows.append(row)
    import torch

    result = {"benchmark": "nvdiffrec", "label": args.label, "options": options, "rows": rows,
              "machine": {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                          "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
              "command": "python benchmarks/nvdiffrec_bench.py " + " ".join(sys.argv[1:])}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
