"""Predictor backends side by side on this CPU, quiet and with a training-like load on the same cores.

Usage::

    python benchmarks/bench_backends.py                         # yolov7-tiny deploy, 320 and 640, batch 1
    python benchmarks/bench_backends.py --sizes 320 --rounds 3 --json out.json

Paths (network forward with decode, batch 1, NMS excluded; every path the same well-conditioned weights and the
same probe input; PyTorch with ``torch.set_num_threads(--threads)``, the runtimes with as many threads):

* ``torch NCHW``        the fused deploy form, fp32
* ``torch NHWC``        the same in channels_last (what ``Predictor(backend="torch")`` runs)
* ``onnxruntime``       the cached ONNX export (:mod:`core.inference.backends`, dynamic shapes) in ONNX Runtime
* ``openvino``          the same file compiled by OpenVINO, f32 (only when ``openvino`` is installed)
* ``openvino bf16``     OpenVINO's own default on CPUs with native bf16 (shown for reference; the backend pins f32)

One run, interleaved: each round runs every path ``--iters`` times back to back (first call untimed), so a busy
neighbour slows all paths alike. Printed: min and median per path, the ratio to torch NCHW, and the 1-minute load
average before and after each phase. The ``loaded`` phase starts a subprocess running a PyTorch conv training
loop (forward + backward + SGD) on ``--threads`` threads, like a fine-tune sharing the cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.device import cpu_description  # noqa: E402
from core.inference import convert_for_deploy, flush_denormals, probe_image, well_conditioned_  # noqa: E402
from core.inference.backends import cached_export, missing_runtime  # noqa: E402
from core.models import build_model  # noqa: E402

TRAIN_LOAD = """
import torch, time
torch.set_num_threads({threads})
net = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Conv2d(32, 32, 3, padding=1),
                            torch.nn.BatchNorm2d(32), torch.nn.SiLU())])
opt = torch.optim.SGD(net.parameters(), lr=1e-3)
x = torch.randn(8, 32, 96, 96)
while True:
    opt.zero_grad(); net(x).square().mean().backward(); opt.step()
"""


def build_paths(size: int, threads: int, cache: Path, model_name: str) -> dict[str, Callable[[], object]]:
    """Name -> a zero-argument call running one forward on the probe input."""
    model = well_conditioned_(build_model(model_name, 80), head_gain=1.0).eval()
    deploy = convert_for_deploy(model, check=False).model.eval()
    nhwc = copy.deepcopy(deploy).to(memory_format=torch.channels_last)
    x = probe_image(size, 1)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    arr = np.ascontiguousarray(x.numpy())

    def torch_call(net: torch.nn.Module, inp: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode(), flush_denormals():
                return net.head.decode(net.forward_levels(inp, aux=False))

        return call

    paths: dict[str, Callable[[], object]] = {
        "torch NCHW": torch_call(deploy, x),
        "torch NHWC": torch_call(nhwc, x_nhwc),
    }
    if missing_runtime("onnxruntime") is None:
        from core.inference.backends import OnnxRuntimeRunner

        onnx_path = cached_export(deploy, size, directory=cache).path
        ort = OnnxRuntimeRunner(onnx_path, threads=threads)
        paths["onnxruntime"] = lambda: ort(arr)
        if missing_runtime("openvino") is None:
            import openvino as ov

            from core.inference.backends import OpenVinoRunner

            ovr = OpenVinoRunner(onnx_path, threads=threads)
            paths["openvino"] = lambda: ovr(arr)
            bf16 = ov.Core().compile_model(
                str(onnx_path),
                "CPU",
                {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16"},
            )
            req = bf16.create_infer_request()
            paths["openvino bf16"] = lambda: req.infer({0: arr})
        else:
            print("openvino: not installed (pip install 'yolov7-studio[openvino]')")
    else:
        print("onnxruntime: not installed (pip install 'yolov7-studio[export]')")
    return paths


def run_phase(paths: dict[str, Callable[[], object]], rounds: int, iters: int) -> dict[str, list[float]]:
    """Interleaved rounds: every path ``iters`` timed calls per round (after one untimed call)."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, call in paths.items():
            call()
            for _ in range(iters):
                t0 = time.perf_counter()
                call()
                times[name].append(1000 * (time.perf_counter() - t0))
    return times


def table(title: str, times: dict[str, list[float]], load: tuple[float, float]) -> str:
    base = statistics.median(times["torch NCHW"])
    lines = [f"{title} (load average {load[0]:.1f} -> {load[1]:.1f})"]
    lines.append(f"  {'path':<16} {'min ms':>8} {'median ms':>10} {'x torch NCHW':>13} {'n':>4}")
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"  {name:<16} {min(ts):8.1f} {med:10.1f} {base / med:12.2f}x {len(ts):4d}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="yolov7-tiny")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--no-load", action="store_true", help="quiet phase only")
    ap.add_argument("--json", default=None, help="write the raw times here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_description())
    print(f"{args.model} deploy form, batch 1, {args.threads} threads, {args.rounds} rounds x {args.iters} iters")
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as cache:
        for size in args.sizes:
            paths = build_paths(size, args.threads, Path(cache), args.model)
            phases = [("quiet", False)] + ([] if args.no_load else [("training load", True)])
            for phase, loaded in phases:
                proc = None
                if loaded:
                    code = TRAIN_LOAD.format(threads=args.threads)
                    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
                    time.sleep(3)  # let the load start
                try:
                    before = os.getloadavg()[0]
                    times = run_phase(paths, args.rounds, args.iters)
                    after = os.getloadavg()[0]
                finally:
                    if proc is not None:
                        proc.terminate()
                        proc.wait()
                print(table(f"{args.model} {size} px, {phase}", times, (before, after)), flush=True)
                out[f"{size} {phase}"] = {"times_ms": times, "load": [before, after]}
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
