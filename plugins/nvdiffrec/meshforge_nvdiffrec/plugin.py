"""Entry point of the nvdiffrec reconstructor.

Skeleton only: the plugin registers, so discovery, listing and request validation treat it
like any model, and it reports itself unavailable until the implementation lands (issue 5).
"""

from __future__ import annotations

from importlib import metadata

from meshforge import hookimpl
from meshforge.components import Availability, ComponentSpec, Needs, Reconstructor
from meshforge.errors import ModelUnavailable


class NvdiffrecReconstructor(Reconstructor):
    spec = ComponentSpec(
        name="nvdiffrec",
        version=metadata.version("meshforge-nvdiffrec"),
        description="differentiable-rendering optimisation of mesh and texture on nvdiffrast (CUDA)",
        needs=Needs(gpu=True, gpu_memory_gb=16.0),
    )

    def availability(self) -> Availability:
        return Availability.no("not implemented yet in this version of meshforge-nvdiffrec")

    def reconstruct(self, capture, options, progress):
        raise ModelUnavailable(model="nvdiffrec", reason=self.availability().reason)


@hookimpl
def register_reconstructors():
    return [NvdiffrecReconstructor()]
