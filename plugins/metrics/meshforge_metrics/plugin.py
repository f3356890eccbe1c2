"""Entry point of meshforge-metrics: the quality scorer and the previewer every result goes through."""

from __future__ import annotations

import os
import time
from importlib import metadata

import numpy as np

from meshforge import hookimpl
from meshforge.components import (Availability, ComponentSpec, Option, Previewer, QualityReport, QualityScorer)

from .verdict import DEFAULTS, classify

VERSION = metadata.version("meshforge-metrics")
SCHEMA = "quality.schema.json"
COMPARED = ("reconstruction rendered from each input view's calibrated camera (albedo, no lighting) against that "
            "view as given, on the union of both object masks only; the render composited on the view's background "
            "colour; "
            "render drawn at the view's size and both box-downsampled to score_size; PSNR (piq) over the union's "
            "pixels; SSIM (piq, 11x11 Gaussian windows) over 42-px tiles covering the union, weighted by coverage")


def _env_default(name: str, value: float) -> float:
    """A band's default, unless MESHFORGE_QUALITY_<NAME> overrides it for this installation."""
    text = os.environ.get(f"MESHFORGE_QUALITY_{name.upper()}")
    return float(text) if text else value


def _band(name: str, help_text: str, lo: float, hi: float) -> Option:
    return Option(name, "float", _env_default(name, DEFAULTS[name]), help_text, minimum=lo, maximum=hi)


class MetricsScorer(QualityScorer):
    """PSNR, SSIM, silhouette IoU and depth error per view, and the normal/warning/failure verdict."""

    def __init__(self):
        self.spec = ComponentSpec(
            name="metrics", version=VERSION,
            description="PSNR/SSIM (piq) on the object region, silhouette IoU and depth error per view; verdict",
            options=(
                _band("normal_psnr", "normal needs a mean PSNR of at least this (dB)", 0, 100),
                _band("normal_ssim", "normal needs a mean SSIM of at least this", 0, 1),
                _band("failure_psnr", "a mean PSNR below this fails the result (dB)", 0, 100),
                _band("failure_ssim", "a mean SSIM below this fails the result", 0, 1),
                _band("failure_iou", "a mean silhouette IoU below this fails the result", 0, 1),
                Option("score_size", "int", 1024, "image size the views are compared at", minimum=128,
                       maximum=4096),
                Option("holdout_decides", "bool", False,
                       "judge by the held-out figures instead of the fit-view ones (when measured)"),
            ))

    def availability(self) -> Availability:
        # find the packages without importing them: importing torch costs seconds and ~500 MB
        from importlib.util import find_spec

        missing = [name for name in ("torch", "piq") if find_spec(name) is None]
        if missing:
            return Availability.no(f"needs {' and '.join(missing)}: pip install torch piq (CPU builds are enough)")
        return Availability.yes()

    def evaluate(self, mesh, capture, views, progress, options):
        from .scoring import compare_view, figures, object_size

        size = object_size(capture)
        out = {}
        for i, name in enumerate(views):
            progress.update(i / len(views), "scoring")
            progress.check_cancelled()
            out[name] = figures(compare_view(mesh, capture.views[name], options["score_size"]), size)
        progress.update(1.0)
        return out

    def classify(self, fit, heldout, timings, options):
        bands = {k: options[k] for k in DEFAULTS}
        summary = _mean(fit)
        held_summary = _mean(heldout) if heldout else None
        judged = held_summary if options["holdout_decides"] and held_summary else summary
        verdict = classify(judged, bands)
        headline = {"psnr": summary["psnr"], "ssim": summary["ssim"], "silhouette_iou": summary["silhouette_iou"]}
        for key in ("depth_median_error", "depth_rms_error"):
            if key in summary:
                headline[key] = summary[key]
        if held_summary:
            headline["heldout_psnr"] = held_summary["psnr"]
            headline["heldout_ssim"] = held_summary["ssim"]
        details = {
            "rule": verdict.rule,
            "judged": "heldout" if judged is held_summary else "fit",
            "thresholds": bands,
            "compared": COMPARED,
            "renderer": {"name": "meshforge.raster (CPU)", "score_size": options["score_size"],
                         "drawn_at": "each view's own size, then box-downsampled like the view"},
            "views": fit,
            "heldout": {"views": heldout, "mean": held_summary} if heldout else None,
            "timings": timings,
            "scorer_version": VERSION,
            "schema": SCHEMA,
        }
        return QualityReport(verdict.status, verdict.reason, headline, details)


def _mean(per_view: dict | None) -> dict | None:
    """Means of the per-view figures (views where a figure is missing are skipped for it)."""
    if not per_view:
        return None
    keys = {k for f in per_view.values() for k in f if k != "object_pixels"}
    return {k: round(float(np.mean([f[k] for f in per_view.values() if f.get(k) is not None])), 5) for k in keys}


class StaticPreviewer(Previewer):
    """Renders from the input cameras and two obliques, and a contact sheet against the inputs."""

    spec = ComponentSpec(
        name="previews", version=VERSION,
        description="lit renders from every input camera and two obliques, contact sheet with error heat-maps",
        options=(
            Option("size", "int", 512, "preview image size in pixels", minimum=64, maximum=4096),
            Option("obliques", "int", 2, "views between the rig's axes, 30° above and below", minimum=0, maximum=16),
            Option("normals", "bool", False, "also write normal maps of the input views"),
            Option("depth", "bool", False, "also write depth maps of the input views"),
            Option("contact_sheet", "bool", True, "write contact_sheet.png"),
            Option("sheet_tile", "int", 256, "size of one contact-sheet image", minimum=64, maximum=1024),
        ))

    def preview(self, mesh, capture, out_dir, progress, quality, options):
        from .previews import write_previews

        return write_previews(mesh, capture, out_dir, options, quality, progress)


@hookimpl
def register_quality_scorers():
    return [MetricsScorer()]


@hookimpl
def register_previewers():
    return [StaticPreviewer()]
