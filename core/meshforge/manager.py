"""The one plugin manager: discovers plugins, registers their components, reports failures.

Discovery reads the ``meshforge.plugins`` entry-point group, which also lists meshforge's
own built-in plugins: nothing is special-cased. Environment:

- ``MESHFORGE_PLUGINS``: comma-separated entry-point names to load instead of everything
  installed (``""`` loads none). Names that are not installed are reported, not fatal.
- ``MESHFORGE_TRACE_PLUGINS=1``: print every hook call and its results to stderr.

A plugin that fails to import, or whose hook raises or returns something wrong, becomes a
record with the exception text; the host keeps running. The same goes for availability
checks and for every runtime call into a component (:func:`call`).
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .components import Availability, Component, Previewer, QualityScorer, Reconstructor
from .errors import Cancelled, MeshforgeError, ModelOutOfMemory, ModelUnavailable, PluginFailed, UnknownModel

ENTRY_POINT_GROUP = "meshforge.plugins"

#: hook name -> the component class its items must be instances of, and the kind's label
_REGISTRATION_HOOKS = {
    "register_reconstructors": (Reconstructor, "reconstructor"),
    "register_previewers": (Previewer, "previewer"),
    "register_quality_scorers": (QualityScorer, "quality_scorer"),
}


@dataclass
class PluginRecord:
    """One discovered plugin (entry point): where it came from and whether it loaded."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # loaded | failed | not_installed
    error: str | None = None
    hooks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ComponentRecord:
    """One registered component and the plugin that provided it."""

    kind: str
    name: str
    plugin: str
    component: Component | None
    error: str | None = None
    _availability: Availability | None = None

    def availability(self) -> Availability:
        """Cached availability; a failing check counts as unavailable with its exception text."""
        if self._availability is None:
            if self.component is None:
                self._availability = Availability.no(self.error or "failed to register")
            else:
                try:
                    result = self.component.availability()
                    self._availability = result if isinstance(result, Availability) else Availability.no(
                        f"availability() returned {type(result).__name__}, not Availability")
                except Exception as exc:  # a broken check must not take the host down
                    self._availability = Availability.no(f"availability check failed: {exc!r}")
        return self._availability

    def to_dict(self) -> dict:
        avail = self.availability()
        spec = self.component.spec.to_dict() if self.component is not None else {"name": self.name}
        out = {**spec, "kind": self.kind, "plugin": self.plugin, "available": avail.available}
        if not avail.available:
            out["reason"] = avail.reason
        return out


