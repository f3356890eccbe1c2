"""Our ReconViaGen networks against the reference implementation, with the same random weights.

Needs a checkout of the reference (estheryang11/ReconViaGen @5c2338e: ``trellis/`` and
``wheels/vggt/``) at ``--reference``; it is imported from there and never copied into this
repository. For each network, our module is built, every tensor is filled with random values
(:mod:`meshforge_reconviagen.random_weights` scales; no zero-initialised layer survives) and saved
as safetensors; the reference module loads that file, ours loads it through our own loader. Both
get the same inputs; the harness prints, per network, the missing/unexpected keys on the
reference side and max |a − b|, max |a − b| / max |b| and the cosine, against a tolerance.
The whole sparse-structure sampler (reference ``FlowEulerGuidanceIntervalSampler`` around the
reference flow vs our sampler around our flow, same noise) is compared the same way.

    python3 benchmarks/reconviagen_equivalence.py --reference /path/to/ReconViaGen            # CPU: small configs
    python3 benchmarks/reconviagen_equivalence.py --reference /path/to/ReconViaGen --full --fp16 --sparse --out eq.json

Default (CPU): dense networks at reduced sizes (the reference's condition modules and VGGT's
ViT-L patch embedder fix their widths, so those run at full width on small images).
``--full``: the published configurations. ``--fp16``: float16 torsos as published (tolerance
1e-2 relative) instead of float32 everywhere (1e-4). ``--sparse``: also the SLat flow and the
mesh decoder. The reference runs them through its spconv backend and xformers/flash-attn:

- convolution: spconv, else spconv-triton (PyPI ``spconv-triton``, pure Python on Triton: CUDA
  only; its kernels compile and autotune on first use, minutes per dtype), else on the CPU a
  stand-in (dense ``conv3d`` over the occupied grid, spconv's 1³ shortcut reproduced) that
  needs small grids: use the small configurations, or ``--full --box 12 --voxels 500``;
- attention: xformers when its kernels run here, else a stand-in with xformers' interface on
  PyTorch SDPA, block by block (the PyPI wheel is built for one PyTorch; on another it imports
  but has no operator).

Which ones ran is printed and written under ``reference_kernels``. A network asked for but not
run counts as a failure.

Third-party modules the reference imports but these networks never call (rendering, losses,
progress bars) are registered as empty stand-ins; ``trellis/__init__.py`` and
``trellis/pipelines/__init__.py`` are bypassed so that importing a model does not import the
whole application. Set nothing else: the script sets ``ATTN_BACKEND=sdpa`` itself.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import time
import types
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ── importing the reference ────────────────────────────────────────────────────────────

def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = module
    return module


def _package(name: str, path: Path) -> None:
    """Register ``name`` as a package at ``path`` without running its ``__init__.py``."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    sys.modules[name] = module


KERNELS: dict = {}  # what computes the reference's sparse kernels on this machine (reported with the figures)


def _xformers_or_standin() -> str:
    """xformers when its attention runs here, else a stand-in with its interface on PyTorch SDPA.

    The reference calls ``xformers.ops.memory_efficient_attention`` with and without a
    ``BlockDiagonalMask`` (one block per sparse tensor in the batch). A wheel built for
    another PyTorch imports but cannot run; the stand-in then computes the same
    mathematical operation, block by block, so that the comparison is of network code.
    """
    import torch

    if importlib.util.find_spec("xformers") is not None and torch.cuda.is_available():
        try:
            import xformers
            import xformers.ops as xops

            q = torch.randn(1, 7, 2, 16, device="cuda", dtype=torch.float16)
            mask = xops.fmha.BlockDiagonalMask.from_seqlens([3, 4])
            xops.memory_efficient_attention(q, q, q, mask)
            return f"xformers {xformers.__version__}"
        except Exception as exc:  # noqa: BLE001 - reported; the stand-in takes over
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            for name in [m for m in sys.modules if m == "xformers" or m.startswith("xformers.")]:
                del sys.modules[name]
    else:
        reason = "xformers not installed or no CUDA"

    class BlockDiagonalMask:
        def __init__(self, q_seqlen, kv_seqlen):
            self.q_seqlen, self.kv_seqlen = list(q_seqlen), list(kv_seqlen or q_seqlen)

        @classmethod
        def from_seqlens(cls, q_seqlen, kv_seqlen=None):
            return cls(q_seqlen, kv_seqlen)

    def memory_efficient_attention(q, k, v, attn_bias=None):  # [B, N, H, C], as xformers
        sdpa = torch.nn.functional.scaled_dot_product_attention
        if attn_bias is None:
            return sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        outs = [sdpa(qq.transpose(1, 2), kk.transpose(1, 2), vv.transpose(1, 2)).transpose(1, 2)
                for qq, kk, vv in zip(q.split(attn_bias.q_seqlen, 1), k.split(attn_bias.kv_seqlen, 1),
                                      v.split(attn_bias.kv_seqlen, 1))]
        return torch.cat(outs, 1)

    fmha = types.SimpleNamespace(BlockDiagonalMask=BlockDiagonalMask)
    _stub("xformers")
    _stub("xformers.ops", memory_efficient_attention=memory_efficient_attention, fmha=fmha)
    sys.modules["xformers"].ops = sys.modules["xformers.ops"]
    return f"stand-in (PyTorch SDPA per block; xformers unusable: {reason})"


