"""The error taxonomy is the public contract: the README documents every code, and tests trigger them."""

from __future__ import annotations

import re
from pathlib import Path

from meshforge.errors import MeshforgeError, by_code, catalogue

ROOT = Path(__file__).resolve().parents[1]

#: codes whose real trigger belongs to work not done yet, with where it will be tested
NOT_YET_TRIGGERED: dict[str, str] = {}
#: roots of the tree: raised only through their subclasses
ABSTRACT = {"INTERNAL", "INVALID_CAPTURE", "BAD_REQUEST", "PLUGIN_ERROR", "RECONSTRUCTION_FAILED", "JOB_ERROR"}


def readme_table() -> dict[str, int]:
    text = (ROOT / "README.md").read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `([A-Z_]+)` \| (\d{3}) \|", text, re.M)}


def test_readme_documents_every_code_with_its_status():
    documented = readme_table()
    defined = {row["code"]: row["http_status"] for row in catalogue()}
    assert documented == defined


def test_every_code_is_unique_and_has_a_message_and_docstring():
    codes = [row["code"] for row in catalogue()]
    assert len(codes) == len(set(codes))
    for code, cls in by_code().items():
        assert re.fullmatch(r"[A-Z][A-Z_]+", code)
        assert cls.__doc__ and cls.__doc__.strip().startswith("Raised when"), cls
        assert 400 <= cls.http_status < 600


def test_error_bodies_follow_the_api_contract():
    from meshforge.errors import MissingView

    err = MissingView(folder="multi_views", view="top", expected="front.png, ...")
    body = err.to_dict()
    assert set(body) == {"code", "message", "details"} and body["code"] == "MISSING_VIEW"
    assert "multi_views/top.png is missing" in body["message"] and body["details"]["view"] == "top"
    again = MeshforgeError.from_dict(body)
    assert type(again) is MissingView and again.message == err.message


def test_every_concrete_code_is_triggered_by_a_test():
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name)
    sources += "\n".join(p.read_text() for p in (ROOT / "plugins").rglob("tests/test_*.py"))
    sources += "\n".join(p.read_text() for p in (ROOT / "service").rglob("tests/test_*.py"))
    missing = [code for code in by_code() if code not in ABSTRACT and code not in NOT_YET_TRIGGERED
               and f'"{code}"' not in sources]
    assert not missing, f"no test triggers {missing}"
    stale = [code for code in NOT_YET_TRIGGERED if f'"{code}"' in sources]
    assert not stale, f"tests now trigger {stale}: remove them from NOT_YET_TRIGGERED"
