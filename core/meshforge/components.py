"""What plugins provide: reconstructors, previewers and quality scorers.

Each component describes itself with a small frozen spec (name, version, options, needs)
that the CLI, the API and the docs read without running any model code, answers whether it
can run on this machine (:meth:`availability`), and does one thing:

- :class:`Reconstructor` — ``reconstruct(capture, options, progress)`` → :class:`ReconstructionResult`
- :class:`Previewer` — ``preview(mesh, capture, out_dir, progress)`` → files written
- :class:`QualityScorer` — ``evaluate`` per view, then ``classify`` → :class:`QualityReport`

Plugins return instances of these from the hooks in :mod:`meshforge.hookspecs`.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidOptions

if TYPE_CHECKING:  # imported for annotations only: keeps this module free to import
    from .capture import Capture
    from .mesh import TexturedMesh
    from .progress import Progress

_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Option:
    """One option of a component: name, type, default and limits.

    Attributes:
        name: the key users pass, e.g. ``"resolution"``.
        type: ``"int"``, ``"float"``, ``"bool"`` or ``"str"``.
        default: the value used when the option is not given.
        help: one line for people.
        minimum, maximum: inclusive limits for numbers.
        choices: the only accepted values (strings or numbers).
    """

    name: str
    type: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()

    def coerce(self, value: Any, where: str) -> Any:
        """The value converted to the option's type, or :class:`InvalidOptions` naming ``where``."""
        want = _TYPES[self.type]
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise InvalidOptions(where=where, reason=f"expected true or false, got {value!r}")
        if self.type in ("int", "float"):
            if isinstance(value, bool):
                raise InvalidOptions(where=where, reason=f"expected a number, got {value!r}")
            try:
                number = want(value) if not isinstance(value, str) or self.type == "float" else int(value, 10)
            except (TypeError, ValueError):
                raise InvalidOptions(where=where, reason=f"expected {self.type}, got {value!r}") from None
            if self.type == "int" and isinstance(value, float) and not float(value).is_integer():
                raise InvalidOptions(where=where, reason=f"expected an integer, got {value!r}")
            if isinstance(number, float) and not math.isfinite(number):
                raise InvalidOptions(where=where, reason=f"expected a finite number, got {value!r}")
            if self.minimum is not None and number < self.minimum or self.maximum is not None and number > self.maximum:
                raise InvalidOptions(where=where, reason=f"{number} is outside [{self.minimum}, {self.maximum}]")
            value = number
        elif not isinstance(value, str):
            raise InvalidOptions(where=where, reason=f"expected a string, got {value!r}")
        if self.choices and value not in self.choices:  # numbers' repr is their plain text
            raise InvalidOptions(where=where, reason=f"{value!r} is not one of {', '.join(map(repr, self.choices))}")
        return value

    def to_dict(self) -> dict:
        d = {"name": self.name, "type": self.type, "default": self.default, "help": self.help}
        if self.minimum is not None:
            d["minimum"] = self.minimum
        if self.maximum is not None:
            d["maximum"] = self.maximum
        if self.choices:
            d["choices"] = list(self.choices)
        return d


@dataclass(frozen=True)
class Needs:
    """What a component needs from the machine.

    Attributes:
        gpu: needs a CUDA device.
        gpu_memory_gb: peak GPU memory at default options, in GiB.
        weights: where its weights come from, for people (None: needs no weights).
    """

    gpu: bool = False
    gpu_memory_gb: float = 0.0
    weights: str | None = None


@dataclass(frozen=True)
class Availability:
    """Whether a component can run here, and if not, why and what to do about it."""

    available: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> "Availability":
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> "Availability":
        return cls(False, reason)


@dataclass(frozen=True)
class ComponentSpec:
    """Self-description of a component.

    Attributes:
        name: unique per kind, lower case (the ``models`` value users pass).
        version: of the distribution that ships it (from installed metadata).
        description: one line.
        options: the options it accepts.
        needs: what it needs from the machine.
        uses_view_subsets: a reconstructor that can run on a capture with views left out
            (needed for held-out scoring).
        low_memory: options for one retry after running out of memory (empty: no retry).
    """

    name: str
    version: str
    description: str
    options: tuple[Option, ...] = ()
    needs: Needs = field(default_factory=Needs)
    uses_view_subsets: bool = True
    low_memory: dict = field(default_factory=dict)

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "description": self.description,
                "options": [o.to_dict() for o in self.options], "needs": asdict(self.needs),
                "uses_view_subsets": self.uses_view_subsets, "low_memory": dict(self.low_memory)}