def _spconv_name() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("spconv", "spconv-cu126", "spconv-cu124", "spconv-triton"):
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return "none"


def _spconv_standin() -> None:
    """A CPU stand-in for the part of ``spconv.pytorch`` the reference's networks use.

    Submanifold convolution computed the plainest way: scatter the voxels into a dense grid,
    ``torch.nn.functional.conv3d`` (weights from spconv's (out, k, k, k, in) layout), read the
    result back at the same voxels. spconv's own tests check it against dense convolution the
    same way. A 1³ kernel is spconv's matrix product with the weight's memory read as (in, out)
    (spconv 2.x ``conv1x1``; spconv-triton keeps it for parity), not a dense convolution. Used only
    where no spconv runs (no CUDA): small configurations and small boxes, for bisecting.
    """
    import enum

    import torch

    class ConvAlgo(enum.Enum):
        Native = 0
        MaskImplicitGemm = 1

    class SparseConvTensor:
        def __init__(self, features, indices, spatial_shape, batch_size, grid=None, voxel_num=None,
                     indice_dict=None):
            self._features, self.indices = features, indices
            self.spatial_shape, self.batch_size = [int(s) for s in spatial_shape], batch_size
            self.grid, self.voxel_num, self.indice_dict = grid, voxel_num, indice_dict if indice_dict is not None else {}
            self.benchmark, self.benchmark_record, self.thrust_allocator = False, {}, None
            self._timer, self.force_algo, self.int8_scale = None, None, None

        @property
        def features(self):
            return self._features

        @features.setter
        def features(self, value):
            self._features = value

        def replace_feature(self, feats):
            out = SparseConvTensor(feats, self.indices, self.spatial_shape, self.batch_size, self.grid,
                                   self.voxel_num, self.indice_dict)
            return out

    class SubMConv3d(torch.nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, dilation=1, bias=True, indice_key=None, algo=None):
            super().__init__()
            self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
            self.weight = torch.nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size,
                                                         in_channels))
            self.bias = torch.nn.Parameter(torch.zeros(out_channels)) if bias else None

        def forward(self, x):
            if self.kernel_size == 1:  # as spconv: the (out, 1, 1, 1, in) memory read as (in, out)
                feats = x.features @ self.weight.reshape(self.in_channels, self.out_channels).to(x.features.dtype)
                return x.replace_feature(feats if self.bias is None else feats + self.bias.to(feats.dtype))
            c = x.indices.long()
            r = self.kernel_size // 2
            shape = [int(v) + 1 + 2 * r for v in c[:, 1:].max(0).values]
            grid = x.features.new_zeros(x.batch_size, self.in_channels, *shape)
            grid[c[:, 0], :, c[:, 1] + r, c[:, 2] + r, c[:, 3] + r] = x.features
            out = torch.nn.functional.conv3d(grid, self.weight.permute(0, 4, 1, 2, 3).to(grid.dtype),
                                             None if self.bias is None else self.bias.to(grid.dtype))
            # conv without padding over a grid padded by r: output voxel v sits at v (no shift)
            return x.replace_feature(out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]])

    def unsupported(*args, **kwargs):
        raise NotImplementedError("the CPU spconv stand-in has only SubMConv3d")

    _stub("spconv")
    _stub("spconv.pytorch", ConvAlgo=ConvAlgo, SparseConvTensor=SparseConvTensor, SubMConv3d=SubMConv3d,
          SparseConv3d=unsupported, SparseInverseConv3d=unsupported)
    sys.modules["spconv"].pytorch = sys.modules["spconv.pytorch"]


