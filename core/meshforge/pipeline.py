"""The main job: capture in, one folder per model out (mesh, textures, previews, quality).

- :func:`validate_request` rejects unknown models and bad options before any work starts.
- :func:`reconstruct` runs one reconstructor on a loaded capture.
- :func:`run_model` reconstructs, writes the files, scores and previews one model; every
  failure becomes that model's error, never an exception out of it.
- :func:`run` does the whole job and writes report.json; the CLI and the service's workers
  call it (the workers one model at a time through :func:`run_model`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from . import bundle
from .archive import Limits
from .capture import Capture, load_capture
from .components import QualityReport, ReconstructionResult
from .errors import (Cancelled, InvalidOptions, MeshforgeError, PluginFailed, QualityFailed, StorageFull, UnknownModel,
                     is_storage_full)
from .export import write_mesh_files
from .manager import PluginManager, call, get_manager
from .progress import Progress, silent

DEFAULT_MODEL = "fusion"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_request(models: str | list[str] | None, options: dict | None,
                     manager: PluginManager | None = None, check_available: bool = True) -> tuple[list[str], dict]:
    """Check a request before spending time on it -> (model names, resolved options).

    ``options`` is ``{name: {option: value}}`` where a name is a selected model or an
    installed previewer or quality scorer (e.g. ``{"metrics": {"normal_psnr": 28}}``). The
    result has an entry for every selected model and every available previewer and scorer.
    Raises UnknownModel, ModelUnavailable or InvalidOptions with the valid choices in the message.
    ``check_available=False`` skips this process's availability checks (a service asks its
    workers instead).
    """
    manager = manager or get_manager()
    if models is None or models == "" or models == []:
        names = [DEFAULT_MODEL]
    elif isinstance(models, str):
        names = [m.strip() for m in models.split(",") if m.strip()]
    else:
        names = list(models)
    if not names:
        raise UnknownModel(model="", choices=", ".join(manager.components("reconstructor")) or "none")
    if len(set(names)) != len(names):
        raise InvalidOptions(where="models", reason=f"a model is named twice in {', '.join(names)}")
    options = options or {}
    if not isinstance(options, dict):
        raise InvalidOptions(where="options", reason="expected a JSON object keyed by model name")
    installed = manager.components("reconstructor")
    unknown = [n for n in names if n not in installed]
    if unknown:  # the model names first: options for a misspelt model would only confuse
        raise UnknownModel(model=unknown[0], choices=", ".join(sorted(installed)) or "none")
    helpers = {c.spec.name: c for kind in ("previewer", "quality_scorer") for c in manager.available(kind)}
    extra = sorted(set(options) - set(names) - set(helpers))
    if extra:
        raise InvalidOptions(where="options", reason=f"options given for {', '.join(map(repr, extra))}, which is "
                                                     f"neither a selected model ({', '.join(names)}) nor an installed "
                                                     f"previewer or scorer ({', '.join(sorted(helpers)) or 'none'})")
    resolved = {}
    components = [(name, manager.reconstructor(name) if check_available else installed[name].component)
                  for name in names]  # UnknownModel / ModelUnavailable
    for name, component in components + sorted(helpers.items()):
        given = options.get(name) or {}
        if not isinstance(given, dict):
            raise InvalidOptions(where=f"options.{name}", reason="expected a JSON object of option: value")
        resolved[name] = component.resolve_options(given)
    return names, resolved


def _check_result(model: str, result) -> ReconstructionResult:
    """A reconstructor's result must be a non-empty, finite mesh, and its extra files must have
    plain names that are not the bundle's own; anything else is a plugin bug."""
    if not isinstance(result, ReconstructionResult):
        raise PluginFailed(plugin=model, call="reconstruct", reason=f"returned {type(result).__name__}, "
                                                                     "not a ReconstructionResult")
    mesh = result.mesh
    if len(mesh.faces) == 0 or not np.isfinite(mesh.vertices).all():
        raise PluginFailed(plugin=model, call="reconstruct", reason="returned an empty or non-finite mesh")
    reserved = {*bundle.MODEL_FILES, *bundle.PBR_MAP_FILES, bundle.QUALITY, bundle.PREVIEWS}
    for name in result.files:
        if Path(name).name != name or name.startswith(".") or name in reserved:
            raise PluginFailed(plugin=model, call="reconstruct", reason=f"it returned a file named {name!r}: "
                               "extra files need a plain name that is not one of the bundle's own")
    return result


