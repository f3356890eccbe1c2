"""The meshforge command, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def meshforge(*args, check=False):
    return subprocess.run([sys.executable, "-m", "meshforge.cli", *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=600)


def test_run_writes_files_and_exits_zero(spot_small, tmp_path):
    out = tmp_path / "out"
    r = meshforge("run", spot_small.capture, "--out", out, "--options",
                  '{"fusion": {"resolution": 64, "target_faces": 5000}}', "--quiet")
    assert r.returncode == 0, r.stderr
    assert "fusion: succeeded" in r.stdout
    for name in ("mesh.glb", "mesh.obj", "mesh.mtl", "texture.png"):
        assert (out / "fusion" / name).exists()
    assert json.loads((out / "report.json").read_text())["status"] == "succeeded"


def test_bad_input_exits_two_with_the_code(tmp_path):
    bogus = tmp_path / "capture.zip"
    bogus.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = meshforge("run", bogus, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "error NOT_A_ZIP:" in r.stderr and "PNG" in r.stderr
    r = meshforge("run", bogus, "--model", "nerf")
    assert r.returncode == 2 and "UNKNOWN_MODEL" in r.stderr and "fusion" in r.stderr
    r = meshforge("run", bogus, "--options", "{not json")
    assert r.returncode == 2 and "INVALID_OPTIONS" in r.stderr
    r = meshforge("run", tmp_path / "nowhere.zip")
    assert r.returncode == 2 and "no such file" in r.stderr


def test_models_lists_plugins_with_reasons():
    r = meshforge("models", check=True)
    assert "fusion" in r.stdout and "available: yes" in r.stdout
    data = json.loads(meshforge("models", "--json", check=True).stdout)
    assert {"reconstructors", "previewers", "quality_scorers", "plugins"} <= set(data)


def test_inspect_reports_calibration(sneaker_dir):
    r = meshforge("inspect", sneaker_dir, check=True)
    summary = json.loads(r.stdout)
    assert summary["calibration"]["method"] == "full" and summary["depth_encoding"] == "relative8"


def test_render_capture_then_run(tmp_path, bob_mesh):
    cap = tmp_path / "bob.zip"
    r = meshforge("render-capture", bob_mesh, cap, "--rgb-size", 512, "--depth-size", 256, "--heldout", 2,
                  "--ground-truth", tmp_path / "gt.glb", check=True)
    assert cap.exists() and (tmp_path / "bob-heldout" / "heldout.json").exists() and (tmp_path / "gt.glb").exists()
    assert "capture:" in r.stdout


@pytest.mark.slow
def test_demo_runs_without_any_data(tmp_path):
    r = meshforge("demo", tmp_path / "demo", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "result" / "fusion" / "mesh.glb").exists()
    assert "fusion: succeeded" in r.stdout


def test_errors_table_is_markdown():
    r = meshforge("errors", "--markdown", check=True)
    assert r.stdout.startswith("| code | HTTP | when |")
