"""Models and predictors loaded once and shared by request threads (the studio, the dashboard).

Loading a checkpoint and building a deploy form take seconds; a request must not pay that each time. Entries are
keyed by what they were made from (the file's resolved path, size and modification time, plus the caller's key),
so an overwritten checkpoint is never served stale. One lock per key: two requests for the same new entry build it
once; different entries build in parallel.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def file_key(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns): changes whenever the file is replaced."""
    p = Path(path).resolve()
    st = p.stat()
    return (str(p), st.st_size, st.st_mtime_ns)


class ModelCache:
    """A small thread-safe LRU of objects built by a factory (models, predictors, ONNX sessions)."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, factory: Callable[[], T]) -> T:
        """The cached object for ``key``, built with ``factory()`` the first time (once, even under concurrency)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            value = factory()
            with self._lock:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.max_entries:
                    old, _ = self._items.popitem(last=False)
                    self._key_locks.pop(old, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._key_locks.clear()

    def __len__(self) -> int:
        return len(self._items)


def checkpoint_img_size(checkpoint: dict[str, Any] | None, default: int = 640) -> int:
    """The training image size a checkpoint stores (``train.img`` or ``train.config.img``), else ``default``."""
    train = (checkpoint or {}).get("train")
    if isinstance(train, dict):
        for source in (train, train.get("config")):
            if isinstance(source, dict) and isinstance(source.get("img"), (int, float)) and source["img"] > 0:
                return int(source["img"])
    return default


def load_checkpoint_model(cache: ModelCache, path: str | Path) -> Any:
    """The :class:`core.checkpoint.io.LoadedModel` of ``path`` (training form, eval mode), cached.

    Callers must not modify the returned model (it is shared); copy it first if they need to.
    """
    from core.checkpoint.io import load_model

    def build() -> Any:
        loaded = load_model(path)
        loaded.model.eval()
        return loaded

    return cache.get(("model", *file_key(path)), build)