def import_reference(reference: Path) -> dict:
    os.environ.setdefault("ATTN_BACKEND", "sdpa")
    os.environ.setdefault("SPCONV_ALGO", "native")
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    sys.path.insert(0, str(reference / "wheels" / "vggt"))
    sys.path.insert(0, str(reference))
    _package("trellis", reference / "trellis")
    _package("trellis.pipelines", reference / "trellis" / "pipelines")
    _package("trellis.pipelines.samplers", reference / "trellis" / "pipelines" / "samplers")
    for name in ("render_utils", "postprocessing_utils", "loss_utils"):
        _stub(f"trellis.utils.{name}")
    _package("trellis.utils", reference / "trellis" / "utils")
    for name in ("render_utils", "postprocessing_utils", "loss_utils"):
        setattr(sys.modules["trellis.utils"], name, sys.modules[f"trellis.utils.{name}"])
    if importlib.util.find_spec("tqdm") is None:
        _stub("tqdm", tqdm=lambda it, **_: it)
    if importlib.util.find_spec("easydict") is None:
        class EasyDict(dict):
            def __getattr__(self, key):
                return self[key]

            def __setattr__(self, key, value):
                self[key] = value

        _stub("easydict", EasyDict=EasyDict)
    # the reference's sparse attention knows only xformers and flash-attn (not SDPA)
    os.environ.setdefault("SPARSE_ATTN_BACKEND", "xformers")
    KERNELS["sparse_attention"] = _xformers_or_standin()
    import torch

    if torch.cuda.is_available() or importlib.util.find_spec("spconv") is not None:
        KERNELS["sparse_conv"] = _spconv_name()
    else:
        _spconv_standin()
        KERNELS["sparse_conv"] = "stand-in (dense conv3d over the occupied grid; CPU, small configurations)"
    if importlib.util.find_spec("plyfile") is None:  # Gaussian splats' file format: imported, never used here
        _stub("plyfile", PlyData=None, PlyElement=None)
    if importlib.util.find_spec("xformers") is None and importlib.util.find_spec("flash_attn") is None:
        # import-only stand-in: lets the dense ModulatedSLATMultiViewCond (same file as the sparse
        # flow) import on a machine without either; any sparse attention call then fails loudly
        _stub("flash_attn")
    if "spconv" not in sys.modules and importlib.util.find_spec("spconv") is None and \
            importlib.util.find_spec("spconv_triton") is not None:
        sys.modules["spconv"] = importlib.import_module("spconv_triton")
    ref = {}
    ssf = importlib.import_module("trellis.models.sparse_structure_flow")
    ref["ss_flow"] = ssf.SparseStructureFlowModel
    ref["ss_condition"] = ssf.ModulatedMultiViewCond
    ref["ss_decoder"] = importlib.import_module("trellis.models.sparse_structure_vae").SparseStructureDecoder
    ref["sampler"] = importlib.import_module("trellis.pipelines.samplers.flow_euler").FlowEulerGuidanceIntervalSampler
    vt = importlib.import_module("vggt.layers.vision_transformer")
    ref["dinov2"] = partial(vt.DinoVisionTransformer, block_fn=partial(vt.Block, attn_class=vt.MemEffAttention),
                            init_values=1.0, block_chunks=0, interpolate_antialias=True, interpolate_offset=0.0)
    ref["vggt_aggregator"] = importlib.import_module("vggt.models.aggregator").Aggregator
    try:  # the sparse networks need the reference's sparse backend
        ref["slat_condition"] = importlib.import_module("trellis.models.structured_latent_flow").ModulatedSLATMultiViewCond
        ref["slat_flow"] = importlib.import_module("trellis.models.structured_latent_flow").SLatFlowModel
        ref["mesh_decoder"] = importlib.import_module("trellis.models.structured_latent_vae.decoder_mesh").SLatMeshDecoder
        ref["sparse"] = importlib.import_module("trellis.modules.sparse")
    except Exception as exc:  # noqa: BLE001 - reported, the dense part still runs
        ref["sparse_error"] = f"{type(exc).__name__}: {exc}"
    return ref


