"""Progress reporting and cooperative cancellation, the same for every plugin.

A plugin receives a :class:`Progress` and calls, between steps of its work::

    progress.update(0.4, stage="fusing")   # fraction of *this* task done, and what it is doing
    progress.check_cancelled()             # raises errors.Cancelled once cancel was requested

Sub-tasks get their own slice of the range with :meth:`Progress.slice`, so a helper can
report 0..1 for itself without knowing where it sits in the whole job. Whoever runs the
plugin (CLI, worker, tests) decides what an update does (draw a bar, write to Redis) and
what "cancelled" means, by passing ``on_update`` and ``is_cancelled``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from .errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """One update: overall fraction in [0, 1], the stage name, and when it happened (time.time())."""

    fraction: float
    stage: str
    at: float


class Progress:
    """Where a task reports how far it got and learns whether it should stop.

    Parameters:
        on_update(callable | None): called with a :class:`ProgressEvent` for every update.
        is_cancelled(callable | None): returns True once the task should stop.
    """

    def __init__(self, on_update: Callable[[ProgressEvent], None] | None = None,
                 is_cancelled: Callable[[], bool] | None = None, *, _span=(0.0, 1.0), _root=None):
        self._on_update = on_update
        self._is_cancelled = is_cancelled
        self._span = _span
        self._root = _root or self
        if _root is None:
            self.fraction = 0.0
            self.stage = ""
            self._lock = threading.Lock()

    def update(self, fraction: float, stage: str | None = None) -> None:
        """Report that ``fraction`` (0..1) of this task is done; ``stage`` names the current step."""
        lo, hi = self._span
        overall = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
        root = self._root
        with root._lock:
            root.fraction = max(root.fraction, overall)  # never moves backwards
            if stage:
                root.stage = stage
            event = ProgressEvent(root.fraction, root.stage, time.time())
        if root._on_update is not None:
            root._on_update(event)

    def check_cancelled(self) -> None:
        """Raise :class:`meshforge.errors.Cancelled` if the task should stop. Cheap: call it often."""
        root = self._root
        if root._is_cancelled is not None and root._is_cancelled():
            raise Cancelled()

    def slice(self, start: float, end: float, stage: str | None = None) -> "Progress":
        """A Progress for a sub-task that covers [start, end] of this task's range."""
        lo, hi = self._span
        child = Progress(_span=(lo + (hi - lo) * start, lo + (hi - lo) * end), _root=self._root)
        if stage:
            child.update(0.0, stage)
        return child


def silent() -> Progress:
    """A Progress that reports nowhere and is never cancelled."""
    return Progress()


class CancelFlag:
    """A thread-safe flag usable as ``is_cancelled`` (the CLI sets it on Ctrl-C)."""

    def __init__(self):
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()