def reconstruct(capture: Capture, model: str = DEFAULT_MODEL, options: dict | None = None,
                progress: Progress | None = None, manager: PluginManager | None = None) -> ReconstructionResult:
    """Reconstruct a loaded capture with one model (options are validated against its spec)."""
    manager = manager or get_manager()
    rec = manager.reconstructor(model)
    resolved = rec.resolve_options(options)
    result = call(rec, "reconstruct", capture, resolved, progress or silent())
    return _check_result(model, result)


@dataclass
class ModelOutcome:
    """What happened to one model of a job (the ``models[name]`` entry of the job object)."""

    name: str
    status: str = "queued"
    stage: str = ""
    progress: float = 0.0
    error: dict | None = None
    quality: dict | None = None
    timings: dict = field(default_factory=dict)
    estimates: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    files: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def assess(mesh, capture: Capture, model: str, options: dict, *, holdout: bool, progress: Progress,
           manager: PluginManager, component_options: dict | None = None) -> QualityReport | None:
    """Score a result with every available quality scorer; None when none is installed.

    With ``holdout``, the model is re-run once per view with that view left out and scored
    on it (leave-one-view-out): the honest figure, reported next to the fit-view one.
    """
    scorers = manager.available("quality_scorer")
    if not scorers:
        return None
    progress.update(0.0, "scoring")
    views = list(capture.views)
    heldout_runs: dict | None = None
    if holdout:
        rec = manager.reconstructor(model)
        if rec.spec.uses_view_subsets:
            heldout_runs = {}
            for i, view in enumerate(views):
                progress.check_cancelled()
                sub = progress.slice(0.1 + 0.6 * i / len(views), 0.1 + 0.6 * (i + 1) / len(views),
                                     f"held-out run without {view}")
                result = _check_result(model, call(rec, "reconstruct", capture.without(view), options, sub))
                heldout_runs[view] = result.mesh
    reports = []
    for scorer in scorers:
        opts = (component_options or {}).get(scorer.spec.name) or scorer.resolve_options(None)
        t0 = time.perf_counter()
        fit = call(scorer, "evaluate", mesh, capture, views, progress.slice(0.0, 0.1, "scoring"), opts)
        heldout = None
        if heldout_runs is not None:
            heldout = {}
            for view, held_mesh in heldout_runs.items():
                heldout.update(call(scorer, "evaluate", held_mesh, capture, [view], progress.slice(0.7, 0.8), opts))
        timings = {"scoring": round(time.perf_counter() - t0, 3)}
        report = call(scorer, "classify", fit, heldout, timings, opts)
        report.details.setdefault("scorer", scorer.spec.name)
        reports.append(report)
    worst = max(reports, key=lambda r: QualityReport.SEVERITY.get(r.status, 2))
    if len(reports) > 1:
        worst.details["other_scorers"] = [r.to_dict() for r in reports if r is not worst]
    return worst


