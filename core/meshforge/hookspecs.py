"""The hooks a meshforge plugin can implement.

A plugin is any module registered under the ``meshforge.plugins`` entry-point group
(meshforge's own built-in plugins are registered exactly the same way). It implements
some of the hooks below with ``@meshforge.hookimpl``; every implementation is called and
the lists are concatenated. Components are registered once, at start-up, by
:mod:`meshforge.manager`; their heavy imports (torch, CUDA extensions, weights) belong
inside their methods, not at module import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .components import Previewer, QualityScorer, Reconstructor

hookspec = pluggy.HookspecMarker("meshforge")
hookimpl = pluggy.HookimplMarker("meshforge")


# ── reconstructors ───────────────────────────────────────────────────────────────────────

@hookspec
def register_reconstructors() -> "list[Reconstructor]":
    """Return the reconstructors this plugin provides.

    Called once at start-up. Each item is a :class:`meshforge.components.Reconstructor`
    with a unique ``spec.name``; users select it by that name.
    """


# ── previewers ───────────────────────────────────────────────────────────────────────────

@hookspec
def register_previewers() -> "list[Previewer]":
    """Return the previewers this plugin provides.

    Called once at start-up. Every available previewer runs on every result.
    """


# ── quality scorers ──────────────────────────────────────────────────────────────────────

@hookspec
def register_quality_scorers() -> "list[QualityScorer]":
    """Return the quality scorers this plugin provides.

    Called once at start-up. Every available scorer evaluates every result; the most
    severe status among them is the result's quality status.
    """
