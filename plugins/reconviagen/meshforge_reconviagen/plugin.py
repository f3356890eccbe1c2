"""Entry point of the ReconViaGen reconstructor.

Skeleton only: the plugin registers, so discovery, listing and request validation treat it
like any model, and it reports itself unavailable until the implementation lands (issue 6).
"""

from __future__ import annotations

from importlib import metadata

from meshforge import hookimpl
from meshforge.components import Availability, ComponentSpec, Needs, Reconstructor
from meshforge.errors import ModelUnavailable


class ReconViaGenReconstructor(Reconstructor):
    spec = ComponentSpec(
        name="reconviagen",
        version=metadata.version("meshforge-reconviagen"),
        description="TRELLIS generative reconstruction conditioned on the views through a VGGT aggregator",
        needs=Needs(gpu=True, gpu_memory_gb=16.0, weights="TRELLIS-image-large + ReconViaGen checkpoints "
                                                          "in MESHFORGE_RECONVIAGEN_WEIGHTS"),
        uses_view_subsets=False,
    )

    def availability(self) -> Availability:
        return Availability.no("not implemented yet in this version of meshforge-reconviagen")

    def reconstruct(self, capture, options, progress):
        raise ModelUnavailable(model="reconviagen", reason=self.availability().reason)


@hookimpl
def register_reconstructors():
    return [ReconViaGenReconstructor()]
