"""The main job as a library call: validation before work, the bundle's layout, failures recorded per model."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import meshforge
from meshforge import bundle, hookimpl
from meshforge.components import (ComponentSpec, Option, QualityReport, QualityScorer, ReconstructionResult,
                                  Reconstructor)
from meshforge.errors import InvalidOptions, ModelUnavailable, UnknownModel
from meshforge.manager import PluginManager
from meshforge.mesh import TexturedMesh
from meshforge.pipeline import run, validate_request

FAST = {"fusion": {"resolution": 64, "target_faces": 5000}}


def test_request_validation_happens_before_any_work(spot_small, tmp_path):
    with pytest.raises(UnknownModel):
        run(spot_small.capture, "fusion,nerf", tmp_path / "out")
    with pytest.raises(ModelUnavailable) as exc:
        run(spot_small.capture, "nvdiffrec", tmp_path / "out")
    # this machine has no CUDA: the reason names what to install
    assert exc.value.http_status == 503 and "pip install" in exc.value.message
    with pytest.raises(InvalidOptions) as exc:
        run(spot_small.capture, "fusion", tmp_path / "out", {"fusion": {"resolution": 5}})
    assert "options.fusion.resolution" in exc.value.message
    with pytest.raises(InvalidOptions):
        run(spot_small.capture, "fusion", tmp_path / "out", {"nvdiffrec": {}})
    with pytest.raises(InvalidOptions):
        validate_request("fusion,fusion", None)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_run_writes_the_bundle_layout_and_report(spot_small, tmp_path):
    out = tmp_path / "job"
    report = run(spot_small.capture, None, out, FAST)
    assert report["status"] == "succeeded" and list(report["models"]) == ["fusion"]
    fusion = report["models"]["fusion"]
    assert fusion["status"] == "succeeded" and fusion["error"] is None
    for name in bundle.MODEL_FILES:
        assert (out / "fusion" / name).stat().st_size > 0
    assert "fusion/mesh.glb" in fusion["files"]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["models"]["fusion"]["timings"]["reconstruct_total"] > 0
    assert on_disk["input"]["depth_encoding"] == "linear16"
    assert on_disk["input"]["calibration"]["method"] == "known"
    assert not list(out.glob(".*"))  # no partial folders or temporary files left
    # the bundle streams as a ZIP with the job's folder as prefix
    data = b"".join(bundle.iter_zip(out, "job-123"))
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"job-123/report.json", "job-123/fusion/mesh.glb", "job-123/fusion/texture.png"} <= names
        assert zf.testzip() is None


class Sphere(Reconstructor):
    spec = ComponentSpec("sphere", "1.0", "a unit sphere, whatever the capture")

    def reconstruct(self, capture, options, progress):
        from meshforge.synthetic import _grid_mesh

        v, f, _ = _grid_mesh(32, 16, lambda u, w: np.stack([np.cos(2 * np.pi * u) * np.sin(np.pi * w),
                                                              np.cos(np.pi * w),
                                                              np.sin(2 * np.pi * u) * np.sin(np.pi * w)], -1) * 0.4)
        return ReconstructionResult(TexturedMesh(v, f[:, ::-1], vertex_colors=np.full((len(v), 3), 200)))


class AlwaysFails(QualityScorer):
    spec = ComponentSpec("strict", "1.0", "classifies everything as failure")

    def evaluate(self, mesh, capture, views, progress, options):
        return {v: {"psnr": 5.0, "ssim": 0.1} for v in views}

    def classify(self, fit, heldout, timings, options):
        return QualityReport("failure", "PSNR 5.0 dB is below the failure band", {"psnr": 5.0, "ssim": 0.1})


class Exploding(Reconstructor):
    spec = ComponentSpec("exploding", "1.0", "raises a bug")

    def reconstruct(self, capture, options, progress):
        raise ZeroDivisionError("a bug in the plugin")


class WithFiles(Sphere):
    spec = ComponentSpec("with-files", "1.0", "a sphere and one more file, named by the option",
                         options=(Option("name", "str", "notes.txt", "the extra file's name"),))

    def reconstruct(self, capture, options, progress):
        result = super().reconstruct(capture, options, progress)
        result.files = {options["name"]: b"a file a model adds"}
        return result


class TestPlugin:
    @hookimpl
    def register_reconstructors(self):
        return [Sphere(), Exploding(), WithFiles()]

    @hookimpl
    def register_quality_scorers(self):
        return [AlwaysFails()]


@pytest.fixture
def manager():
    pm = PluginManager(enabled="fusion")
    pm.register(TestPlugin(), "test-plugin")
    yield pm
    pm.unregister("test-plugin")


def test_a_quality_failure_fails_the_model_but_keeps_its_files(spot_small, tmp_path, manager):
    report = run(spot_small.capture, "sphere", tmp_path / "out", manager=manager)
    model = report["models"]["sphere"]
    assert report["status"] == "failed" and model["status"] == "failed"
    assert model["error"]["code"] == "QUALITY_FAILED" and "below the failure band" in model["error"]["message"]
    assert (tmp_path / "out" / "sphere" / "mesh.glb").exists()
    quality = json.loads((tmp_path / "out" / "sphere" / "quality.json").read_text())
    assert quality["status"] == "failure" and quality["scorer"] == "strict"


def test_one_models_bug_fails_only_that_model(spot_small, tmp_path, manager):
    report = run(spot_small.capture, "exploding,fusion", tmp_path / "out", FAST, score=False, manager=manager)
    assert report["models"]["exploding"]["error"]["code"] == "PLUGIN_FAILED"
    assert "ZeroDivisionError" in report["models"]["exploding"]["error"]["message"]
    assert report["models"]["fusion"]["status"] == "succeeded"
    assert report["status"] == "failed" and report["error"]["code"] == "PLUGIN_FAILED"
    assert not (tmp_path / "out" / "exploding").exists()  # nothing half-written for the failed model


def test_a_models_extra_files_land_in_its_folder_under_plain_names_only(spot_small, tmp_path, manager):
    report = run(spot_small.capture, "with-files", tmp_path / "ok", score=False, manager=manager)
    assert "with-files/notes.txt" in report["models"]["with-files"]["files"]
    assert (tmp_path / "ok" / "with-files" / "notes.txt").read_bytes() == b"a file a model adds"
    for name in ("../escape.txt", "mesh.glb", ".hidden", "quality.json"):
        out = tmp_path / f"bad{len(name)}"
        report = run(spot_small.capture, "with-files", out, {"with-files": {"name": name}}, score=False,
                     manager=manager)
        error = report["models"]["with-files"]["error"]
        assert error["code"] == "PLUGIN_FAILED" and repr(name) in error["message"], error
        assert not (out / "with-files").exists() and not (out / "escape.txt").exists()  # nothing half-written


def test_holdout_reruns_the_model_without_each_view(spot_small, tmp_path, manager):
    report = run(spot_small.capture, "sphere", tmp_path / "out", holdout=True, manager=manager)
    quality = json.loads((tmp_path / "out" / "sphere" / "quality.json").read_text())
    assert report["models"]["sphere"]["quality"]["status"] == "failure"
    assert quality["scorer"] == "strict"


def test_cancelling_a_run_stops_it_and_reports_cancelled(spot_small, tmp_path):
    from meshforge.progress import Progress

    seen = []
    progress = Progress(lambda e: seen.append(e.stage), is_cancelled=lambda: "texturing" in seen)
    report = run(spot_small.capture, None, tmp_path / "out", FAST, progress=progress)
    assert report["status"] == "cancelled" and report["models"]["fusion"]["error"]["code"] == "CANCELLED"
    assert not (tmp_path / "out" / "fusion").exists() and not list((tmp_path / "out").glob(".*partial"))
