"""The plugin seam: discovery through entry points, filtering, and failures that never take the host down."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

from meshforge import hookimpl
from meshforge.components import (Availability, ComponentSpec, Option, ReconstructionResult, Reconstructor)
from meshforge.errors import InvalidOptions, ModelUnavailable, PluginFailed, UnknownModel
from meshforge.manager import ENTRY_POINT_GROUP, PluginManager, call
from meshforge.mesh import TexturedMesh


def fake_entry_point(name: str, module: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=module, group=ENTRY_POINT_GROUP)


@pytest.fixture
def install_module(tmp_path, monkeypatch):
    """Write a module file and make it importable, as an installed plugin would be."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)

    return install


class Tetra(Reconstructor):
    """A throwaway reconstructor that returns a tetrahedron."""

    spec = ComponentSpec("tetra", "1.0", "a tetrahedron", options=(
        Option("size", "float", 1.0, "edge length", minimum=0.1, maximum=10.0),
        Option("mode", "str", "a", "a mode", choices=("a", "b")),
        Option("steps", "int", 3, "steps", minimum=1, maximum=5),
        Option("flag", "bool", False, "a flag"),
        Option("side", "int", 4, "a power of two", choices=(2, 4, 8))))

    def reconstruct(self, capture, options, progress):
        v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32) * options["size"]
        f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
        return ReconstructionResult(TexturedMesh(v, f))


def test_builtin_fusion_is_discovered_through_its_entry_point():
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert eps["fusion"].value == "meshforge.plugins.fusion.plugin"
    assert eps["fusion"].dist.name == "meshforge"
    pm = PluginManager()
    record = pm.plugins["fusion"]
    assert record.status == "loaded" and record.distribution == "meshforge"
    assert "register_reconstructors" in record.hooks
    assert pm.reconstructor("fusion").spec.name == "fusion"


def test_describe_lists_every_kind_with_availability_and_reasons():
    described = PluginManager().describe()
    names = {r["name"]: r for r in described["reconstructors"]}
    assert names["fusion"]["available"] is True
    assert {o["name"] for o in names["fusion"]["options"]} >= {"resolution", "target_faces", "texture"}
    for item in described["reconstructors"]:
        assert item["version"] and item["plugin"]
        assert item["available"] or item["reason"]


def test_a_plugin_that_fails_to_import_is_reported_not_raised(install_module):
    install_module("mf_broken_plugin", "raise ImportError('needs libfoo 2.0')")
    pm = PluginManager(entry_points=[fake_entry_point("broken", "mf_broken_plugin"),
                                     fake_entry_point("fusion", "meshforge.plugins.fusion.plugin")])
    assert pm.plugins["broken"].status == "failed"
    assert "needs libfoo 2.0" in pm.plugins["broken"].error
    assert pm.reconstructor("fusion")  # the host runs on


def test_a_missing_module_is_reported_with_its_name():
    pm = PluginManager(entry_points=[fake_entry_point("ghost", "mf_no_such_module_anywhere")])
    assert pm.plugins["ghost"].status == "failed"
    assert "mf_no_such_module_anywhere" in pm.plugins["ghost"].error


def test_a_hook_that_raises_or_returns_junk_is_recorded(install_module):
    install_module("mf_raising_plugin", """
from meshforge import hookimpl
@hookimpl
def register_reconstructors():
    raise RuntimeError("boom at registration")
""")
    install_module("mf_junk_plugin", """
from meshforge import hookimpl
@hookimpl
def register_previewers():
    return ["not a previewer"]
""")
    pm = PluginManager(entry_points=[fake_entry_point("raising", "mf_raising_plugin"),
                                     fake_entry_point("junk", "mf_junk_plugin")])
    assert "boom at registration" in pm.plugins["raising"].error
    assert "not a Previewer" in pm.plugins["junk"].error
    assert pm.components("previewer") == {}


def test_duplicate_component_names_keep_the_first(install_module):
    install_module("mf_dupe_plugin", """
from meshforge import hookimpl
from meshforge.plugins.fusion.plugin import FusionReconstructor
@hookimpl
def register_reconstructors():
    return [FusionReconstructor()]
""")
    pm = PluginManager(entry_points=[fake_entry_point("fusion", "meshforge.plugins.fusion.plugin"),
                                     fake_entry_point("dupe", "mf_dupe_plugin")])
    assert pm.components("reconstructor")["fusion"].plugin == "fusion"
    assert "already provided by plugin 'fusion'" in pm.plugins["dupe"].error


