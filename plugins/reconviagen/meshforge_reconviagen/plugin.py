"""Entry point of the ReconViaGen reconstructor (TRELLIS generation conditioned on the views through VGGT).

Thin on purpose: the spec and options, the availability check (weights checked against the
manifest by their headers, no torch needed for that part), and ``reconstruct`` with one
low-memory retry. The work is in :mod:`.pipeline`.

Environment:
- ``MESHFORGE_RECONVIAGEN_WEIGHTS``: the weights directory (layout in the README).
- ``MESHFORGE_RECONVIAGEN_ALLOW_CPU=1``: available without a CUDA GPU (tests; slow at full size).
- ``MESHFORGE_RECONVIAGEN_MANIFEST``: another manifest (``tiny``: the random-weight test architecture).
- ``MESHFORGE_RECONVIAGEN_FP16``: ``1`` float16 torsos, ``0`` float32 throughout; unset (or ``auto``):
  float16 exactly on CUDA. ``1`` on the CPU runs the CUDA path's dtype conversion there (tests, bench).
"""

from __future__ import annotations

import os
import threading
import time
from importlib import metadata
from importlib.util import find_spec

from meshforge import hookimpl
from meshforge.components import (Availability, ComponentSpec, Needs, Option, ReconstructionResult,
                                  Reconstructor)
from meshforge.errors import ModelOutOfMemory, ModelUnavailable

from . import manifest as mf

OPTIONS = (
    Option("seed", "int", 0, "seed of the CPU noise generator (ReconViaGen's default is 0)", minimum=0,
           maximum=2**31 - 1),
    Option("ss_steps", "int", 30, "Euler steps of the sparse-structure flow", minimum=1, maximum=500),
    Option("ss_cfg_strength", "float", 7.5, "guidance strength of the sparse-structure flow", minimum=0, maximum=50),
    Option("ss_rescale_t", "float", 3.0, "time rescaling of the sparse-structure flow", minimum=0.1, maximum=20),
    Option("slat_steps", "int", 12, "Euler steps of the structured-latent flow", minimum=1, maximum=500),
    Option("slat_cfg_strength", "float", 3.0, "guidance strength of the structured-latent flow", minimum=0,
           maximum=50),
    Option("slat_rescale_t", "float", 3.0, "time rescaling of the structured-latent flow", minimum=0.1, maximum=20),
    Option("cfg_interval_start", "float", 0.5, "guidance only for t at or above this", minimum=0, maximum=1),
    Option("cfg_interval_end", "float", 1.0, "guidance only for t at or below this", minimum=0, maximum=1),
    Option("guidance", "str", "rvg", "rvg: (1+w)·cond − w·uncond (ReconViaGen port); gap: w·cond + (1−w)·uncond "
           "(authors' repo)", choices=("rvg", "gap")),
    Option("guidance_rescale", "float", 0.0, "gap guidance only: keep this share of the x0 std rescaling",
           minimum=0, maximum=1),
    Option("max_voxels", "int", 32768, "keep at most this many occupied voxels, the most confident (TRELLIS "
           "trained with ≤ 32768; 0: no limit)", minimum=0, maximum=262144),
    Option("frame", "str", "register", "register: fit the result to the capture's depth (24 orientations + "
           "similarity ICP); box: z-up → y-up, scaled onto the depth's bounding box", choices=("register", "box")),
    Option("texture", "str", "model", "model: the mesh decoder's colour head (the appearance decoder) baked onto "
           "the UV atlas; views: colour from the capture's photographs", choices=("model", "views")),
    Option("target_faces", "int", 50_000, "faces after decimation", minimum=100, maximum=2_000_000),
    Option("texture_size", "int", 1024, "side of the texture atlas", minimum=64, maximum=8192),
    Option("unwrap_time_limit_s", "float", 60.0, "xatlas time limit before the fallback texture", minimum=0.1,
           maximum=3600),
)


#: voxel cap of the low-memory retry
LOW_MEMORY_VOXELS = 16384
FP16_ENV = "MESHFORGE_RECONVIAGEN_FP16"
FP16_VALUES = {"": None, "auto": None, "1": True, "true": True, "0": False, "false": False}


def fp16_setting() -> bool | None:
    """``MESHFORGE_RECONVIAGEN_FP16``: True (``1``), False (``0``) or None (unset/``auto``: float16 on CUDA only)."""
    return FP16_VALUES.get(os.environ.get(FP16_ENV, "").strip().lower())  # other values: unavailable (_problems)