class PluginManager:
    """Owns the pluggy manager and the registry of components.

    Parameters:
        entry_points: the entry points to load (default: the installed ``meshforge.plugins`` group).
        enabled: comma-separated names to load (default: ``MESHFORGE_PLUGINS``; None loads all).
    """

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None, enabled: str | None = None):
        self.pm = pluggy.PluginManager("meshforge")
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get("MESHFORGE_TRACE_PLUGINS") == "1":
            self.pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            self.pm.enable_tracing()
        self.plugins: dict[str, PluginRecord] = {}
        self._components: dict[str, dict[str, ComponentRecord]] = {kind: {} for _, kind in _REGISTRATION_HOOKS.values()}
        self._lock = threading.Lock()
        if enabled is None:
            enabled = os.environ.get("MESHFORGE_PLUGINS")
        wanted = None if enabled is None else {n.strip() for n in enabled.split(",") if n.strip()}
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points)
        for ep in eps:
            if wanted is None or ep.name in wanted:
                self._load_entry_point(ep)
        for name in sorted((wanted or set()) - {ep.name for ep in eps}):
            self.plugins[name] = PluginRecord(name, module="?", status="not_installed",
                                              error=f"no installed plugin is called {name!r} (MESHFORGE_PLUGINS)")
            print(f"meshforge: MESHFORGE_PLUGINS names {name!r}, which is not installed", file=sys.stderr)
        self._collect_components()

    # -- discovery -------------------------------------------------------------------------
    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        record = PluginRecord(ep.name, module=ep.value, distribution=dist.name if dist else None,
                              version=dist.version if dist else None)
        self.plugins[ep.name] = record
        try:
            module = ep.load()
            self.pm.register(module, name=ep.name)
            record.hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        except Exception as exc:
            record.status, record.error = "failed", _describe(exc)

    def register(self, plugin: Any, name: str) -> None:
        """Register an in-process plugin object (tests, embedding applications) and its components."""
        with self._lock:
            self.pm.register(plugin, name=name)
            self.plugins[name] = PluginRecord(name, module=getattr(plugin, "__name__", type(plugin).__name__),
                                              hooks=sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
            self._collect_components(only=name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self.pm.unregister(name=name)
            self.plugins.pop(name, None)
            for registry in self._components.values():
                for key in [k for k, r in registry.items() if r.plugin == name]:
                    del registry[key]

    def _collect_components(self, only: str | None = None) -> None:
        for hook_name, (cls, kind) in _REGISTRATION_HOOKS.items():
            registry = self._components[kind]
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if only is not None and impl.plugin_name != only:
                    continue
                try:
                    items = impl.function()
                    if items is None:
                        continue
                    items = list(items)
                except Exception as exc:
                    self._plugin_failed(impl.plugin_name, f"{hook_name}() raised {_describe(exc)}")
                    continue
                for item in items:
                    name = getattr(getattr(item, "spec", None), "name", None)
                    if not isinstance(item, cls) or not name:
                        self._plugin_failed(impl.plugin_name,
                                            f"{hook_name}() returned {item!r}, not a {cls.__name__} with a spec")
                        continue
                    if name in registry:
                        self._plugin_failed(impl.plugin_name, f"{kind} {name!r} is already provided by plugin "
                                                              f"{registry[name].plugin!r}; it was not registered again")
                        continue
                    registry[name] = ComponentRecord(kind, name, impl.plugin_name, item)

    def _plugin_failed(self, plugin: str, error: str) -> None:
        record = self.plugins.setdefault(plugin, PluginRecord(plugin, module="?"))
        record.status = "failed"
        record.error = error if not record.error else f"{record.error}; {error}"

    # -- lookup ----------------------------------------------------------------------------
    def components(self, kind: str) -> dict[str, ComponentRecord]:
        """name -> record for one kind: ``reconstructor``, ``previewer`` or ``quality_scorer``."""
        return dict(self._components[kind])

    def reconstructor(self, name: str) -> Reconstructor:
        """The available reconstructor called ``name``, or UnknownModel / ModelUnavailable."""
        registry = self._components["reconstructor"]
        record = registry.get(name)
        if record is None:
            raise UnknownModel(model=name, choices=", ".join(sorted(registry)) or "none")
        avail = record.availability()
        if not avail.available:
            raise ModelUnavailable(model=name, reason=avail.reason)
        return record.component  # type: ignore[return-value]

    def available(self, kind: str) -> list[Component]:
        return [r.component for r in self._components[kind].values() if r.availability().available]

    def describe(self) -> dict:
        """Everything discovered, as JSON: plugins, and each kind's components with availability.

        This is what ``meshforge models --json`` prints and ``GET /models`` serves.
        """
        return {
            "reconstructors": [r.to_dict() for r in self._components["reconstructor"].values()],
            "previewers": [r.to_dict() for r in self._components["previewer"].values()],
            "quality_scorers": [r.to_dict() for r in self._components["quality_scorer"].values()],
            "plugins": [p.to_dict() for p in self.plugins.values()],
        }


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def call(component: Component, method: str, *args, **kwargs):
    """Call a component's method; an undeclared exception becomes :class:`PluginFailed`.

    meshforge's own errors (including :class:`Cancelled`) pass through unchanged, so a
    plugin can fail with a precise code; anything else is a bug in the plugin and is
    reported with its name, while the host keeps running.
    """
    try:
        return getattr(component, method)(*args, **kwargs)
    except (MeshforgeError, Cancelled, KeyboardInterrupt):
        raise
    except MemoryError as exc:
        raise ModelOutOfMemory(model=component.spec.name, reason=f"host memory exhausted ({exc!r})") from exc
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            raise ModelOutOfMemory(model=component.spec.name, reason=str(exc).splitlines()[0]) from exc
        raise PluginFailed(plugin=component.spec.name, call=method, reason=_describe(exc)) from exc


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> PluginManager:
    """The process-wide manager, discovered on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def reset_manager(manager: PluginManager | None = None) -> None:
    """Replace (or forget, with None) the process-wide manager; for tests and after changing MESHFORGE_PLUGINS."""
    global _manager
    with _manager_lock:
        _manager = manager
