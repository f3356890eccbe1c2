"""The weights manifest: derived from the published facts, equal to our networks' state dicts, and a
precise account of what a weights directory lacks (which is what `meshforge models` and GET /models show)."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from meshforge.errors import ModelUnavailable
from meshforge.manager import PluginManager
from meshforge_reconviagen import manifest as mf
from meshforge_reconviagen import networks, published, random_weights
from meshforge_reconviagen.plugin import ReconViaGenReconstructor
from meshforge_reconviagen.weights import read_header


@pytest.mark.parametrize("name", ["full", "tiny"])
def test_committed_manifests_are_what_the_published_facts_generate(name):
    committed = json.loads((published.MANIFEST_DIR / f"{name}.json").read_text())
    assert committed == json.loads(json.dumps(published.manifest(name))), \
        "regenerate with: python -m meshforge_reconviagen.published"


@pytest.mark.parametrize("name", ["full", "tiny"])
def test_our_networks_have_exactly_the_manifest_state_dicts(name):
    """Built on the meta device (no memory) with the published configs, including their float16 torsos."""
    manifest = mf.load(name)
    for spec in manifest.files:
        with torch.device("meta"):
            net = networks.build(spec.network, spec.config)
        ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()}
        assert set(ours) == set(spec.tensors), (spec.file, sorted(set(ours) ^ set(spec.tensors))[:5])
        for key, (shape, dtype) in ours.items():
            want_shape, want_dtypes = spec.tensors[key]
            assert shape == want_shape and dtype in want_dtypes, (spec.file, key, shape, dtype, spec.tensors[key])


def test_the_full_manifest_has_the_published_sizes():
    sizes = {f.network: sum(torch.Size(s).numel() for s, _ in f.tensors.values()) for f in mf.load("full").files}
    assert round(sizes["dinov2"] / 1e6) == 304  # ViT-L/14 with registers
    assert 300e6 < sizes["vggt_aggregator"] - sizes["dinov2"] < 700e6
    assert sizes["ss_flow"] > 500e6 and sizes["slat_flow"] > 500e6
    header_file = mf.load("full").file("mesh_decoder")
    assert header_file.tensors["out_layer.weight"][0] == (101, 96)


# ── checking a weights directory ─────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return random_weights.write(mf.load("tiny"), tmp_path_factory.mktemp("tiny-weights"))


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _rewrite(path, change):
    """Re-save a safetensors file after ``change(tensors)``."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"meshforge_provenance": "random"})


def test_a_complete_directory_has_no_problems(tiny_weights):
    assert mf.check(mf.load("tiny"), tiny_weights) == []


def test_missing_directory_and_missing_file_say_where_the_file_goes(tiny_weights, tmp_path):
    tiny = mf.load("tiny")
    (problem,) = mf.check(tiny, tmp_path / "nowhere")
    assert problem.kind == "missing_directory" and "nowhere" in problem.detail
    broken = _copy(tiny_weights, tmp_path / "w")
    (broken / "ss_flow.safetensors").unlink()
    (problem,) = mf.check(tiny, broken)
    assert problem.kind == "missing_file" and problem.file == "ss_flow.safetensors"
    assert str(broken / "ss_flow.safetensors") in problem.detail and "sparse_structure_flow_model" in problem.detail


def test_missing_tensor_wrong_shape_and_wrong_dtype_are_named(tiny_weights, tmp_path):
    tiny = mf.load("tiny")
    broken = _copy(tiny_weights, tmp_path / "w")
    _rewrite(broken / "slat_flow.safetensors", lambda t: t.pop("blocks.1.adaLN_modulation.1.weight"))
    _rewrite(broken / "dinov2_vitl14_reg4.safetensors", lambda t: t.update(pos_embed=torch.zeros(1, 5, 32)))
    _rewrite(broken / "ss_decoder.safetensors", lambda t: t.update({"out_layer.2.bias": torch.zeros(1, dtype=torch.bfloat16)}))
    problems = {p.kind: p for p in mf.check(tiny, broken)}
    assert set(problems) == {"missing_tensors", "wrong_shape", "wrong_dtype"}
    assert problems["missing_tensors"].file == "slat_flow.safetensors"
    assert "blocks.1.adaLN_modulation.1.weight" in problems["missing_tensors"].detail
    assert "pos_embed is (1, 5, 32), expected (1, 17, 32)" in problems["wrong_shape"].detail
    assert "out_layer.2.bias is bfloat16, expected float32" in problems["wrong_dtype"].detail


def test_vggt_tensors_are_looked_up_under_their_prefix_and_extra_tensors_are_ignored(tiny_weights, tmp_path):
    broken = _copy(tiny_weights, tmp_path / "w")
    _rewrite(broken / "vggt_object.safetensors", lambda t: t.update({"camera_head.trunk.0.weight": torch.zeros(3)}))
    assert mf.check(mf.load("tiny"), broken) == []
    assert "aggregator.camera_token" in read_header(broken / "vggt_object.safetensors")


def test_a_truncated_file_is_unreadable_not_a_crash(tiny_weights, tmp_path):
    broken = _copy(tiny_weights, tmp_path / "w")
    (broken / "ss_condition.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    (problem,) = mf.check(mf.load("tiny"), broken)
    assert problem.kind == "unreadable" and problem.file == "ss_condition.safetensors"


# ── availability and fast failure ────────────────────────────────────────────────────────

def test_without_weights_the_model_is_listed_unavailable_with_the_files_it_needs(monkeypatch):
    monkeypatch.delenv(mf.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(mf.MANIFEST_ENV, raising=False)
    described = PluginManager().describe()
    item = next(r for r in described["reconstructors"] if r["name"] == "reconviagen")
    assert item["available"] is False
    assert mf.WEIGHTS_ENV in item["reason"] and "ss_flow.safetensors" in item["reason"]
    assert "README" in item["reason"]


def test_published_manifest_reports_every_missing_file_of_an_empty_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(mf.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.delenv(mf.MANIFEST_ENV, raising=False)
    reason = ReconViaGenReconstructor().availability().reason
    for spec in mf.load("full").files:
        assert spec.file in reason
    assert "vggt-object-v0-1" in reason and "dinov2_vitl14_reg4_pretrain.pth" in reason


def test_a_job_selecting_the_model_fails_fast_with_model_unavailable(monkeypatch, tmp_path):
    import meshforge

    monkeypatch.setenv(mf.WEIGHTS_ENV, str(tmp_path / "empty"))
    manager = PluginManager()
    with pytest.raises(ModelUnavailable) as exc:
        meshforge.validate_request("reconviagen", None, manager)
    assert exc.value.code == "MODEL_UNAVAILABLE" and "empty" in exc.value.message


def test_weights_removed_after_start_up_fail_before_any_work(monkeypatch, tiny_weights, tmp_path):
    monkeypatch.setenv(mf.MANIFEST_ENV, "tiny")
    monkeypatch.setenv("MESHFORGE_RECONVIAGEN_ALLOW_CPU", "1")
    weights = _copy(tiny_weights, tmp_path / "w")
    monkeypatch.setenv(mf.WEIGHTS_ENV, str(weights))
    rec = ReconViaGenReconstructor()
    assert rec.availability().available
    (weights / "slat_decoder_mesh.safetensors").unlink()
    with pytest.raises(ModelUnavailable) as exc:
        rec.reconstruct(capture=None, options=rec.resolve_options(None), progress=None)
    assert "slat_decoder_mesh.safetensors" in exc.value.message
