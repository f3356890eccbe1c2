"""Where pass 1's time goes on the GPU: torch.profiler over a few iterations of nvdiffrec on one capture.

    python benchmarks/profile_nvdiffrec.py CAPTURE.zip [ITERATIONS] [OPTIONS_JSON]
"""

import json

import sys
import time

import torch

import meshforge
from meshforge.plugins.fusion.fuse import object_box
from meshforge.progress import silent
from meshforge_nvdiffrec.backends import make_backend
from meshforge_nvdiffrec.optimize import Run, pass1
from meshforge_nvdiffrec.plugin import NvdiffrecReconstructor

capture = meshforge.load_capture(sys.argv[1])
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 30
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
opts = NvdiffrecReconstructor().resolve_options({**extra, "iterations_pass1": iters})
opts.update(device="cuda", colour_grid=tuple(int(x) for x in opts["colour_grid"].split(",")))
backend = make_backend("auto", torch.device("cuda"))
lo, hi = object_box(capture)
pass1(capture, {**opts, "iterations_pass1": 3}, torch.device("cuda"), backend, (lo, hi), silent(), Run(), 1e18)
torch.cuda.synchronize()
t = time.perf_counter()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
    pass1(capture, opts, torch.device("cuda"), backend, (lo, hi), silent(), Run(), 1e18)
    torch.cuda.synchronize()
print(f"{iters} iterations (incl. setup) in {time.perf_counter() - t:.2f} s")
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=50))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=50))