class Component(ABC):
    """Common to every component: a spec, an availability check and option validation."""

    spec: ComponentSpec
    kind: str = "component"

    def availability(self) -> Availability:
        """Whether this component can run on this machine. Cheap; called at start-up and cached."""
        return Availability.yes()

    def resolve_options(self, options: dict | None) -> dict:
        """Options merged over the defaults, typed and range-checked; unknown keys are errors."""
        options = dict(options or {})
        known = {o.name: o for o in self.spec.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InvalidOptions(where=f"options.{self.spec.name}",
                                 reason=f"unknown option(s) {', '.join(map(repr, unknown))}; "
                                        f"{self.spec.name} accepts {', '.join(sorted(known)) or 'no options'}")
        return {name: (o.coerce(options[name], f"options.{self.spec.name}.{name}") if name in options else o.default)
                for name, o in known.items()}


# ── reconstructors ───────────────────────────────────────────────────────────────────────

@dataclass
class ReconstructionResult:
    """What a reconstructor returns.

    Attributes:
        mesh: the textured mesh, in the capture's world frame.
        estimates: what the reconstructor estimated (JSON-serialisable), e.g. its grid size.
        timings: seconds per stage, e.g. ``{"fusion": 0.8, "texture": 0.6}``.
        warnings: things a user should know (a time budget ran out, a fallback was used).
        diagnostics: larger JSON-serialisable data (loss curves), written to the report.
        files: more files for the model's folder, plain name -> bytes (e.g. a learned
            environment map); they cannot replace the mesh files.
    """

    mesh: "TexturedMesh"
    estimates: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


class Reconstructor(Component):
    """Turns a loaded capture into a textured mesh."""

    kind = "reconstructor"

    @abstractmethod
    def reconstruct(self, capture: "Capture", options: dict, progress: "Progress") -> ReconstructionResult:
        """Reconstruct ``capture`` with ``options`` (already resolved: every option present, typed).

        Call ``progress.update`` and ``progress.check_cancelled`` between steps. Raise a
        :class:`meshforge.errors.ReconstructionError` subclass for expected failures.
        """


# ── previewers ───────────────────────────────────────────────────────────────────────────

class Previewer(Component):
    """Renders static images of a result for people."""

    kind = "previewer"

    @abstractmethod
    def preview(self, mesh: "TexturedMesh", capture: "Capture", out_dir: Path, progress: "Progress",
                quality: "QualityReport | None", options: dict) -> list[Path]:
        """Write preview images of ``mesh`` into ``out_dir`` and return their paths.

        ``quality`` is the result's quality report when it was scored; ``options`` are this
        previewer's resolved options.
        """


# ── quality scorers ──────────────────────────────────────────────────────────────────────

@dataclass
class QualityReport:
    """A verdict on one result, written as quality.json.

    Attributes:
        status: ``"normal"``, ``"warning"`` or ``"failure"``.
        reason: which rule decided the status, for people.
        summary: headline figures, at least ``psnr`` and ``ssim`` (dB, 0..1) when available.
        details: everything else (per-view figures, thresholds, renderer), JSON-serialisable.
    """

    status: str
    reason: str
    summary: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    SEVERITY = {"normal": 0, "warning": 1, "failure": 2}

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "summary": self.summary, **self.details}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)


class QualityScorer(Component):
    """Measures a result against the capture and classifies it."""

    kind = "quality_scorer"

    @abstractmethod
    def evaluate(self, mesh: "TexturedMesh", capture: "Capture", views: list[str], progress: "Progress",
                 options: dict) -> dict:
        """Per-view figures of ``mesh`` seen from the capture's cameras: ``{view: {metric: value}}``."""

    @abstractmethod
    def classify(self, fit: dict, heldout: dict | None, timings: dict, options: dict) -> QualityReport:
        """The verdict from fit-view figures (views the model saw) and, when measured, held-out figures
        (each view scored on a reconstruction made without it)."""