def run_model(capture: Capture, model: str, options: dict, out: str | Path, *, score: bool = True,
              holdout: bool = False, progress: Progress | None = None, manager: PluginManager | None = None,
              component_options: dict | None = None) -> ModelOutcome:
    """Reconstruct, write, score and preview one model into ``out/<model>/``.

    ``options`` are the model's resolved options; ``component_options`` maps previewer and
    scorer names to theirs (as returned by :func:`validate_request`).

    Never raises for the model's own failures: they are recorded in the outcome (status
    ``failed`` with the error code, or ``cancelled``). A quality verdict of ``failure``
    fails the model with QUALITY_FAILED but keeps its files.
    """
    manager = manager or get_manager()
    progress = progress or silent()
    outcome = ModelOutcome(model, status="running", options=options)
    partial = bundle.partial_dir(out, model)
    published = False
    try:
        t0 = time.perf_counter()
        result = reconstruct(capture, model, options, progress.slice(0.0, 0.7, "reconstructing"), manager)
        outcome.timings = {"reconstruct_total": round(time.perf_counter() - t0, 3), **result.timings}
        outcome.estimates, outcome.warnings, outcome.diagnostics = result.estimates, result.warnings, result.diagnostics
        progress.check_cancelled()
        progress.update(0.7, "writing the mesh")
        t1 = time.perf_counter()
        write_mesh_files(result.mesh, partial)
        for name, data in result.files.items():  # names checked with the result
            (partial / name).write_bytes(data)
        outcome.timings["export"] = round(time.perf_counter() - t1, 3)
        quality = None
        if score:
            t2 = time.perf_counter()
            quality = assess(result.mesh, capture, model, options, holdout=holdout,
                             progress=progress.slice(0.75, 0.9), manager=manager,
                             component_options=component_options)
            outcome.timings["quality"] = round(time.perf_counter() - t2, 3)
            if quality is not None:
                bundle.write_json(partial / bundle.QUALITY, quality.to_dict())
                outcome.quality = {"status": quality.status, **{k: quality.summary.get(k) for k in ("psnr", "ssim")},
                                   "reason": quality.reason}
            else:
                outcome.warnings.append("not scored: no quality scorer plugin is installed (pip install meshforge-metrics)")
        progress.check_cancelled()
        previewers = manager.available("previewer")
        if previewers:
            t3 = time.perf_counter()
            for previewer in previewers:
                opts = (component_options or {}).get(previewer.spec.name) or previewer.resolve_options(None)
                call(previewer, "preview", result.mesh, capture, partial / bundle.PREVIEWS,
                     progress.slice(0.9, 1.0, "previews"), quality, opts)
            outcome.timings["previews"] = round(time.perf_counter() - t3, 3)
        bundle.publish(out, model, partial)
        published = True
        outcome.files = bundle.model_files(out, model)
        if quality is not None and quality.status == "failure":
            raise QualityFailed(model=model, reason=quality.reason)
        outcome.status, outcome.progress, outcome.stage = "succeeded", 1.0, "done"
    except Cancelled as exc:
        outcome.status, outcome.error = "cancelled", exc.to_dict()
    except MeshforgeError as exc:
        outcome.status, outcome.error = "failed", exc.to_dict()
    except OSError as exc:
        outcome.status = "failed"
        outcome.error = (StorageFull(what=f"the {model} result files") if is_storage_full(exc) else
                         MeshforgeError(reason=f"{type(exc).__name__}: {exc}")).to_dict()
    except Exception as exc:  # a bug in meshforge itself: report it, keep the host alive
        outcome.status = "failed"
        outcome.error = MeshforgeError(reason=f"{type(exc).__name__}: {exc}").to_dict()
    finally:
        if not published and partial.exists():
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
        outcome.files = bundle.model_files(out, model)
    return outcome


def job_status(outcomes: list[ModelOutcome]) -> str:
    """A job succeeded when every model did; cancelled if any was cancelled; else failed."""
    statuses = {o.status for o in outcomes}
    if statuses == {"succeeded"}:
        return "succeeded"
    if "cancelled" in statuses:
        return "cancelled"
    return "failed"


def run(source: str | Path, models: str | list[str] | None = None, out: str | Path = "out",
        options: dict | None = None, *, score: bool = True, holdout: bool = False,
        progress: Progress | None = None, limits: Limits = Limits(),
        manager: PluginManager | None = None) -> dict:
    """Load a capture and run every selected model into ``out``; returns the report (also written
    to ``out/report.json``). Request errors (unknown model, bad options) and capture errors
    raise before anything is written; model failures are recorded in the report."""
    manager = manager or get_manager()
    progress = progress or silent()
    names, resolved = validate_request(models, options, manager)
    created = now_iso()
    out = Path(out)
    capture = load_capture(source, limits, progress.slice(0.0, 0.1, "loading the capture"))
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for i, name in enumerate(names):
        span = progress.slice(0.1 + 0.9 * i / len(names), 0.1 + 0.9 * (i + 1) / len(names), f"{name}")
        outcomes.append(run_model(capture, name, resolved[name], out, score=score, holdout=holdout,
                                  progress=span, manager=manager, component_options=resolved))
        if outcomes[-1].status == "cancelled":
            break
    report = make_report(outcomes, capture, created=created, started=created, finished=now_iso())
    bundle.write_json(out / bundle.REPORT, report)
    return report


def make_report(outcomes: list[ModelOutcome], capture: Capture | None, *, job_id: str | None = None,
                created: str | None = None, started: str | None = None, finished: str | None = None,
                extra: dict | None = None) -> dict:
    """report.json: the job object, the input's summary, per-model timings, estimates and quality."""
    status = job_status(outcomes)
    failed = next((o for o in outcomes if o.error), None)
    report = {
        "job_id": job_id,
        "status": status,
        "created_at": created, "started_at": started, "finished_at": finished,
        "progress": 1.0 if status == "succeeded" else round(float(np.mean([o.progress for o in outcomes])), 4),
        "models": {o.name: o.to_dict() for o in outcomes},
        "error": failed.error if failed and status != "succeeded" else None,
        "input": capture.summary() if capture is not None else None,
        "meshforge_version": metadata.version("meshforge"),
    }
    if extra:
        report.update(extra)
    return _finite(report)


def _finite(value):
    """Replace NaN/inf (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
