"""Entry point of the nvdiffrec reconstructor (Munkberg et al., CVPR 2022, reimplemented on nvdiffrast).

Needs a CUDA GPU and PyPI's ``diffrp-nvdiffrast`` (compiled on first use, ~35 s, or at
image build time in docker/Dockerfile). ``MESHFORGE_NVDIFFREC_ALLOW_CPU=1`` makes it
available without a GPU on the pure-PyTorch backend: the test path, slow beyond tiny sizes.
"""

from __future__ import annotations

import os
import time
from importlib import metadata

from meshforge import hookimpl
from meshforge.components import (Availability, ComponentSpec, Needs, Option, ReconstructionResult,
                                  Reconstructor)
from meshforge.errors import ModelOutOfMemory

OPTIONS = (
    Option("iterations_pass1", "int", 400, "DMTet iterations (all views per iteration)", minimum=0, maximum=20000),
    Option("iterations_pass2", "int", 300, "pass-2 texture iterations (the mesh fixed)", minimum=0, maximum=20000),
    Option("iterations_vertices", "int", 200, "pass-2 vertex iterations before texturing (silhouettes, depth); 0: "
           "keep pass 1's surface", minimum=0, maximum=20000),
    Option("iterations_joint", "int", 0, "pass-2 iterations moving vertices and texture together under the colour "
           "loss, after the texture stage (baked appearance)", minimum=0, maximum=20000),
    Option("lr_joint", "float", 0.05, "Adam learning rate of the joint iterations' vertex offsets, in grid cells "
           "(decays to 2 %; the texture's is lr_texture_pass2)", minimum=1e-6, maximum=1e6),
    Option("vertex_pass", "str", "auto", "pass 2 moves the vertices onto the depth (refinement onto the depth hull, "
           "then iterations_vertices of fitting): auto = only when the capture's depth is metric, not estimated",
           choices=("auto", "on", "off")),
    Option("grid_resolution", "int", 160, "tet-grid cells along the object's longest side", minimum=8,
           maximum=512),
    Option("band_cells", "float", 3.0, "keep tets within this many cells of the initial surface", minimum=1.0,
           maximum=20.0),
    Option("train_res", "int", 1024, "render size in pass 1", minimum=32, maximum=4096),
    Option("render_res", "int", 2048, "render size in pass 2", minimum=32, maximum=4096),
    Option("uv_layout", "str", "views", "views: charts from the views that see each face, texture starts from "
           "their pixels (full resolution); xatlas: unwrap, then bake", choices=("views", "xatlas")),
    Option("texture_size", "int", 4096, "largest side of the texture map", minimum=64, maximum=8192),
    Option("target_faces", "int", 200_000, "faces of the final mesh", minimum=1_000, maximum=2_000_000),
    Option("unwrap_max_faces", "int", 60_000, "xatlas layout: decimate to this many faces first (xatlas is slow)",
           minimum=1_000, maximum=2_000_000),
    Option("lr_geometry", "float", 0.01, "Adam learning rate of SDF and offsets", minimum=1e-6, maximum=1e6),
    Option("lr_texture", "float", 0.03, "Adam learning rate of the colour field (pass 1)", minimum=1e-6,
           maximum=1e6),
    Option("lr_texture_pass2", "float", 0.01, "Adam learning rate of the texture map (pass 2; decays to 2 %)",
           minimum=1e-6, maximum=1e6),
    Option("texture_view_weight", "float", 2.0, "pass 2 weighs each view's pixels by cos^this of the angle "
           "between surface and view (0: all pixels alike); grazing pixels blur the texels", minimum=0,
           maximum=16),
    Option("lr_vertices", "float", 0.02, "Adam learning rate of pass 2's vertex offsets, in grid cells (decays "
           "to 2 %)", minimum=1e-6, maximum=1e6),
    Option("mask_weight", "float", 2.0, "weight of the silhouette loss", minimum=0, maximum=100),
    Option("depth_weight", "float", 1.0, "weight of the depth loss", minimum=0, maximum=100),
    Option("laplacian_weight", "float", 1.0, "weight of the surface smoothness (umbrella Laplacian, in cells²)",
           minimum=0, maximum=1000),
    Option("laplacian_weight_vertices", "float", 1.0, "weight of the smoothness of pass 2's vertex offsets "
           "(umbrella Laplacian, in cells²)", minimum=0, maximum=1000),
    Option("colour_grid", "str", "64,128,256", "resolutions of the pass-1 colour grids"),
    Option("appearance", "str", "baked", "baked: the views' colour as an unlit texture (lighting included); pbr: "
           "the paper's base colour, roughness and metallic under a learned environment light (split sum), "
           "exported as a lit glTF material and environment.hdr", choices=("baked", "pbr")),
    Option("light_resolution", "int", 32, "appearance pbr: side of each face of the environment cube map",
           choices=(4, 8, 16, 32)),
    Option("unwrap_time_limit_s", "float", 60.0, "xatlas time limit before the view-atlas fallback", minimum=0.1,
           maximum=3600),
    Option("time_budget_s", "float", 50.0, "stop optimising after this long and keep the best result so far",
           minimum=1, maximum=86400),
    Option("seed", "int", 0, "random seed", minimum=0, maximum=2**31 - 1),
    Option("backend", "str", "auto", "auto: nvdiffrast on CUDA, PyTorch on CPU", choices=("auto", "nvdiffrast",
                                                                                           "torch")),
)


