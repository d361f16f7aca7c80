"""Progress reporting for long library calls: a callback ``(fraction 0..1, short message)`` or a tqdm bar.

A UI passes its own callback (e.g. ``gr.Progress()``); the command line passes ``True`` for a tqdm bar. The
callback gets non-decreasing fractions, at most about ``steps`` calls per phase, and always a final ``1.0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

ProgressFn = Callable[[float, str], None]
ProgressArg = bool | ProgressFn | None

T = TypeVar("T")


class Progress:
    """Maps work inside ``[start, end]`` of the whole call to the callback's 0..1 fraction (throttled, monotonic).

    Args:
        fn: the callback, or ``None`` (then every method does nothing).
        start, end: the part of the whole call this object covers.
        steps: at most this many callback calls per ``update`` range (plus the final one).
    """

    def __init__(self, fn: ProgressFn | None, start: float = 0.0, end: float = 1.0, steps: int = 100) -> None:
        self.fn, self.start, self.end, self.steps = fn, start, end, max(int(steps), 1)
        self._last = [-1.0]  # shared with the sub-ranges, so the whole call stays monotonic

    def __bool__(self) -> bool:
        return self.fn is not None

    def sub(self, start: float, end: float) -> Progress:
        """A ``Progress`` for the part ``[start, end]`` (in this object's own 0..1) of this one's range."""
        span = self.end - self.start
        child = Progress(self.fn, self.start + span * start, self.start + span * end, self.steps)
        child._last = self._last
        return child

    def __call__(self, fraction: float, message: str) -> None:
        """Report ``fraction`` (0..1 of this object's range); skipped unless it moved on by 1/steps of the range
        (the end of the range and 1.0 are always reported once)."""
        if self.fn is None:
            return
        fraction = min(max(float(fraction), 0.0), 1.0)
        value = self.start + (self.end - self.start) * fraction
        last = self._last[0]
        if value <= last:
            return
        if fraction < 1.0 and last >= 0 and value - last < (self.end - self.start) / self.steps:
            return
        self._last[0] = value
        self.fn(value, message)

    def update(self, done: int, total: int, message: str) -> None:
        """Report ``done`` of ``total`` items."""
        self(done / total if total > 0 else 1.0, f"{message} {done}/{total}")

    def iterate(self, items: Iterable[T], total: int, message: str) -> Iterator[T]:
        """Yield ``items``, reporting after each one."""
        for k, item in enumerate(items, start=1):
            yield item
            self.update(k, total, message)


def as_progress(progress: ProgressArg, start: float = 0.0, end: float = 1.0) -> Progress:
    """``Progress`` for a callable ``progress`` (``True``/``False``/``None``, the tqdm switches, give a silent one)."""
    return Progress(progress if callable(progress) else None, start, end)


def wants_tqdm(progress: Any) -> bool:
    """True when ``progress`` is the tqdm switch ``True`` (not a callback)."""
    return progress is True