# ── configurations ─────────────────────────────────────────────────────────────────────

def configs(full: bool) -> dict:
    """Our configs per network (the manifests' format). Small ones keep every code path."""
    from meshforge_reconviagen import published

    if full:
        return {k: dict(v) for k, v in published.FULL.items()}
    dino_small = dict(img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
                      num_register_tokens=4)
    vitl_small_image = dict(published.DINOV2_FULL, img_size=56)
    return {
        "dinov2": dino_small,
        # the reference builds VGGT's patch embedder as ViT-L/14 whatever the width; depth is free
        "vggt_aggregator": dict(published.FULL["vggt_aggregator"], img_size=56, depth=2, patch_embed=vitl_small_image),
        # the reference condition modules fix 1024/2048 channels, four blocks and layers 4/11/17/23
        "ss_condition": dict(published.FULL["ss_condition"], num_init_tokens=64),
        "slat_condition": dict(published.FULL["slat_condition"]),
        "ss_flow": dict(resolution=8, in_channels=8, out_channels=8, model_channels=64, cond_channels=32, num_blocks=2,
                        num_heads=4, mlp_ratio=4.0, patch_size=2, qk_rms_norm=True, qk_rms_norm_cross=False,
                        use_fp16=True),
        "ss_decoder": dict(out_channels=1, latent_channels=8, num_res_blocks=1, num_res_blocks_middle=1,
                           channels=[32, 16, 8], use_fp16=True),
        "slat_flow": dict(published.TINY["slat_flow"], model_channels=64, num_heads=1, cond_channels=32),
        "mesh_decoder": dict(published.TINY["mesh_decoder"], model_channels=256, num_heads=4),
    }


def reference_module(ref: dict, network: str, cfg: dict, fp16: bool):
    """The reference module for our config ``cfg``."""
    if network == "dinov2":
        return ref["dinov2"](**{k: cfg[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads",
                                                    "mlp_ratio", "num_register_tokens")})
    if network == "vggt_aggregator":
        return ref["vggt_aggregator"](**{k: cfg[k] for k in ("img_size", "patch_size", "embed_dim", "depth",
                                                             "num_heads", "mlp_ratio", "num_register_tokens")},
                                      rope_freq=int(cfg["rope_freq"]))
    if network == "ss_condition":
        return ref["ss_condition"](cfg["channels"], cfg["aggregator_channels"] + cfg["image_channels"],
                                   num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                                   qk_rms_norm=cfg["qk_rms_norm"], qk_rms_norm_cross=cfg["qk_rms_norm_cross"],
                                   num_init_tokens=cfg["num_init_tokens"], use_fp16=fp16 and cfg["use_fp16"])
    if network == "slat_condition":
        return ref["slat_condition"](cfg["channels"], cfg["aggregator_channels"] + cfg["channels"],
                                     use_fp16=fp16 and cfg["use_fp16"])
    if network == "mesh_decoder":
        import torch

        if not torch.cuda.is_available():  # FlexiCubes' tables default to device="cuda"; they sit after out_layer
            init = importlib.import_module("trellis.representations.mesh.cube2mesh").SparseFeatures2Mesh.__init__
            init.__defaults__ = tuple("cpu" if d == "cuda" else d for d in init.__defaults__)
        return ref["mesh_decoder"](resolution=cfg["resolution"], model_channels=cfg["model_channels"],
                                   latent_channels=cfg["latent_channels"], num_blocks=cfg["num_blocks"],
                                   num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], attn_mode="swin",
                                   window_size=cfg["window_size"], use_fp16=fp16 and cfg["use_fp16"],
                                   representation_config={"use_color": cfg["use_color"]})
    cls = ref[network]
    accepted = inspect.signature(cls.__init__).parameters
    args = {k: v for k, v in cfg.items() if k in accepted}
    args["use_fp16"] = fp16 and cfg.get("use_fp16", False)
    if network == "ss_flow":
        args["pe_mode"] = "ape"
    return cls(**args)


# ── weights and comparison ─────────────────────────────────────────────────────────────

