"""Device selection and the CPU bf16 capability check that decides whether bf16 autocast is used by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.device import DeviceError, cpu_has_native_bf16, select_device


def test_select_device_cpu_and_auto() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device(None).type == expected


def test_select_device_rejects_unknown_and_missing_gpu() -> None:
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            select_device("cuda:0")


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo (Linux) to cross-check")
def test_cpu_bf16_check_agrees_with_cpu_flags() -> None:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    hardware = bool({"avx512_bf16", "amx_bf16"} & flags)
    native = cpu_has_native_bf16()
    assert isinstance(native, bool)
    if hardware:
        assert native
    elif "avx512bw" not in flags:  # oneDNN's bf16 needs at least AVX-512 (it converts with AVX512-BW)
        assert not native
