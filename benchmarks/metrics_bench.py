"""Scoring + previews (meshforge-metrics) on a full-size capture and a 200k-face mesh.

Target (issue 3): scoring and previews together ≤ 5 s on 2 CPU cores for a 2048² six-view
capture and a 200k-face mesh. The mesh is fusion's result on a capture rendered from a
shared mesh; one warm-up run, then the median of ``--repeat`` runs in one process.

    python benchmarks/metrics_bench.py --out benchmarks/results/metrics.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh", default="spot/spot.obj")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()

    import meshforge
    from meshforge.manager import get_manager
    from meshforge.progress import silent

    work = Path(tempfile.mkdtemp(prefix="meshforge-metrics-bench-"))
    meshforge.render_capture(SHARED / "data" / "meshes" / args.mesh, work / "capture.zip")
    capture = meshforge.load_capture(work / "capture.zip")
    mesh = meshforge.reconstruct(capture, "fusion").mesh
    pm = get_manager()
    scorer = pm.components("quality_scorer")["metrics"].component
    previewer = pm.components("previewer")["previews"].component
    so, po = scorer.resolve_options(None), previewer.resolve_options(None)
    rows = []
    for i in range(args.repeat + 1):
        t0 = time.perf_counter()
        fit = scorer.evaluate(mesh, capture, list(capture.views), silent(), so)
        report = scorer.classify(fit, None, {}, so)
        t1 = time.perf_counter()
        previewer.preview(mesh, capture, work / f"previews{i}", silent(), report, po)
        t2 = time.perf_counter()
        if i:  # the first run is the warm-up
            rows.append({"scoring": t1 - t0, "previews": t2 - t1, "total": t2 - t0})
    result = {
        "benchmark": "metrics", "mesh": args.mesh, "faces": int(len(mesh.faces)),
        "capture": {"views": capture.image_size, "depth": capture.depth_size},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "median": {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]},
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in rows],
        "verdict": {"status": report.status, **report.summary},
        "command": f"python benchmarks/metrics_bench.py --mesh {args.mesh} --repeat {args.repeat}",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