def test_an_availability_check_that_raises_makes_the_model_unavailable():
    class Flaky(Tetra):
        spec = ComponentSpec("flaky", "1.0", "flaky")

        def availability(self):
            raise OSError("driver went away")

    class Plugin:
        @hookimpl
        def register_reconstructors(self):
            return [Flaky()]

    pm = PluginManager(entry_points=[])
    pm.register(Plugin(), "flaky-plugin")
    try:
        item = next(r for r in pm.describe()["reconstructors"] if r["name"] == "flaky")
        assert item["available"] is False and "driver went away" in item["reason"]
        with pytest.raises(ModelUnavailable) as exc:
            pm.reconstructor("flaky")
        assert exc.value.code == "MODEL_UNAVAILABLE" and exc.value.http_status == 503
    finally:
        pm.unregister("flaky-plugin")
    assert "flaky" not in pm.components("reconstructor")


def test_unknown_model_lists_the_choices():
    pm = PluginManager()
    with pytest.raises(UnknownModel) as exc:
        pm.reconstructor("nerf")
    assert exc.value.code == "UNKNOWN_MODEL" and "fusion" in exc.value.message


def test_options_are_typed_range_checked_and_unknown_keys_refused():
    rec = Tetra()
    assert rec.resolve_options(None) == {"size": 1.0, "mode": "a", "steps": 3, "flag": False, "side": 4}
    assert rec.resolve_options({"side": "8"})["side"] == 8
    assert rec.resolve_options({"size": "2.5", "steps": 4, "flag": "true"})["size"] == 2.5
    bad = [({"size": 100}, "outside"), ({"mode": "c"}, "not one of"), ({"steps": 2.5}, "integer"),
           ({"flag": "maybe"}, "true or false"), ({"colour": "red"}, "unknown option"),
           ({"size": float("nan")}, "finite"), ({"steps": True}, "number"), ({"side": 6}, "not one of 2, 4, 8")]
    for options, words in bad:
        with pytest.raises(InvalidOptions) as exc:
            rec.resolve_options(options)
        assert exc.value.code == "INVALID_OPTIONS" and words in exc.value.message, options
        assert "options.tetra" in exc.value.message


def test_unexpected_plugin_exceptions_become_plugin_failed():
    class Buggy(Tetra):
        spec = ComponentSpec("buggy", "1.0", "buggy")

        def reconstruct(self, capture, options, progress):
            return {}["missing"]

    with pytest.raises(PluginFailed) as exc:
        call(Buggy(), "reconstruct", None, {}, None)
    assert exc.value.code == "PLUGIN_FAILED" and "buggy" in exc.value.message and "KeyError" in exc.value.message


def _cli_models(env_value: str | None) -> dict:
    import os

    env = dict(os.environ)
    env.pop("MESHFORGE_PLUGINS", None)
    if env_value is not None:
        env["MESHFORGE_PLUGINS"] = env_value
    out = subprocess.run([sys.executable, "-m", "meshforge.cli", "models", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_meshforge_plugins_env_limits_what_loads():
    everything = _cli_models(None)
    assert {"fusion", "nvdiffrec", "reconviagen"} <= {r["name"] for r in everything["reconstructors"]}
    only = _cli_models("fusion")
    assert [r["name"] for r in only["reconstructors"]] == ["fusion"]
    none = _cli_models("")
    assert none["reconstructors"] == [] and none["plugins"] == []
    typo = _cli_models("fusion,fuson")
    assert any(p["name"] == "fuson" and p["status"] == "not_installed" for p in typo["plugins"])


def test_hookspecs_are_documented_in_the_plugin_guide():
    """Every hook has a heading with its exact name in docs/writing-a-plugin.md (as datasette checks its docs)."""
    from pathlib import Path

    from meshforge import hookspecs

    guide = (Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert hooks
    for name in hooks:
        assert f"### `{name}()`" in guide, f"{name} is not documented in docs/writing-a-plugin.md"
