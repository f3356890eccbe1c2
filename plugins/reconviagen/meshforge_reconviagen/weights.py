"""Reading safetensors files: headers without tensors (for checks), tensors into networks (for runs).

A safetensors file is an 8-byte little-endian header length, a JSON header
(``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``) and the raw
data. :func:`read_header` parses only the header, so :mod:`.manifest` can check a 5 GB file
in microseconds without torch. :func:`load_network` builds a network on the meta device and
fills it from the file (each tensor read once, straight to the target device and dtype).

Files written by :mod:`.random_weights` carry ``{"meshforge_provenance": "random"}`` in their
metadata; :func:`provenance` reports that, so results made from them are labelled.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

#: safetensors dtype codes -> torch dtype names
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
          "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
PROVENANCE_KEY = "meshforge_provenance"
_MAX_HEADER = 100 * 2**20  # the format's own limit


class WeightsFileError(Exception):
    """Raised when a file is not a well-formed safetensors file."""


def _raw_header(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise WeightsFileError(f"{size} bytes, too short for a header")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER or 8 + length > size:
            raise WeightsFileError(f"header length {length} does not fit a {size}-byte file")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightsFileError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WeightsFileError("header is not a JSON object")
    return header


def read_header(path: str | Path) -> dict:
    """``{tensor name: {"dtype": torch dtype name, "shape": [...]}}`` of a safetensors file."""
    out = {}
    for name, info in _raw_header(Path(path)).items():
        if name == "__metadata__":
            continue
        try:
            out[name] = {"dtype": DTYPES.get(info["dtype"], info["dtype"]), "shape": list(info["shape"])}
        except (TypeError, KeyError):
            raise WeightsFileError(f"malformed entry for {name!r}") from None
    return out


def read_metadata(path: str | Path) -> dict:
    """The file's ``__metadata__`` (string to string), empty if it has none."""
    meta = _raw_header(Path(path)).get("__metadata__") or {}
    return dict(meta) if isinstance(meta, dict) else {}


def provenance(path: str | Path) -> str:
    """``"random"`` for files written by :mod:`.random_weights`, else ``"checkpoint"``."""
    return "random" if read_metadata(path).get(PROVENANCE_KEY) == "random" else "checkpoint"


def load_network(build, path: str | Path, prefix: str, device):
    """A network filled from a safetensors file.

    Parameters:
        build(callable): makes the network; called under ``torch.device("meta")`` so that no
            memory is allocated before the real tensors arrive.
        path: the safetensors file; ``prefix`` is prepended to every state-dict key.
        device: where the tensors go (``torch.device``); each is cast to the dtype the
            network chose for it (float16 torso on CUDA, float32 elsewhere).

    Every key of the network's state dict must be in the file (the manifest check makes
    sure of it); other tensors in the file are not read.
    """
    import torch
    from safetensors import safe_open

    with torch.device("meta"):
        net = build()
    wanted = net.state_dict()
    loaded = {}
    with safe_open(str(path), framework="pt", device=str(device)) as fh:
        for name, meta_tensor in wanted.items():
            loaded[name] = fh.get_tensor(prefix + name).to(meta_tensor.dtype)
    net.load_state_dict(loaded, strict=True, assign=True)
    return net.eval().requires_grad_(False)
