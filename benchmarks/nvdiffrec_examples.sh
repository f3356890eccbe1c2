#!/usr/bin/env bash
# Makes examples/ for the nvdiffrec plugin on the GPU machine with the project's own CLI:
# the sneaker sample (with leave-one-view-out scores) and a capture rendered from spot.
# Usage, from the repository root after `source benchmarks/gpu_setup.sh`:
#     bash benchmarks/nvdiffrec_examples.sh OUT_DIR DATA_DIR
# OUT_DIR receives the full bundles; the small files worth committing are copied to
# OUT_DIR/examples/ (previews, contact sheet, quality.json, report.json).
set -euo pipefail
out=${1:?output folder}
data=${2:?data folder holding samples/sneaker and meshes/spot}
meshforge=${MESHFORGE_CLI:-meshforge}

$meshforge render-capture "$data/meshes/spot/spot.obj" "$out/spot-capture.zip"
$meshforge run "$data/samples/sneaker" --model fusion,nvdiffrec --holdout --quiet --out "$out/sneaker"
$meshforge run "$out/spot-capture.zip" --model fusion,nvdiffrec --quiet --out "$out/spot"

python3 - "$out" <<'PY'
import shutil, sys
from pathlib import Path

out = Path(sys.argv[1])
for name in ("sneaker", "spot"):
    for model_dir in sorted((out / name).iterdir()):
        if not model_dir.is_dir():
            continue
        dest = out / "examples" / name / model_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in model_dir.rglob("*"):
            if f.is_file() and (f.suffix == ".json" or "previews" in f.parts):
                target = dest / f.relative_to(model_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
    for f in (out / name).glob("*.json"):
        shutil.copy2(f, out / "examples" / name / f.name)
print("\n".join(str(p.relative_to(out)) for p in sorted((out / "examples").rglob("*")) if p.is_file()))
PY
