"""The published checkpoints, written down as facts: which files, which configurations, which tensors.

This module is the *source* of the committed manifests (``manifests/full.json``,
``manifests/tiny.json``). It does not look at our network code: every tensor name, shape
and dtype below is derived from the published configurations and the reference code's
key layout, as recorded in shared/guides/reconviagen.md §3 and read from

- microsoft/TRELLIS @6b0d647 ``configs/generation/ss_flow_img_dit_L_16l8_fp16.json``,
  ``configs/vae/ss_vae_conv3d_16l8_fp16.json``, ``configs/generation/slat_flow_img_dit_L_64l8p2_fp16.json``,
  ``configs/vae/slat_vae_dec_mesh_swin8_B_64l8_fp16.json`` (architectures, ``use_fp16``);
- estheryang11/ReconViaGen @5c2338e ``trellis/models/*.py``, ``trellis/modules/utils.py`` (which
  layers ``use_fp16`` turns to float16: Linear/Conv weights *and biases* inside the torso),
  ``wheels/vggt/vggt/models/aggregator.py`` (VGGT key layout);
- facebookresearch/dinov2 @b8931f7 ``dinov2/hub/backbones.py`` (ViT-L/14 with 4 registers).

A test checks that the manifests equal this module's output and that our networks, built
on the meta device, have exactly these state dicts; the equivalence harness
(benchmarks/reconviagen_equivalence.py) checks the same against the reference classes.

Regenerate the manifests with ``python -m meshforge_reconviagen.published``.
"""

from __future__ import annotations

import json
from pathlib import Path

F32, F16 = "float32", "float16"
#: a tensor whose dtype the released files do not fix (the ReconViaGen condition modules'
#: ``use_fp16`` is unknown offline, guide §3.4/§3.5): either is accepted
F16_OR_F32 = "float16|float32"

MANIFEST_DIR = Path(__file__).with_name("manifests")

# ── configurations ─────────────────────────────────────────────────────────────────────

#: DINOv2 ViT-L/14 with 4 registers (DV2 hub ``dinov2_vitl14_reg``): the image condition
#: model of TRELLIS, and VGGT's patch embedder
DINOV2_FULL = dict(img_size=518, patch_size=14, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                   num_register_tokens=4)

FULL = {
    "dinov2": DINOV2_FULL,
    "vggt_aggregator": dict(img_size=518, patch_size=14, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                            num_register_tokens=4, rope_freq=100.0, patch_embed=DINOV2_FULL),
    # GAP train_ss.py; RVG ModulatedMultiViewCond defaults (use_fp16 False, 4 blocks, layers 4/11/17/23)
    "ss_condition": dict(channels=1024, aggregator_channels=2048, image_channels=1024, num_heads=16, mlp_ratio=4.0,
                         num_init_tokens=4096, qk_rms_norm=True, qk_rms_norm_cross=False,
                         intermediate_layer_idx=[4, 11, 17, 23], patch_start_idx=5, use_fp16=False),
    # GAP train_slat.py; RVG ModulatedSLATMultiViewCond default use_fp16 True (only linear_blocks)
    "slat_condition": dict(channels=1024, aggregator_channels=2048, intermediate_layer_idx=[4, 11, 17, 23],
                           use_fp16=True),
    "ss_flow": dict(resolution=16, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
                    num_blocks=24, num_heads=16, mlp_ratio=4.0, patch_size=1, qk_rms_norm=True,
                    qk_rms_norm_cross=False, use_fp16=True),
    "ss_decoder": dict(out_channels=1, latent_channels=8, num_res_blocks=2, num_res_blocks_middle=2,
                       channels=[512, 128, 32], use_fp16=True),
    "slat_flow": dict(resolution=64, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
                      num_blocks=24, num_heads=16, mlp_ratio=4.0, patch_size=2, num_io_res_blocks=2,
                      io_block_channels=[128], qk_rms_norm=True, qk_rms_norm_cross=False, use_fp16=True),
    "mesh_decoder": dict(resolution=64, model_channels=768, latent_channels=8, num_blocks=12, num_heads=12,
                         mlp_ratio=4.0, window_size=8, num_groups=32, use_color=True, use_fp16=True),
}

