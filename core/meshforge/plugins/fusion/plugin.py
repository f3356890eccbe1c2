"""The fusion reconstructor: meshforge's built-in, CPU-only, seconds-fast default model.

Registered under the ``meshforge.plugins`` entry point like any external plugin.
"""

from __future__ import annotations

from importlib import metadata

from ...components import ComponentSpec, Needs, Option, ReconstructionResult, Reconstructor
from ...hookspecs import hookimpl

OPTIONS = (
    Option("resolution", "int", 320, "voxels along the object's longest side", minimum=32, maximum=1024),
    Option("target_faces", "int", 200_000, "decimate the surface to about this many triangles",
           minimum=1_000, maximum=5_000_000),
    Option("texture", "str", "views", "views: atlas of crops of the input views (full resolution); "
           "xatlas: UV unwrap and blend the views; vertex: per-vertex colours", choices=("views", "xatlas", "vertex")),
    Option("max_texture_size", "int", 4096, "largest side of the texture image, in pixels", minimum=256,
           maximum=8192),
    Option("refine", "bool", True, "move vertices onto the exact depth hull after decimation (sharp edges)"),
    Option("min_component", "float", 0.01, "drop parts smaller than this fraction of the largest part",
           minimum=0.0, maximum=1.0),
    Option("unwrap_time_limit_s", "float", 30.0, "time limit of the xatlas UV unwrap before falling back "
           "to the view atlas", minimum=0.1, maximum=600.0),
)


class FusionReconstructor(Reconstructor):
    """Depth-hull fusion of the calibrated depth maps, textured from the views."""

    spec = ComponentSpec(
        name="fusion",
        version=metadata.version("meshforge"),
        description="CPU depth fusion: depth hull on a voxel grid, marching cubes, view-atlas texture",
        options=OPTIONS,
        needs=Needs(gpu=False),
        uses_view_subsets=True,
    )

    def reconstruct(self, capture, options, progress) -> ReconstructionResult:
        from .fuse import fuse  # numba kernels compile (or load from cache) on first use, not at start-up

        mesh, estimates, timings, warnings = fuse(capture, options, progress)
        return ReconstructionResult(mesh, estimates, timings, warnings)


@hookimpl
def register_reconstructors():
    return [FusionReconstructor()]