def random_file(net, path: Path, seed: int, torch) -> None:
    """Every tensor of ``net``'s state dict, random (float32), into a safetensors file."""
    from safetensors.torch import save_file

    from meshforge_reconviagen.random_weights import _value

    from meshforge_reconviagen.networks.layers import absolute_position_embedding

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, tensor in net.state_dict().items():
        value = _value(name, tuple(tensor.shape), generator, torch)
        if value is None:  # the sparse-structure flow's position embedding: computed, as in random_weights.write
            res = round(tensor.shape[0] ** (1 / 3))
            axes = torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij")
            value = absolute_position_embedding(torch.stack(axes, -1).reshape(-1, 3), tensor.shape[1])
        tensors[name] = value.float().contiguous()
    save_file(tensors, str(path), metadata={"meshforge_provenance": "random"})


def load_reference(module, path: Path, device, torch) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    own = module.state_dict()
    fitted = {k: v.to(own[k].dtype) for k, v in tensors.items() if k in own}
    result = module.load_state_dict(fitted, strict=False)
    module.to(device).eval().requires_grad_(False)
    # ModulatedSLATMultiViewCond builds fuse_blocks that its forward never calls (guide §2.3); we do not build them
    missing = [k for k in result.missing_keys if not k.startswith("fuse_blocks.")]
    return {"missing_on_reference": sorted(missing), "unused_by_reference": sorted(set(tensors) - set(own)),
            "never_called_on_reference": sorted(set(result.missing_keys) - set(missing))}


