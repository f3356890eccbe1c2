"""The view atlas's second visibility test (meshforge.texturing.face_visibility), swept on fusion.

fusion's texture is the view atlas alone, so its held-out PSNR on full-size contract captures
(2048² views, 1024² depth, 8 held-out views at 512², as nvdiffrec_bench.py renders them) shows
what each setting of ``grazing_slack`` (0: the first test alone) and ``outline_px`` gives.

    python benchmarks/visibility_sweep.py --out benchmarks/results/fusion-cpu-grazing.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from nvdiffrec_bench import ensure_capture, write_result  # noqa: E402  (one way to make captures and results)

SETTINGS = ((0.0, 2), (1.0, 2), (1.5, 2), (1.5, 1), (1.5, 3), (1.5, 0), (3.0, 2), (3.0, 1), (5.0, 2), (8.0, 2),
            (20.0, 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshes", default="spot,water_bottle,bob,ycb_banana")
    ap.add_argument("--work", default="/tmp/nvdiffrec-bench", help="captures (nvdiffrec_bench.py's, reused)")
    ap.add_argument("--out")
    args = ap.parse_args()

    import meshforge
    import meshforge.texturing as texturing
    from meshforge.evaluation import heldout_scores

    original = texturing.face_visibility
    rows = []
    for name in args.meshes.split(","):
        work = Path(args.work) / name
        capture = meshforge.load_capture(ensure_capture(name, work, SHARED / "data" / "meshes"))
        for slack, outline in SETTINGS:
            # bake_view_atlas looks face_visibility up in its module at each call
            texturing.face_visibility = functools.partial(original, grazing_slack=slack, outline_px=outline)
            held = heldout_scores(meshforge.reconstruct(capture, "fusion", {}).mesh, work / "heldout")
            row = {"mesh": name, "grazing_slack": slack, "outline_px": outline,
                   "heldout_psnr": round(held["psnr"], 3), "heldout_ssim": round(held["ssim"], 5)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    texturing.face_visibility = original
    write_result(args.out, "view atlas visibility sweep (fusion)", rows)


if __name__ == "__main__":
    main()
