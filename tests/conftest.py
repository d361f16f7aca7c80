"""Shared fixtures: the ../shared folder (skipped with a reason where absent) and CPU thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("YOLOV7_STUDIO_SHARED", REPO.parent / "shared"))

torch.set_num_threads(min(2, os.cpu_count() or 1))
# Start PyTorch's intra-op thread pool now, with denormals not flushed. Its threads keep the flush setting of the
# thread that started them, so a pool first started inside a flush-denormals block (the Predictor, the trainer's
# CPU setup) would flush in the parallel part of every later test while the main thread does not, and the exact
# comparisons of saturated assignment costs (tests/test_assign.py) would depend on test order.
torch.set_flush_denormal(False)
torch.ones(1 << 22).exp_().sum()
torch.mm(torch.ones(256, 256), torch.ones(256, 256))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test with a clear reason when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared folder, present in CI but not in a user's clone)")
    return path


@pytest.fixture
def shared() -> Path:
    """The ../shared folder; skips the test where it is absent."""
    return shared_path()


@pytest.fixture
def bccd_root() -> Path:
    """Root of the BCCD dataset in ../shared (Pascal VOC layout)."""
    return shared_path("datasets", "bccd", "BCCD")


@pytest.fixture
def conformance_dir() -> Path:
    """../shared/yolov7/conformance with the official reference outputs."""
    return shared_path("yolov7", "conformance")


@pytest.fixture(autouse=True)
def _denormals_not_flushed():
    """Every test starts with denormals not flushed in the main thread (a trainer run in-process turns flushing on
    for its thread and leaves it), matching the unflushed intra-op pool started above."""
    torch.set_flush_denormal(False)
    yield
