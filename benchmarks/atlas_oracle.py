"""What the view atlas's visibility test costs a surface: the held-out error by the test's
decision, and an oracle bound (meshforge.texturing.face_visibility).

For each mesh, on the capture nvdiffrec_bench.py renders (rendered here if ``--work`` has none),
a surface (fusion's, reconstructed here, or a mesh file: nvdiffrec's output brought back from
the GPU machine) is welded and textured by the view atlas as the product does. Then:

1. held-out PSNR, and the held-out squared error split by what the atlas decided for the face
   under each pixel: outline (model and ground truth disagree on coverage), a face some view
   passes the strict test for, a face only the grazing test lets in, a face only
   photo-consistency lets in, a face left flat (no view);
2. the oracle: the faces the atlas leaves flat get the views whose colour at the face's centre
   matches the ground truth's texture there (within 0.08 in every channel; the most frontal
   of those that face them), and the held-out views are scored again.

Step 2 reads the ground truth: it bounds what a better test could earn; it is not a method.

    python benchmarks/atlas_oracle.py --meshes bob --surface nvdiffrec=/path/to/nvdiffrec/mesh.glb
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from nvdiffrec_bench import _welded, ensure_capture, write_result  # noqa: E402  (shared with the bench)

#: a view's colour is "right" for a face when no channel differs from the ground truth's by more
RIGHT = 0.08
#: what the atlas decided for a face, in the order of its tests
DECISIONS = ("strict", "grazing_only", "photo_only", "flat")


def truth_colour(gt, points: np.ndarray) -> np.ndarray:
    """(N, 3) in [0, 1]: the ground truth's texture at the surface point closest to each point."""
    import trimesh

    from meshforge.raster import sample_texture

    colour = np.zeros((len(points), 3))
    best = np.full(len(points), np.inf)
    for part in gt:
        tri = trimesh.Trimesh(part.vertices, part.faces, process=False)
        closest, distance, face = trimesh.proximity.closest_point(tri, points)
        bary = trimesh.triangles.points_to_barycentric(tri.triangles[face], closest)
        uv = (part.uv[part.faces[face]] * bary[:, :, None]).sum(axis=1)
        c = sample_texture(part.texture, uv)[:, :3] / 255.0
        nearer = distance < best
        colour[nearer], best[nearer] = c[nearer], distance[nearer]
    return colour


def oracle_scores(vertices, faces, vis, colours, score, gt) -> np.ndarray:
    """The scores ``score`` with the flat faces given the views whose colour (``colours``, from
    centre_colours) is right there, among those that face them (``vis.facing``)."""
    truth = truth_colour(gt, vertices[faces].mean(axis=1).astype(np.float64))
    right = (vis.facing > 0) & (np.abs(colours / 255.0 - truth[:, None]).max(axis=2) < RIGHT)
    flat = score.max(axis=1) == 0
    score = score.copy()
    score[flat] = np.where(right[flat], vis.facing[flat], 0.0)
    return score


def decisions(vertices, faces, capture):
    """Per face, the index in DECISIONS of the test that gave it its view, as bake_view_atlas
    decides; the visibility table, the views' colours at the faces' centres, and the scores it
    decides on."""
    import meshforge.texturing as texturing

    vis = texturing.face_visibility(vertices, faces, capture)
    colours, solid = texturing.centre_colours(vis, faces, capture)
    score = texturing.photo_consistent(vis, colours, solid)
    labels = texturing.choose_views(score, texturing.face_adjacency(faces))
    strict = texturing.face_visibility(vertices, faces, capture, grazing_slack=0.0).score.max(axis=1) > 0
    return np.select([labels < 0, strict, vis.score.max(axis=1) > 0], [3, 0, 1], 2), vis, colours, score


def error_by_decision(mesh, vertices, faces, decision, heldout_dir: Path, gt) -> dict:
    """Shares of the held-out squared error: outline, then each of DECISIONS."""
    from PIL import Image

    from meshforge.camera import Camera
    from meshforge.raster import rasterize
    from meshforge.render import render

    spec = json.loads((heldout_dir / "heldout.json").read_text())
    sums = dict.fromkeys(("outline",) + DECISIONS, 0.0)
    for name, c2w in spec["views"].items():
        ref = np.asarray(Image.open(heldout_dir / f"{name}.png").convert("RGB"), np.float64) / 255.0
        cam = Camera.from_fov(np.asarray(c2w), spec["fov_y_degrees"], ref.shape[1], ref.shape[0])
        ours = render(mesh, cam, background=spec["background"])
        error = ((ours.color.astype(np.float64) - ref) ** 2).sum(axis=2)
        flip = (ours.mask > 0.5) != (render(gt, cam).mask > 0.5)
        sums["outline"] += float(error[flip].sum())
        frags = rasterize(cam, vertices, faces)
        inner = ~flip & frags.mask
        by = np.bincount(decision[frags.face[inner]], weights=error[inner], minlength=len(DECISIONS))
        for key, value in zip(DECISIONS, by):
            sums[key] += float(value)
    total = sum(sums.values())
    return {k: round(v / total, 3) for k, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshes", default="spot,bob,water_bottle,ycb_banana")
    ap.add_argument("--work", default="/tmp/nvdiffrec-bench", help="captures (nvdiffrec_bench.py's, reused)")
    ap.add_argument("--surface", action="append", default=[],
                    help="LABEL=FILE (one mesh) or LABEL=FOLDER holding MESH.glb per mesh; fusion's is always scored")
    ap.add_argument("--out")
    args = ap.parse_args()

    import meshforge
    import meshforge.texturing as texturing
    from meshforge.evaluation import heldout_scores
    from meshforge.mesh import load_parts

    rows = []
    for name in args.meshes.split(","):
        work = Path(args.work) / name
        capture = meshforge.load_capture(ensure_capture(name, work, SHARED / "data" / "meshes"))
        gt = load_parts(work / "gt.glb")
        surfaces = {"fusion": meshforge.reconstruct(capture, "fusion", {}).mesh}
        for item in args.surface:
            label, path = item.split("=", 1)
            path = Path(path)
            surfaces[label] = load_parts(path / f"{name}.glb" if path.is_dir() else path)
        for label, parts in surfaces.items():
            vertices, faces = _welded(parts)
            decision, vis, colours, score = decisions(vertices, faces, capture)
            mesh, stats = texturing.bake_view_atlas(vertices, faces, capture)
            row = {"mesh": name, "surface": label, "heldout_psnr": round(heldout_scores(mesh, work / "heldout")["psnr"], 2),
                   "flat_faces": stats.get("unseen_faces", 0),
                   "error_by_decision": error_by_decision(mesh, vertices, faces, decision, work / "heldout", gt)}
            oracle = dataclasses.replace(vis, score=oracle_scores(vertices, faces, vis, colours, score, gt))
            original = texturing.face_visibility
            texturing.face_visibility = lambda *a, **k: oracle  # bake_view_atlas looks it up at each call
            try:
                mesh, stats = texturing.bake_view_atlas(vertices, faces, capture)
            finally:
                texturing.face_visibility = original
            row.update({"oracle_heldout_psnr": round(heldout_scores(mesh, work / "heldout")["psnr"], 2),
                        "oracle_flat_faces": stats.get("unseen_faces", 0)})
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_result(args.out, "view atlas visibility: error by decision and oracle bound", rows)


if __name__ == "__main__":
    main()