class NvdiffrecReconstructor(Reconstructor):
    """Differentiable-rendering optimisation of a DMTet surface and a texture, from fusion's shape."""

    spec = ComponentSpec(
        name="nvdiffrec",
        version=metadata.version("meshforge-nvdiffrec"),
        description="nvdiffrec on nvdiffrast: DMTet from fusion's shape + texture, optimised against the views",
        options=OPTIONS,
        needs=Needs(gpu=True, gpu_memory_gb=16.0),
        uses_view_subsets=True,
    )

    def availability(self) -> Availability:
        from importlib.util import find_spec

        if find_spec("torch") is None:
            return Availability.no("needs PyTorch with CUDA: pip install torch (a CUDA build)")
        if os.environ.get("MESHFORGE_NVDIFFREC_ALLOW_CPU") == "1":
            return Availability.yes()
        if find_spec("nvdiffrast") is None:
            return Availability.no("needs nvdiffrast: pip install diffrp-nvdiffrast (compiles on first use)")
        import torch  # only now: importing torch costs seconds

        if not torch.cuda.is_available():
            return Availability.no("needs a CUDA GPU (none visible here; set MESHFORGE_NVDIFFREC_ALLOW_CPU=1 for "
                                   "the slow PyTorch test path)")
        return Availability.yes()

    def reconstruct(self, capture, options, progress) -> ReconstructionResult:
        import torch

        from .optimize import reconstruct

        opts = dict(options)
        opts["device"] = "cuda" if torch.cuda.is_available() and opts["backend"] != "torch" else "cpu"
        opts["colour_grid"] = tuple(int(x) for x in str(opts["colour_grid"]).split(",") if x.strip())
        start = time.perf_counter()
        attempts = []
        for attempt in range(2):
            try:
                mesh, run = reconstruct(capture, opts, progress)
                break
            except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as exc:
                # Host memory counts like GPU memory: on the CPU path torch's allocator raises
                # RuntimeError("DefaultCPUAllocator: can't allocate memory ...") and numpy/numba
                # raise MemoryError. MemoryError used to escape this loop, so the retry was skipped
                # and the manager reported MODEL_OOM without the attempts (found by the provoked-OOM test).
                if not _out_of_memory(exc):
                    raise
                attempts.append({"train_res": opts["train_res"], "render_res": opts["render_res"],
                                 "texture_size": opts["texture_size"], "error": _first_line(exc)})
                _free(torch)
                if attempt == 1:
                    raise ModelOutOfMemory(
                        model="nvdiffrec", attempts=attempts,
                        reason=f"{attempts[-1]['error']} (also after retrying at half resolution: train_res "
                               f"{opts['train_res']}, render_res {opts['render_res']}); lower train_res, render_res, "
                               f"texture_size or grid_resolution (now {opts['grid_resolution']}), or run on a "
                               f"device with more memory") from exc
                # one retry with half the render sizes and a coarser colour field
                opts = {**opts, "train_res": max(32, opts["train_res"] // 2),
                        "render_res": max(32, opts["render_res"] // 2),
                        "texture_size": max(64, opts["texture_size"] // 2),
                        "colour_grid": tuple(max(8, r // 2) for r in opts["colour_grid"])}
        peak = torch.cuda.max_memory_allocated() / 2**30 if opts["device"] == "cuda" else None
        estimates = {**run.stats, "peak_gpu_memory_gib": round(peak, 3) if peak is not None else None,
                     "oom_retries": attempts}
        warnings = list(run.warnings) + (["ran out of memory, retried at half resolution"] if attempts else [])
        return ReconstructionResult(mesh, estimates, {**run.timings, "total": round(time.perf_counter() - start, 3)},
                                    warnings, {"loss_curve": run.curve}, files=run.files)


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text \
        or "can't allocate memory" in text or "not enough memory" in text


def _first_line(exc: BaseException) -> str:
    """The allocation failure in one line (a bare MemoryError's text is only the array's shape)."""
    text = (str(exc).splitlines() or [""])[0][:300]
    return f"host memory exhausted (MemoryError {text})" if isinstance(exc, MemoryError) else text


def _free(torch) -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@hookimpl
def register_reconstructors():
    return [NvdiffrecReconstructor()]
