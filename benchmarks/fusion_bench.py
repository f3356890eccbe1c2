"""fusion: speed and quality against ground truth, on captures rendered from ../shared/data/meshes.

For each mesh: render a contract capture (2048² views, 1024² 16-bit depth, cameras.json) with
8 held-out orbit views (30° elevation, between the rig's axes) and the normalised ground
truth; then time load → reconstruct → write GLB/OBJ in one process (one warm-up run so that
numba's disk cache is filled, then the median of ``--repeat`` runs), and score the result:
F-score and Chamfer against the ground truth, PSNR/SSIM on the held-out views.

With ``--evaluator PYTHON`` the independent evaluator in ../shared/tools (its own
environment) scores the same GLB on its own held-out views as a cross-check.

    python benchmarks/fusion_bench.py --out benchmarks/results/fusion.json [--style sample] [--evaluator ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))
MESHES = {
    "spot": "spot/spot.obj",
    "bob": "bob/bob_tri.obj",
    "water_bottle": "water_bottle/WaterBottle.gltf",
    "ycb_banana": "ycb_banana/textured_simple_reoriented.obj",
    "avocado": "avocado/Avocado.gltf",
    "blub": "blub/blub_triangulated.obj",
    "wooden_stool": "wooden_stool/painted_wooden_stool_1k.gltf",
    "stanford_bunny": "stanford_bunny/bunny.obj",
}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def one_run(capture_path: Path, out: Path, options: dict) -> tuple[float, dict]:
    import meshforge

    t0 = time.perf_counter()
    capture = meshforge.load_capture(capture_path)
    t1 = time.perf_counter()
    result = meshforge.reconstruct(capture, "fusion", options)
    t2 = time.perf_counter()
    meshforge.write_mesh_files(result.mesh, out)
    t3 = time.perf_counter()
    stages = {"load": t1 - t0, "reconstruct": t2 - t1, "write": t3 - t2, **result.timings}
    return t3 - t0, {"stages": {k: round(v, 3) for k, v in stages.items()}, "estimates": result.estimates,
                     "mesh": result.mesh}


def independent(evaluator_python: str, glb: Path, mesh_file: Path, work: Path, style: str) -> dict:
    tools = SHARED / "tools"
    synth = work / "independent"
    if not (synth / "heldout.json").exists():
        subprocess.run([evaluator_python, str(tools / "synth.py"), str(mesh_file), str(synth), "--style", style],
                       check=True, capture_output=True, cwd=tools)
    out = subprocess.run([evaluator_python, str(tools / "evaluate.py"), str(glb), str(synth)], check=True,
                         capture_output=True, text=True, cwd=tools)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshes", default=",".join(MESHES))
    ap.add_argument("--style", choices=("contract", "sample"), default="contract")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--options", default="{}", help="fusion options as JSON")
    ap.add_argument("--evaluator", help="python of the independent evaluator's environment (../shared/tools)")
    ap.add_argument("--work", help="keep captures here (default: a temporary folder)")
    ap.add_argument("--out", help="write the JSON results here")
    args = ap.parse_args()

    from meshforge.evaluation import geometry_scores, heldout_scores
    from meshforge.mesh import load_parts
    from meshforge.synthetic import render_capture

    options = json.loads(args.options)
    work_root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="meshforge-bench-"))
    rows = []
    for name in args.meshes.split(","):
        mesh_file = SHARED / "data" / "meshes" / MESHES[name]
        work = work_root / f"{name}-{args.style}"
        capture = work / "capture.zip"
        if not capture.exists():
            render_capture(mesh_file, capture, style=args.style, heldout=8, heldout_dir=work / "heldout",
                           ground_truth=work / "gt.glb")
        one_run(capture, work / "warmup", options)  # fills numba's cache, warms the page cache
        times, last = [], None
        for i in range(args.repeat):
            seconds, last = one_run(capture, work / f"run{i}", options)
            times.append(seconds)
        mesh = last.pop("mesh")
        geo = geometry_scores(mesh, load_parts(work / "gt.glb"))
        held = heldout_scores(mesh, work / "heldout")
        row = {"mesh": name, "style": args.style, "seconds_median": round(statistics.median(times), 3),
               "seconds_all": [round(t, 3) for t in times], "stages_last_run": last["stages"],
               "faces": last["estimates"]["faces"]["final"],
               "fscore@0.5%": round(geo["fscore@0.005"], 4), "fscore@1%": round(geo["fscore@0.01"], 4),
               "precision@1%": round(geo["precision@0.01"], 4), "recall@1%": round(geo["recall@0.01"], 4),
               "chamfer_l1": round(geo["chamfer_l1"], 5),
               "heldout_psnr": round(held["psnr"], 2), "heldout_ssim": round(held["ssim"], 4)}
        if args.evaluator:
            ind = independent(args.evaluator, work / "run0" / "mesh.glb", mesh_file, work, args.style)
            row["independent"] = {k: round(v, 4) for k, v in ind.items()}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "stages_last_run"}), flush=True)
    result = {"benchmark": "fusion", "machine": machine(), "options": options, "rows": rows,
              "command": "python benchmarks/fusion_bench.py " + " ".join(
                  f"--{k} {v}" for k, v in vars(args).items() if v and k not in ("out", "work"))}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