#: the same architectures, narrow and shallow, for CPU tests; widths keep the reference's
#: ratios where the code relies on them (32 groups in the mesh decoder's GroupNorms)
DINOV2_TINY = dict(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                   num_register_tokens=4)
TINY = {
    "dinov2": DINOV2_TINY,
    "vggt_aggregator": dict(img_size=56, patch_size=14, embed_dim=32, depth=4, num_heads=2, mlp_ratio=4.0,
                            num_register_tokens=4, rope_freq=100.0, patch_embed=DINOV2_TINY),
    "ss_condition": dict(channels=32, aggregator_channels=64, image_channels=32, num_heads=2, mlp_ratio=4.0,
                         num_init_tokens=64, qk_rms_norm=True, qk_rms_norm_cross=False,
                         intermediate_layer_idx=[0, 1, 2, 3], patch_start_idx=5, use_fp16=False),
    "slat_condition": dict(channels=32, aggregator_channels=64, intermediate_layer_idx=[0, 1, 2, 3], use_fp16=True),
    "ss_flow": dict(resolution=4, in_channels=8, out_channels=8, model_channels=32, cond_channels=32,
                    num_blocks=2, num_heads=2, mlp_ratio=4.0, patch_size=1, qk_rms_norm=True,
                    qk_rms_norm_cross=False, use_fp16=True),
    "ss_decoder": dict(out_channels=1, latent_channels=8, num_res_blocks=1, num_res_blocks_middle=1,
                       channels=[32, 16, 8], use_fp16=True),
    "slat_flow": dict(resolution=16, in_channels=8, out_channels=8, model_channels=32, cond_channels=32,
                      num_blocks=2, num_heads=2, mlp_ratio=4.0, patch_size=2, num_io_res_blocks=2,
                      io_block_channels=[16], qk_rms_norm=True, qk_rms_norm_cross=False, use_fp16=True),
    "mesh_decoder": dict(resolution=16, model_channels=256, latent_channels=8, num_blocks=2, num_heads=4,
                         mlp_ratio=4.0, window_size=4, num_groups=32, use_color=True, use_fp16=True),
}

# ── the files an operator provides ─────────────────────────────────────────────────────

RVG_HUB = "esther11/trellis-vggt-v0-2 (= Stable-X/trellis-vggt-v0-2)"
#: (file, network, prefix inside the file, where it comes from)
FILES = [
    ("dinov2_vitl14_reg4.safetensors", "dinov2", "",
     "DINOv2 ViT-L/14 with registers: dinov2_vitl14_reg4_pretrain.pth from dl.fbaipublicfiles.com/dinov2, "
     "converted to safetensors (plugins/reconviagen/README.md, section 'Weights')"),
    ("vggt_object.safetensors", "vggt_aggregator", "aggregator.",
     "model.safetensors of esther11/vggt-object-v0-1 (= Stable-X/vggt-object-v0-1); only aggregator.* is used"),
    ("ss_condition.safetensors", "ss_condition", "",
     f"{RVG_HUB}: the checkpoint pipeline.json names under models.sparse_structure_vggt_cond"),
    ("ss_flow.safetensors", "ss_flow", "",
     f"{RVG_HUB}: the checkpoint pipeline.json names under models.sparse_structure_flow_model"),
    ("ss_decoder.safetensors", "ss_decoder", "",
     f"{RVG_HUB}: models.sparse_structure_decoder (TRELLIS-image-large ckpts/ss_dec_conv3d_16l8_fp16)"),
    ("slat_condition.safetensors", "slat_condition", "",
     f"{RVG_HUB}: the checkpoint pipeline.json names under models.slat_vggt_cond"),
    ("slat_flow.safetensors", "slat_flow", "",
     f"{RVG_HUB}: the checkpoint pipeline.json names under models.slat_flow_model"),
    ("slat_decoder_mesh.safetensors", "mesh_decoder", "",
     f"{RVG_HUB}: models.slat_decoder_mesh (TRELLIS-image-large ckpts/slat_dec_mesh_swin8_B_64l8m256c_fp16)"),
]

#: pipeline.json facts used at run time (TRL slat_flow config ``normalization``; sampler ``sigma_min``)
PIPELINE = {
    "slat_normalization": {
        "mean": [-2.1687545776367188, -0.004347046371549368, -0.13352349400520325, -0.08418072760105133,
                 -0.5271206498146057, 0.7238689064979553, -1.1414450407028198, 1.2039363384246826],
        "std": [2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
                2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338],
    },
    "sigma_min": 1e-5,
}


# ── key layouts ────────────────────────────────────────────────────────────────────────