class ReconViaGenReconstructor(Reconstructor):
    """ReconViaGen with our own networks; weights from ``MESHFORGE_RECONVIAGEN_WEIGHTS``."""

    spec = ComponentSpec(
        name="reconviagen",
        version=metadata.version("meshforge-reconviagen"),
        description="TRELLIS generative reconstruction conditioned on the views through a VGGT aggregator",
        options=OPTIONS,
        needs=Needs(gpu=True, gpu_memory_gb=16.0, weights="ReconViaGen (trellis-vggt-v0-2, vggt-object-v0-1) + "
                                                          "DINOv2 ViT-L/14-reg as safetensors in "
                                                          "MESHFORGE_RECONVIAGEN_WEIGHTS"),
        uses_view_subsets=False,  # needs every view's depth to place the result
    )

    def __init__(self):
        self._models = None  # (key, Models): kept between jobs of one worker process
        self._lock = threading.Lock()

    # -- availability ------------------------------------------------------------------
    def _problems(self) -> tuple[list[str], "mf.Manifest | None", str | None]:
        reasons = []
        for module, package in (("torch", "torch"), ("safetensors", "safetensors")):
            if find_spec(module) is None:
                reasons.append(f"needs {package}: pip install {package}")
        if os.environ.get(FP16_ENV, "").strip().lower() not in FP16_VALUES:
            reasons.append(f"{FP16_ENV}={os.environ[FP16_ENV]!r} is not one of 1, 0, auto")
        try:
            manifest = mf.load()
        except (OSError, ValueError, KeyError) as exc:
            return reasons + [f"cannot read the manifest ({exc})"], None, None
        directory = os.environ.get(mf.WEIGHTS_ENV)
        if not directory:
            files = ", ".join(f.file for f in manifest.files)
            reasons.append(f"{mf.WEIGHTS_ENV} is not set; point it at a directory holding {files} "
                           f"({mf.README_HINT})")
        else:
            problems = mf.check(manifest, directory)
            if problems:
                reasons.append(mf.describe(problems, directory))
        return reasons, manifest, directory

    def availability(self) -> Availability:
        reasons, _, _ = self._problems()
        if not reasons and os.environ.get("MESHFORGE_RECONVIAGEN_ALLOW_CPU") != "1":
            import torch  # only now: importing torch costs seconds

            if not torch.cuda.is_available():
                reasons.append("needs a CUDA GPU (none visible here; MESHFORGE_RECONVIAGEN_ALLOW_CPU=1 runs on the "
                               "CPU, which is only practical for the tiny test architecture)")
        return Availability.no("; ".join(reasons)) if reasons else Availability.yes()

    # -- reconstruction ----------------------------------------------------------------
    def reconstruct(self, capture, options, progress) -> ReconstructionResult:
        reasons, manifest, directory = self._problems()
        if reasons:  # the weights may have gone since start-up: fail fast, before any GPU work
            raise ModelUnavailable(model="reconviagen", reason="; ".join(reasons))
        import torch

        from . import pipeline

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # the peak reported is this job's
        start = time.perf_counter()
        attempts = []
        for attempt in range(2):
            low_memory = attempt == 1
            # the retry: networks offloaded between stages, smaller attention batches and at most
            # LOW_MEMORY_VOXELS voxels (a coarser structure: the "lower resolution" of this model)
            run_options = dict(options)
            if low_memory:
                run_options["max_voxels"] = min(options["max_voxels"] or LOW_MEMORY_VOXELS, LOW_MEMORY_VOXELS)
            try:
                with self._lock:
                    progress.update(0.0, "loading the networks")
                    loaded = time.perf_counter()
                    models = self._load(manifest, directory, device, offload=low_memory)
                    loading_s = time.perf_counter() - loaded
                    mesh, run = pipeline.reconstruct(models, capture, run_options, progress,
                                                     window_tokens=(1 << 18) if low_memory else (1 << 20))
                break
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not _out_of_memory(exc):
                    raise
                attempts.append({"low_memory": low_memory, "error": str(exc).splitlines()[0][:300]})
                self._models = None
                pipeline.free_memory()
                if attempt == 1:
                    raise ModelOutOfMemory(model="reconviagen", reason=f"{attempts[-1]['error']} (also after retrying "
                                                                       "with networks offloaded to the CPU)",
                                           attempts=attempts) from exc
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        run.estimates.update({"peak_gpu_memory_gib": round(peak, 3) if peak is not None else None,
                              "oom_retries": attempts})
        if attempts:
            run.warnings.append(f"ran out of GPU memory, retried with the networks offloaded to the CPU and at most "
                                f"{run_options['max_voxels']} voxels")
        run.timings["weights_loading"] = round(loading_s, 3)  # ~0 when this worker already holds them
        run.timings["total"] = round(time.perf_counter() - start, 3)
        return ReconstructionResult(mesh, run.estimates, run.timings, run.warnings)

    def _load(self, manifest, directory, device, offload: bool):
        from . import pipeline

        fp16 = fp16_setting()
        key = (str(manifest.path), str(directory), str(device), offload, fp16)
        if self._models is None or self._models[0] != key:
            self._models = None
            pipeline.free_memory()
            self._models = (key, pipeline.load_models(manifest, directory, device, offload, fp16=fp16))
        return self._models[1]


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text \
        or "not enough memory" in text


@hookimpl
def register_reconstructors():
    return [ReconViaGenReconstructor()]
