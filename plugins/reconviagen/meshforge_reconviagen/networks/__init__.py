"""The ReconViaGen networks, written in plain PyTorch and state-dict compatible with the published checkpoints.

One module per network; :data:`NETWORKS` maps the manifest's ``network`` names to classes
whose constructor arguments are the manifest's ``config``. :func:`build` applies the one
deviation from the published configs that we allow: ``fp16=False`` keeps every tensor in
float32 (CPU runs; float16 is only used on CUDA, as in the reference).
"""

from __future__ import annotations

from torch import nn

from .conditions import SLatMultiViewCondition, SSMultiViewCondition
from .mesh_decoder import SLatMeshDecoder
from .slat_flow import SLatFlow
from .ss_decoder import SparseStructureDecoder
from .ss_flow import SparseStructureFlow
from .vggt import VGGTAggregator
from .vit import DinoV2

NETWORKS: dict[str, type[nn.Module]] = {
    "dinov2": DinoV2,
    "vggt_aggregator": VGGTAggregator,
    "ss_condition": SSMultiViewCondition,
    "slat_condition": SLatMultiViewCondition,
    "ss_flow": SparseStructureFlow,
    "ss_decoder": SparseStructureDecoder,
    "slat_flow": SLatFlow,
    "mesh_decoder": SLatMeshDecoder,
}


def build(network: str, config: dict, fp16: bool = True) -> nn.Module:
    """The network ``network`` with ``config``; ``fp16=False`` overrides ``use_fp16`` to keep float32."""
    config = dict(config)
    if "use_fp16" in config:
        config["use_fp16"] = bool(config["use_fp16"]) and fp16
    return NETWORKS[network](**config)