def compare(a, b, torch) -> dict:
    a, b = a.detach().double().cpu().flatten(), b.detach().double().cpu().flatten()
    if a.shape != b.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "cosine": 0.0, "finite": False,
                "shape": [list(a.shape), list(b.shape)]}
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item() or 1.0
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    return {"max_abs": diff, "max_rel": diff / scale, "cosine": cosine, "max_abs_reference": scale,
            "std_reference": b.std().item(), "finite": bool(torch.isfinite(a).all() and torch.isfinite(b).all())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="root of a ReconViaGen checkout (trellis/, wheels/vggt/)")
    ap.add_argument("--full", action="store_true", help="published configurations (GPU machine)")
    ap.add_argument("--fp16", action="store_true", help="float16 torsos as published (CUDA)")
    ap.add_argument("--sparse", action="store_true", help="also the SLat flow and mesh decoder (needs spconv)")
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--box", type=int, help="sparse voxels only inside the grid's first BOX³ cells (default: anywhere; "
                                            "a small box lets the CPU stand-in run the full-size sparse networks)")
    ap.add_argument("--voxels", type=int, default=4000, help="sparse voxels (at most a third of the cells)")
    ap.add_argument("--only", help="comma-separated networks")
    ap.add_argument("--out", help="write the figures here (JSON)")
    args = ap.parse_args()

    import torch

    from meshforge_reconviagen import networks
    from meshforge_reconviagen.networks.sparse import SparseTensor
    from meshforge_reconviagen.sampler import SamplerSettings, sample
    from meshforge_reconviagen.weights import load_network

    ref = import_reference(Path(args.reference).resolve())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fp16 = args.fp16 and device.type == "cuda"
    # float32 comparisons in float32: cuDNN's convolutions would otherwise round through TF32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    tolerance = 1e-2 if fp16 else 1e-4
    cfgs = configs(args.full)
    wanted = ["dinov2", "vggt_aggregator", "ss_condition", "slat_condition", "ss_flow", "ss_decoder", "sampler"]
    if args.sparse:
        wanted += ["slat_flow", "mesh_decoder"]
    if args.only:
        wanted = [w for w in wanted if w in args.only.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rvg-equivalence-"))
    gen = torch.Generator().manual_seed(1)
    n = args.views
    results: dict = {"device": str(device), "fp16": fp16, "tolerance_rel": tolerance, "full": args.full,
                     "reference": str(args.reference), "reference_kernels": KERNELS, "networks": {}}
    print(f"reference's sparse kernels: {KERNELS}", flush=True)

    def pair(network: str, seed: int):
        cfg = cfgs[network]
        with torch.device("meta"):
            ours_meta = networks.build(network, cfg, fp16)
        path = work / f"{network}.safetensors"
        random_file(ours_meta, path, seed, torch)
        ours = load_network(lambda: networks.build(network, cfg, fp16), path, "", device)
        theirs = reference_module(ref, network, cfg, fp16)
        keys = load_reference(theirs, path, device, torch)
        return ours, theirs, keys

    def record(network: str, keys: dict, figures: dict, seconds: float) -> None:
        ok = all(f["max_rel"] <= tolerance and f["finite"] for f in figures.values()) and \
            not keys.get("missing_on_reference")
        results["networks"][network] = {"ok": ok, "seconds": round(seconds, 1), **keys, "outputs": figures}
        worst = max(figures.values(), key=lambda f: f["max_rel"])
        print(f"{network:16s} {'OK  ' if ok else 'FAIL'} max_abs {worst['max_abs']:.3e} max_rel "
              f"{worst['max_rel']:.3e} cosine {worst['cosine']:.8f} |ref| {worst.get('max_abs_reference', 0):.2e} "
              f"(tolerance {tolerance:g} rel)"
              + (f"; reference lacks {len(keys['missing_on_reference'])} keys: {keys['missing_on_reference'][:3]}"
                 if keys.get("missing_on_reference") else "")
              + (f"; {len(keys['unused_by_reference'])} of our tensors unused by the reference"
                 if keys.get("unused_by_reference") else ""), flush=True)

    with torch.inference_mode():
        if "dinov2" in wanted:
            t = time.perf_counter()
            ours, theirs, keys = pair("dinov2", 10)
            size = cfgs["dinov2"]["img_size"]
            x = torch.randn(n, 3, size, size, generator=gen).to(device)
            record("dinov2", keys, {"x_prenorm": compare(ours(x)[0], theirs.forward_features(x)["x_prenorm"], torch),
                                    "x_norm": compare(ours(x)[1], torch.cat([theirs.forward_features(x)["x_norm_clstoken"][:, None],
                                                                             theirs.forward_features(x)["x_norm_regtokens"],
                                                                             theirs.forward_features(x)["x_norm_patchtokens"]], 1),
                                                      torch)}, time.perf_counter() - t)
        if "vggt_aggregator" in wanted:
            t = time.perf_counter()
            ours, theirs, keys = pair("vggt_aggregator", 11)
            size = cfgs["vggt_aggregator"]["img_size"]
            images = torch.rand(n, 3, size, size, generator=gen).to(device)
            mine = ours(images)
            theirs_list, start = theirs(images[None])
            figures = {f"depth_{i}": compare(mine[i], theirs_list[i], torch) for i in range(len(theirs_list))}
            figures["patch_start_idx"] = {"max_abs": float(start != 5), "max_rel": float(start != 5), "cosine": 1.0,
                                          "finite": True}
            record("vggt_aggregator", keys, figures, time.perf_counter() - t)
        c = cfgs["ss_condition"]
        tokens = 5 + (cfgs["vggt_aggregator"]["img_size"] // 14) ** 2
        aggregated = [torch.randn(1, n, tokens, c["aggregator_channels"], generator=gen).to(device) for _ in range(24)]
        image_cond = torch.randn(1, n, tokens, c["image_channels"], generator=gen).to(device)
        if "ss_condition" in wanted:
            t = time.perf_counter()
            ours, theirs, keys = pair("ss_condition", 12)
            record("ss_condition", keys, {"cond": compare(ours(dict(enumerate(aggregated)), image_cond[:, :, 5:]),
                                                          theirs(aggregated, image_cond[:, :, 5:]), torch)},
                   time.perf_counter() - t)
        if "slat_condition" in wanted and "slat_condition" not in ref:
            print(f"slat_condition skipped: the reference module does not import ({ref.get('sparse_error')})")
        if "slat_condition" in wanted and "slat_condition" in ref:
            t = time.perf_counter()
            ours, theirs, keys = pair("slat_condition", 13)
            record("slat_condition", keys, {"cond": compare(torch.cat(ours(dict(enumerate(aggregated)), image_cond)),
                                                            theirs(aggregated, image_cond), torch)},
                   time.perf_counter() - t)
        f = cfgs["ss_flow"]
        grid = (1, f["in_channels"], f["resolution"], f["resolution"], f["resolution"])
        cond = torch.randn(1, 77, f["cond_channels"], generator=gen).to(device)
        if "ss_flow" in wanted or "sampler" in wanted:
            t = time.perf_counter()
            ours_flow, theirs_flow, keys = pair("ss_flow", 14)
            x = torch.randn(*grid, generator=gen).to(device)
            tt = torch.tensor([640.0], device=device)
            if "ss_flow" in wanted:
                record("ss_flow", keys, {"velocity": compare(ours_flow(x, tt, cond), theirs_flow(x, tt, cond), torch)},
                       time.perf_counter() - t)
        if "sampler" in wanted:
            t = time.perf_counter()
            noise = torch.randn(*grid, generator=gen).to(device)
            settings = dict(steps=6, cfg_strength=7.5, cfg_interval=(0.5, 1.0), rescale_t=3.0)
            mine = sample(lambda xx, tt, cc: ours_flow(xx, torch.full((1,), 1000 * tt, device=device), cc), noise, cond,
                          torch.zeros_like(cond), SamplerSettings(**settings, sigma_min=1e-5))
            theirs_out = ref["sampler"](sigma_min=1e-5).sample(theirs_flow, noise, cond, torch.zeros_like(cond),
                                                               verbose=False, **settings).samples
            record("sampler", keys, {"ss_latent": compare(mine, theirs_out, torch)}, time.perf_counter() - t)
        if "ss_decoder" in wanted:
            t = time.perf_counter()
            ours, theirs, keys = pair("ss_decoder", 15)
            z = torch.randn(1, 8, 6, 6, 6, generator=gen).to(device)
            record("ss_decoder", keys, {"logits": compare(ours(z), theirs(z), torch)}, time.perf_counter() - t)
        if args.sparse:
            if "sparse_error" in ref:
                print(f"sparse networks skipped: the reference's sparse modules do not import ({ref['sparse_error']})")
                results["sparse_error"] = ref["sparse_error"]
                results["networks"]["sparse"] = {"ok": False, "skipped": ref["sparse_error"]}
            else:
                sp = ref["sparse"]
                res = cfgs["slat_flow"]["resolution"]
                box = min(args.box or res, res)
                idx = torch.randperm(box ** 3, generator=gen)[: min(args.voxels, box ** 3 // 3)].sort().values
                xyz = torch.stack([idx // box ** 2, (idx // box) % box, idx % box], 1)
                coords = torch.cat([torch.zeros_like(xyz[:, :1]), xyz], 1).int().to(device)
                feats = torch.randn(len(coords), 8, generator=gen).to(device)
                if "slat_flow" in wanted:
                    t = time.perf_counter()
                    ours, theirs, keys = pair("slat_flow", 16)
                    ctx = [torch.randn(1, 21, cfgs["slat_flow"]["cond_channels"], generator=gen).to(device)
                           for _ in range(n)]
                    tt = torch.tensor([640.0], device=device)
                    mine = ours(SparseTensor(coords, feats), tt, ctx).feats
                    theirs_out = theirs(sp.SparseTensor(feats=feats, coords=coords), tt, ctx).feats
                    record("slat_flow", keys, {"velocity": compare(mine, theirs_out, torch)}, time.perf_counter() - t)
                if "mesh_decoder" in wanted:
                    t = time.perf_counter()
                    ours, theirs, keys = pair("mesh_decoder", 17)
                    captured = {}
                    theirs.out_layer.register_forward_hook(lambda m, i, o: captured.setdefault("feats", o))
                    mine = ours(SparseTensor(coords, feats))
                    try:
                        theirs(sp.SparseTensor(feats=feats, coords=coords))
                    except Exception as exc:  # noqa: BLE001 - FlexiCubes after out_layer may need CUDA pieces
                        print(f"reference mesh extraction after out_layer failed ({exc}); features were captured")
                    other = captured["feats"]
                    other_coords, other_feats = (other.coords, other.feats) if hasattr(other, "feats") else (None, other)
                    order_ours = torch.argsort(_keys(mine.coords))
                    order_theirs = torch.argsort(_keys(other_coords))
                    record("mesh_decoder", keys, {"features": compare(mine.feats[order_ours],
                                                                      other_feats[order_theirs], torch)},
                           time.perf_counter() - t)
    verdict = all(r["ok"] for r in results["networks"].values())
    results["all_ok"] = verdict
    print("ALL OK" if verdict else "MISMATCH (see above)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if verdict else 1


def _keys(coords):
    c = coords.long()
    return ((c[:, 0] * 4096 + c[:, 1]) * 4096 + c[:, 2]) * 4096 + c[:, 3]


if __name__ == "__main__":
    sys.exit(main())