class _Keys:
    """An ordered {name: [shape, dtype]} being built."""

    def __init__(self):
        self.items: dict = {}

    def add(self, name: str, shape, dtype: str = F32) -> None:
        self.items[name] = [list(shape), dtype]

    def linear(self, name: str, out: int, inp: int, dtype: str = F32, bias: bool = True) -> None:
        self.add(f"{name}.weight", (out, inp), dtype)
        if bias:
            self.add(f"{name}.bias", (out,), dtype)

    def norm(self, name: str, channels: int) -> None:
        """An affine LayerNorm/GroupNorm: always float32 (use_fp16 only converts Linear/Conv)."""
        self.add(f"{name}.weight", (channels,))
        self.add(f"{name}.bias", (channels,))


def _vit(k: _Keys, p: str, c: dict) -> None:
    """DINOv2 ViT (DV2 ``vision_transformer.py``, block_chunks=0)."""
    d, n = c["embed_dim"], (c["img_size"] // c["patch_size"]) ** 2
    hidden = int(d * c["mlp_ratio"])
    k.add(f"{p}cls_token", (1, 1, d))
    k.add(f"{p}pos_embed", (1, 1 + n, d))
    k.add(f"{p}register_tokens", (1, c["num_register_tokens"], d))
    k.add(f"{p}mask_token", (1, d))
    k.add(f"{p}patch_embed.proj.weight", (d, 3, c["patch_size"], c["patch_size"]))
    k.add(f"{p}patch_embed.proj.bias", (d,))
    for i in range(c["depth"]):
        b = f"{p}blocks.{i}."
        k.norm(b + "norm1", d)
        k.linear(b + "attn.qkv", 3 * d, d)
        k.linear(b + "attn.proj", d, d)
        k.add(b + "ls1.gamma", (d,))
        k.norm(b + "norm2", d)
        k.linear(b + "mlp.fc1", hidden, d)
        k.linear(b + "mlp.fc2", d, hidden)
        k.add(b + "ls2.gamma", (d,))
    k.norm(f"{p}norm", d)


def _dinov2(k: _Keys, c: dict) -> None:
    _vit(k, "", c)


def _vggt_aggregator(k: _Keys, c: dict) -> None:
    """VGGT ``Aggregator`` (alternating frame/global blocks with qk LayerNorm and 2D RoPE)."""
    _vit(k, "patch_embed.", c["patch_embed"])
    d, hidden, head = c["embed_dim"], int(c["embed_dim"] * c["mlp_ratio"]), c["embed_dim"] // c["num_heads"]
    for kind in ("frame_blocks", "global_blocks"):
        for i in range(c["depth"]):
            b = f"{kind}.{i}."
            k.norm(b + "norm1", d)
            k.linear(b + "attn.qkv", 3 * d, d)
            k.norm(b + "attn.q_norm", head)
            k.norm(b + "attn.k_norm", head)
            k.linear(b + "attn.proj", d, d)
            k.add(b + "ls1.gamma", (d,))
            k.norm(b + "norm2", d)
            k.linear(b + "mlp.fc1", hidden, d)
            k.linear(b + "mlp.fc2", d, hidden)
            k.add(b + "ls2.gamma", (d,))
    k.add("camera_token", (1, 2, 1, d))
    k.add("register_token", (1, 2, c["num_register_tokens"], d))


def _attention(k: _Keys, p: str, channels: int, heads: int, dtype: str, ctx: int | None, rms: bool) -> None:
    """TRELLIS ``MultiHeadAttention``: self (to_qkv) or cross (to_q, to_kv); RMS gammas stay float32."""
    if ctx is None:
        k.linear(p + "to_qkv", 3 * channels, channels, dtype)
    else:
        k.linear(p + "to_q", channels, channels, dtype)
        k.linear(p + "to_kv", 2 * channels, ctx, dtype)
    if rms:
        k.add(p + "q_rms_norm.gamma", (heads, channels // heads))
        k.add(p + "k_rms_norm.gamma", (heads, channels // heads))
    k.linear(p + "to_out", channels, channels, dtype)


def _cross_block(k: _Keys, p: str, c: dict, channels: int, ctx: int, dtype: str, modulated: bool) -> None:
    """``ModulatedTransformerCrossBlock`` (and its sparse twin), or ``..._woT`` without adaLN."""
    hidden = int(channels * c["mlp_ratio"])
    k.norm(p + "norm2", channels)  # norm1 and norm3 have no affine parameters
    _attention(k, p + "self_attn.", channels, c["num_heads"], dtype, None, c["qk_rms_norm"])
    _attention(k, p + "cross_attn.", channels, c["num_heads"], dtype, ctx, c["qk_rms_norm_cross"])
    k.linear(p + "mlp.mlp.0", hidden, channels, dtype)
    k.linear(p + "mlp.mlp.2", channels, hidden, dtype)
    if modulated:
        k.linear(p + "adaLN_modulation.1", 6 * channels, channels, dtype)


def _timestep_embedder(k: _Keys, channels: int) -> None:
    k.linear("t_embedder.mlp.0", channels, 256)
    k.linear("t_embedder.mlp.2", channels, channels)


def _ss_condition(k: _Keys, c: dict) -> None:
    dtype = F16_OR_F32
    ctx = c["aggregator_channels"] + c["image_channels"]
    for j in range(len(c["intermediate_layer_idx"])):
        _cross_block(k, f"cond_blocks.{j}.", c, c["channels"], ctx, dtype, modulated=False)
    k.add("multiview_cond_tokens", (1, c["num_init_tokens"], c["channels"]), dtype)


def _slat_condition(k: _Keys, c: dict) -> None:
    for j in range(len(c["intermediate_layer_idx"])):
        k.linear(f"linear_blocks.{j}.0", c["channels"], c["aggregator_channels"] + c["channels"], F16_OR_F32)


def _ss_flow(k: _Keys, c: dict) -> None:
    torso = F16 if c["use_fp16"] else F32
    ch, p3 = c["model_channels"], c["patch_size"] ** 3
    k.add("pos_emb", ((c["resolution"] // c["patch_size"]) ** 3, ch))
    _timestep_embedder(k, ch)
    k.linear("input_layer", ch, c["in_channels"] * p3)
    for i in range(c["num_blocks"]):
        _cross_block(k, f"blocks.{i}.", c, ch, c["cond_channels"], torso, modulated=True)
    k.linear("out_layer", c["out_channels"] * p3, ch)


def _conv3d(k: _Keys, name: str, out: int, inp: int, dtype: str) -> None:
    k.add(f"{name}.weight", (out, inp, 3, 3, 3), dtype)
    k.add(f"{name}.bias", (out,), dtype)


def _ss_decoder(k: _Keys, c: dict) -> None:
    torso = F16 if c["use_fp16"] else F32
    chs = c["channels"]

    def res_block(p: str, ch: int) -> None:
        k.norm(p + "norm1", ch)
        _conv3d(k, p + "conv1", ch, ch, torso)
        k.norm(p + "norm2", ch)
        _conv3d(k, p + "conv2", ch, ch, torso)

    _conv3d(k, "input_layer", chs[0], c["latent_channels"], F32)
    for i in range(c["num_res_blocks_middle"]):
        res_block(f"middle_block.{i}.", chs[0])
    index = 0
    for i, ch in enumerate(chs):
        for _ in range(c["num_res_blocks"]):
            res_block(f"blocks.{index}.", ch)
            index += 1
        if i < len(chs) - 1:  # conv to 8× the next width, then 3D pixel shuffle
            _conv3d(k, f"blocks.{index}.conv", 8 * chs[i + 1], ch, torso)
            index += 1
    k.norm("out_layer.0", chs[-1])
    _conv3d(k, "out_layer.2", c["out_channels"], chs[-1], F32)


def _sparse_conv(k: _Keys, name: str, out: int, inp: int, dtype: str, size: int = 3) -> None:
    """spconv 2 ``SubMConv3d`` inside TRELLIS's ``SparseConv3d`` wrapper: weight (out, kx, ky, kz, in)."""
    k.add(f"{name}.conv.weight", (out, size, size, size, inp), dtype)
    k.add(f"{name}.conv.bias", (out,), dtype)


def _slat_flow(k: _Keys, c: dict) -> None:
    torso = F16 if c["use_fp16"] else F32
    ch, io, n_io = c["model_channels"], c["io_block_channels"], c["num_io_res_blocks"]

    def res_block(p: str, inp: int, out: int) -> None:
        k.norm(p + "norm1", inp)  # norm2 has no affine parameters
        _sparse_conv(k, p + "conv1", out, inp, torso)
        _sparse_conv(k, p + "conv2", out, out, torso)
        k.linear(p + "emb_layers.1", 2 * out, ch, torso)
        if inp != out:
            k.linear(p + "skip_connection", out, inp, torso)

    _timestep_embedder(k, ch)
    k.linear("input_layer", io[0], c["in_channels"])
    index = 0
    for width, next_width in zip(io, io[1:] + [ch]):
        for _ in range(n_io - 1):
            res_block(f"input_blocks.{index}.", width, width)
            index += 1
        res_block(f"input_blocks.{index}.", width, next_width)  # downsamples
        index += 1
    for i in range(c["num_blocks"]):
        _cross_block(k, f"blocks.{i}.", c, ch, c["cond_channels"], torso, modulated=True)
    index = 0
    for width, prev_width in zip(reversed(io), [ch] + list(reversed(io[1:]))):
        res_block(f"out_blocks.{index}.", 2 * prev_width, width)  # upsamples; input is cat(h, skip)
        index += 1
        for _ in range(n_io - 1):
            res_block(f"out_blocks.{index}.", 2 * width, width)
            index += 1
    k.linear("out_layer", c["out_channels"], io[0])


#: channels of the mesh decoder's output per voxel: sdf 8, deform 8×3, FlexiCubes weights 21, colour 8×6
MESH_FEATURES = {"sdf": 8, "deform": 24, "weights": 21, "color": 48}


def _mesh_decoder(k: _Keys, c: dict) -> None:
    torso = F16 if c["use_fp16"] else F32
    ch = c["model_channels"]
    hidden = int(ch * c["mlp_ratio"])
    k.linear("input_layer", ch, c["latent_channels"])
    for i in range(c["num_blocks"]):
        p = f"blocks.{i}."
        k.linear(p + "attn.to_qkv", 3 * ch, ch, torso)
        k.linear(p + "attn.to_out", ch, ch, torso)
        k.linear(p + "mlp.mlp.0", hidden, ch, torso)
        k.linear(p + "mlp.mlp.2", ch, hidden, torso)
    for j, (inp, out) in enumerate([(ch, ch // 4), (ch // 4, ch // 8)]):
        p = f"upsample.{j}."
        k.norm(p + "act_layers.0", inp)
        _sparse_conv(k, p + "out_layers.0", out, inp, torso)
        k.norm(p + "out_layers.1", out)
        _sparse_conv(k, p + "out_layers.3", out, out, torso)
        _sparse_conv(k, p + "skip_connection", out, inp, torso, size=1)
    out_channels = sum(MESH_FEATURES.values()) if c["use_color"] else 53
    k.linear("out_layer", out_channels, ch // 8)


_LAYOUTS = {"dinov2": _dinov2, "vggt_aggregator": _vggt_aggregator, "ss_condition": _ss_condition,
            "slat_condition": _slat_condition, "ss_flow": _ss_flow, "ss_decoder": _ss_decoder,
            "slat_flow": _slat_flow, "mesh_decoder": _mesh_decoder}


def tensors(network: str, config: dict) -> dict:
    """{name: [shape, dtype]} of one network's checkpoint (names without the file's prefix)."""
    keys = _Keys()
    _LAYOUTS[network](keys, config)
    return keys.items


def manifest(name: str) -> dict:
    """The manifest ``name`` (``"full"`` or ``"tiny"``) as a JSON-ready dict."""
    configs = {"full": FULL, "tiny": TINY}[name]
    description = {
        "full": "ReconViaGen (TRELLIS-image-large + VGGT multi-view conditioning) as published",
        "tiny": "TEST ONLY: the same architecture with tiny widths and depths, for random-weight CPU tests",
    }[name]
    return {
        "format": "meshforge-reconviagen-manifest/1",
        "name": name,
        "description": description,
        "generated_by": "python -m meshforge_reconviagen.published",
        "pipeline": PIPELINE,
        "files": [{"file": file, "network": network, "prefix": prefix, "obtain": obtain,
                   "config": configs[network], "tensors": tensors(network, configs[network])}
                  for file, network, prefix, obtain in FILES],
    }


def dumps(data: dict) -> str:
    """JSON with one tensor per line, so that diffs of the manifest stay readable."""
    files = []
    for entry in data["files"]:
        head = {k: v for k, v in entry.items() if k != "tensors"}
        rows = ",\n".join(f"        {json.dumps(name)}: {json.dumps(spec)}" for name, spec in entry["tensors"].items())
        head_text = json.dumps(head, indent=4)[:-2]  # drop the closing brace to append the tensors
        files.append(f"{head_text},\n    \"tensors\": {{\n{rows}\n    }}\n}}".replace("\n", "\n    "))
    top = {k: v for k, v in data.items() if k != "files"}
    return json.dumps(top, indent=2)[:-2] + ",\n  \"files\": [\n    " + ",\n    ".join(files) + "\n  ]\n}\n"


def main() -> None:
    MANIFEST_DIR.mkdir(exist_ok=True)
    for name in ("full", "tiny"):
        path = MANIFEST_DIR / f"{name}.json"
        path.write_text(dumps(manifest(name)))
        print(f"wrote {path} ({sum(len(f['tensors']) for f in manifest(name)['files'])} tensors)")


if __name__ == "__main__":
    main()
