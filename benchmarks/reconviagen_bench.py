"""ReconViaGen at full size with RANDOM weights: time per stage and peak GPU memory of one job.

Random weights make no meaningful shape, so this measures cost only (issue 6 targets on one
H100: ≤ 30 s per job and ≤ 16 GB peak, float16 torsos). The weights are written in the published
layout (``manifests/full.json``: 2.64 billion parameters, 7.2 GiB) to a temporary directory and loaded
through the same manifest check and loader as real weights. They are made with
``closed_box=True`` so that the occupancy decoder always yields a solid block of voxels, which
``max_voxels`` (default 32768, the most TRELLIS was trained with) caps to the ball nearest the
grid's centre: the structure stage then hands the latter stages as many voxels as it ever will.

One job = ``meshforge.run`` without scoring: load the capture, reconstruct, write GLB and
OBJ+MTL+PNG. Weight loading is reported apart; ``--repeat 2`` adds a warm job (weights kept in
the worker, as the service does).

    python3 benchmarks/reconviagen_bench.py --out FILE.json                  # GPU, full size
    python3 benchmarks/reconviagen_bench.py --tiny --out /tmp/tiny.json     # CPU, test architecture
    python3 benchmarks/reconviagen_bench.py --tiny --fp16 --out /tmp/t.json  # CPU, the CUDA float16 conversion

A failed job is a failed benchmark: the error goes to stderr, ``--out`` still gets the figures with
``"status": "failed"`` and the error, and the exit status is 1 (0 only when every job succeeded).

``--capture PATH`` uses an existing capture; otherwise one is rendered from ``--mesh`` with
``meshforge.render_capture`` (contract style, 2048² views / 1024² depth; ``--tiny`` 256²).
Needs torch, numpy, safetensors and the project's packages (core and plugins/reconviagen).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write the figures here (JSON)")
    ap.add_argument("--capture", help="a capture (ZIP or folder); default: rendered from --mesh")
    ap.add_argument("--mesh", default=str(SHARED / "data" / "meshes" / "spot" / "spot.obj"))
    ap.add_argument("--tiny", action="store_true", help="the tiny test architecture on the CPU (seconds)")
    ap.add_argument("--options", default="{}", help="reconviagen options as JSON (e.g. '{\"max_voxels\": 16384}')")
    ap.add_argument("--repeat", type=int, default=1, help="jobs to run; the 2nd onwards reuse the loaded weights")
    ap.add_argument("--work", help="keep weights, capture and results here instead of a temporary folder")
    ap.add_argument("--fp16", choices=("auto", "1", "0"), default="auto",
                    help="float16 torsos: auto (float16 on CUDA only, as the service runs), 1 (also on the CPU: the CUDA path's "
                         "dtype conversion, e.g. with --tiny), 0 (float32 throughout)")
    args = ap.parse_args()

    try:
        import torch

        import meshforge
        import meshforge_reconviagen  # noqa: F401
    except ImportError as exc:
        print(f"missing: {exc}. Install the project: pip install ./core ./plugins/reconviagen", file=sys.stderr)
        return 2
    from meshforge_reconviagen import manifest as mf
    from meshforge_reconviagen import random_weights

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="reconviagen-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest_name = "tiny" if args.tiny else "full"
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("no CUDA GPU visible: the full-size run is meant for the GPU machine (use --tiny on a CPU)",
              file=sys.stderr)
        return 2
    figures: dict = {"label": "RANDOM WEIGHTS — cost only, not a reconstruction", "architecture": manifest_name,
                     "host": platform.node(), "torch": torch.__version__,
                     "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                     "threads": torch.get_num_threads()}

    # 1. random weights in the published layout
    manifest = mf.load(manifest_name)
    weights = work / f"weights-{manifest_name}"
    t = time.perf_counter()
    if mf.check(manifest, weights):
        random_weights.write(manifest, weights, seed=0, closed_box=True)
    figures["weights"] = {"parameters": sum(_numel(s) for f in manifest.files for s, _ in f.tensors.values()),
                          "bytes": sum(p.stat().st_size for p in weights.iterdir()),
                          "write_s": round(time.perf_counter() - t, 1)}
    problems = mf.check(manifest, weights)
    if problems:
        print(mf.describe(problems, weights), file=sys.stderr)
        return 1
    os.environ[mf.WEIGHTS_ENV] = str(weights)
    os.environ[mf.MANIFEST_ENV] = manifest_name
    if not cuda:
        os.environ["MESHFORGE_RECONVIAGEN_ALLOW_CPU"] = "1"
    os.environ["MESHFORGE_RECONVIAGEN_FP16"] = args.fp16

    # 2. the capture
    if args.capture:
        capture = Path(args.capture)
    else:
        from meshforge.synthetic import render_capture

        capture = work / f"capture-{Path(args.mesh).stem}-{256 if args.tiny else 2048}.zip"
        if not capture.exists():
            size = {"rgb_size": 256, "depth_size": 256} if args.tiny else {}
            render_capture(args.mesh, capture, **size)
    figures["capture"] = str(capture)

    # 3. the jobs
    options = {"reconviagen": json.loads(args.options)}
    from meshforge.manager import get_manager

    manager = get_manager()
    availability = next(r for r in manager.describe()["reconstructors"] if r["name"] == "reconviagen")
    if not availability["available"]:
        print(f"reconviagen is not available: {availability['reason']}", file=sys.stderr)
        return 1
    figures["status"] = "running"
    figures["jobs"] = []
    for i in range(args.repeat):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            report = meshforge.run(capture, "reconviagen", work / f"result-{i}", options, score=False,
                                   manager=manager)
        except Exception as exc:  # request or capture errors raise before the job starts
            return _failed(figures, args.out, i, {"code": type(exc).__name__, "message": str(exc)})
        seconds = time.perf_counter() - t
        outcome = report["models"]["reconviagen"]
        if outcome["status"] != "succeeded":
            figures["jobs"].append({"job_s": round(seconds, 2), "status": outcome["status"],
                                    "error": outcome.get("error"), "stage": outcome.get("stage"),
                                    "stages_s": outcome.get("timings"), "warnings": outcome.get("warnings")})
            return _failed(figures, args.out, i, outcome.get("error") or {"message": outcome["status"]})
        estimates = outcome["estimates"]
        job = {"job_s": round(seconds, 2), "stages_s": outcome["timings"],
               "peak_gpu_memory_gib": estimates.get("peak_gpu_memory_gib"),
               "max_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
               "voxels": estimates.get("voxels"), "faces": estimates.get("texture", {}).get("faces"),
               "fp16": estimates["weights"]["fp16"], "oom_retries": estimates.get("oom_retries"),
               "warnings": outcome["warnings"]}
        figures["jobs"].append(job)
        print(f"job {i + 1}: {job['job_s']} s, peak {job['peak_gpu_memory_gib']} GiB, {job['voxels']} voxels, "
              f"stages {job['stages_s']}", flush=True)
    figures["status"] = "succeeded"
    print(_write(figures, args.out))
    return 0


def _write(figures: dict, out: str | None) -> str:
    text = json.dumps(figures, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return text


def _failed(figures: dict, out: str | None, job: int, error: dict) -> int:
    """Record the failure in ``out`` (``status: failed``), say it on stderr, and give the exit status 1."""
    figures["status"], figures["error"] = "failed", error
    _write(figures, out)
    print(f"FAILED: reconviagen job {job + 1}: {error.get('code', 'error')}: {error.get('message')}"
          + (f" (figures so far in {out})" if out else ""), file=sys.stderr)
    return 1


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    sys.exit(main())
