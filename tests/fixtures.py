"""Shared fixtures (loaded by the root conftest.py): where the shared data lives, and synthetic captures rendered once per session.

Tests read data from ../shared (or $MESHFORGE_SHARED); nothing from there is copied into
the packages. Synthetic captures come from meshforge's own ``render_capture``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFORGE_SHARED", ROOT.parent / "shared"))
MESHES = SHARED / "data" / "meshes"
SNEAKER = SHARED / "data" / "samples" / "sneaker"


def pytest_report_header(config):
    return f"meshforge shared data: {SHARED} ({'found' if SHARED.exists() else 'MISSING'})"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.exists():
        pytest.fail(f"the shared data folder {SHARED} is missing; set MESHFORGE_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def sneaker_dir(shared) -> Path:
    return SNEAKER


@pytest.fixture(scope="session")
def spot_mesh(shared) -> Path:
    return MESHES / "spot" / "spot.obj"


@pytest.fixture(scope="session")
def bob_mesh(shared) -> Path:
    return MESHES / "bob" / "bob_tri.obj"


def _render(mesh: Path, out: Path, **kwargs):
    from meshforge.synthetic import render_capture

    return render_capture(mesh, out / "capture.zip", heldout_dir=out / "heldout", ground_truth=out / "gt.glb",
                          **kwargs)


@pytest.fixture(scope="session")
def spot_full(tmp_path_factory, spot_mesh):
    """Contract-style capture of spot at the contract's full size (2048² views, 1024² depth), with
    8 held-out views and the normalised ground truth."""
    return _render(spot_mesh, tmp_path_factory.mktemp("spot_full"), heldout=8)


@pytest.fixture(scope="session")
def bob_full(tmp_path_factory, bob_mesh):
    return _render(bob_mesh, tmp_path_factory.mktemp("bob_full"), heldout=8)


@pytest.fixture(scope="session")
def spot_small(tmp_path_factory, spot_mesh):
    """A quick contract-style capture (512² views, 256² depth) for tests that vary the input."""
    return _render(spot_mesh, tmp_path_factory.mktemp("spot_small"), rgb_size=512, depth_size=256, heldout=4,
                   heldout_size=256)


@pytest.fixture(scope="session")
def spot_small_sample_style(tmp_path_factory, spot_mesh):
    """Like the sample capture: 8-bit relative depth, no cameras.json, off-white background."""
    return _render(spot_mesh, tmp_path_factory.mktemp("spot_sample"), style="sample", rgb_size=512,
                   depth_size=512)
