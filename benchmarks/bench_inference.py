"""Side-by-side CPU inference latency: PyTorch forms, ONNX Runtime, OpenVINO, int8, the official model, quiet and
with a training job on the same cores.

Usage::

    python benchmarks/bench_inference.py                      # yolov7-tiny and yolov7, 320 and 640, batch 1 and 8
    python benchmarks/bench_inference.py --models yolov7-tiny --sizes 320 --batches 1 --rounds 1   # a quick check
    python benchmarks/bench_inference.py --official ~/src/yolov7 --json out.json   # with the official fused model

Per model, size and batch (a "workload"), the network forward of every path, decode included, NMS excluded,
``--threads`` threads everywhere, the same weights and the same input in every path:

* ``train``          training form (IDetect, RepConv/BN unfused) in eval mode, NCHW fp32, PyTorch eager
* ``deploy``         fused deploy form (:func:`core.inference.convert_for_deploy`), NCHW fp32, PyTorch eager: the
                     baseline of the ratio column ``x deploy`` (its median / the path's median)
* ``deploy+cl``      the same in channels_last (what ``Predictor(backend="torch")`` runs)
* ``bf16``           channels_last under CPU bfloat16 autocast (only on CPUs with native bf16)
* ``official``       the official fused model (``models.yolo.Model`` of a WongKinYiu/yolov7 checkout given with
                     ``--official PATH``, imported from there, never vendored; our weights loaded, ``fuse()``);
                     the checkout's own imports (e.g. seaborn, pandas) must be installed; without ``--official``
                     it is not measured (it has the deploy form's layers and FLOPs)
* ``onnxruntime``    the cached, verified ONNX export (:func:`core.inference.backends.build_runner`) in ONNX Runtime
* ``openvino``       the same graph compiled by OpenVINO, f32 (as the ``openvino`` backend)
* ``int8``           the static int8 (QDQ) model of :func:`core.export.quantize_int8` in ONNX Runtime, calibrated
                     on ``--calib`` generated probe images (only speed is measured here, not accuracy; the accuracy
                     gate is ``yolov7-studio export --int8``)
* ``int8-openvino``  the same int8 file in OpenVINO
* extras, only with ``--paths``: ``deploy+jit`` / ``bf16+jit`` (traced and frozen), ``openvino-bf16`` (OpenVINO's
  bf16 inference precision, native-bf16 CPUs)

Phases (``--phases``): ``quiet``, then ``load``: a subprocess trains yolov7-tiny (training form, forward + backward
+ SGD, batch 4 at 320, ``--threads`` threads) on the same cores, like a fine-tune running beside the studio. Each
phase runs interleaved rounds: per round every path once untimed (its weights back in cache, as in a detection
loop), then ``--iters`` timed calls; so a busy neighbour slows all paths alike. Printed per phase: min and median
per path, the ratio to torch eager, the limit (the deploy form's FLOPs, 2 x (MACs + bias), times the batch, divided
by this machine's measured peak matmul throughput with the same threads) and the 1-minute load average before and
after the phase; at the end, one table per phase and whether the goals of issue 17 are met on this CPU:
yolov7-tiny at 640, batch 1, at most 60 ms on the fastest path when quiet, and at most 2x that path's quiet
latency under the training load (medians; when the fastest path is int8 or bf16, also for the fastest fp32 one).

``--nms`` also times the official NMS (detect.py and test.py settings) against its candidate count; with ``bf16``
at batch 1 the bf16 change of the detections is measured against fp32. Weights: the well-conditioned ``kaiming``
scheme of the conformance file (:func:`core.inference.well_conditioned_`: PyTorch's default init lets activations
decay to denormals, which makes fp32 CPU convolutions many times slower). Input: a smooth probe image
(:func:`core.inference.probe_image`). ``benchmarks/bench_backends.py`` is a preset of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchvision.ops import box_iou  # noqa: E402

from core.device import cpu_description, cpu_has_native_bf16  # noqa: E402
from core.inference import convert_for_deploy, probe_image, well_conditioned_  # noqa: E402
from core.inference.backends import BackendError, build_runner, missing_runtime  # noqa: E402
from core.models import build_model  # noqa: E402
from core.models.profile import count_gflops  # noqa: E402
from core.nms import NmsConfig, apply_nms  # noqa: E402

DEFAULT_PATHS = ("train", "deploy", "deploy+cl", "bf16", "official", "onnxruntime", "openvino", "int8", "int8-openvino")
EXTRA_PATHS = ("deploy+jit", "bf16+jit", "openvino-bf16")
TORCH_PATHS = ("train", "deploy", "deploy+cl", "deploy+jit", "bf16", "bf16+jit", "official")
GOAL_MODEL, GOAL_SIZE, GOAL_MS, GOAL_LOAD_RATIO = "yolov7-tiny", 640, 60.0, 2.0

TRAIN_LOAD = """
import sys
sys.path.insert(0, {root!r})
import torch
from core.inference import well_conditioned_
from core.models import build_model
torch.set_num_threads({threads})
torch.set_flush_denormal(True)
net = well_conditioned_(build_model("yolov7-tiny", 80)).train()
opt = torch.optim.SGD(net.parameters(), lr=1e-6, momentum=0.9)
x = torch.rand(4, 3, 320, 320)
step = 0
while True:
    opt.zero_grad()
    sum(o.float().square().mean() for o in net(x)).backward()
    opt.step()
    step += 1
    if step == 1:
        print("ready", flush=True)
"""


# -- timing ------------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median and min wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def run_phase(paths: dict[str, Callable[[], object]], rounds: int, iters: int) -> dict[str, list[float]]:
    """Interleaved rounds: per round every path one untimed call, then ``iters`` timed calls (ms)."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, call in paths.items():
                call()
                for _ in range(iters):
                    t0 = time.perf_counter()
                    call()
                    times[name].append(1000 * (time.perf_counter() - t0))
    return times


@contextlib.contextmanager
def training_load(threads: int) -> Any:
    """A yolov7-tiny training subprocess on ``threads`` threads for the duration of the block (after its 1st step)."""
    code = TRAIN_LOAD.format(root=str(ROOT), threads=threads)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the first step is done (or the process died)
        if line.strip() != "ready":
            raise RuntimeError(f"the training-load subprocess exited with code {proc.wait()} before its first step")
        print(f"  (training load running: first step after {time.monotonic() - t0:.0f} s)", flush=True)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_gflops(dtype: torch.dtype, n: int = 3072, repeats: int = 6) -> float:
    """Best-of-``repeats`` square matmul throughput in GFLOP/s (2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def measure_peaks() -> dict[str, float]:
    peaks = {"fp32": peak_gflops(torch.float32)}
    peaks["bf16"] = peak_gflops(torch.bfloat16) if cpu_has_native_bf16() else peaks["fp32"]
    return peaks


# -- the paths -----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One way of running the network: a zero-argument call and what its limit is computed from."""

    call: Callable[[], object]
    precision: str  # fp32, bf16 or int8 (int8 limits use the fp32 peak: no int8 peak is measured)


@dataclass
class Workload:
    model: str
    size: int
    batch: int
    gflops: float  # deploy form, one image
    paths: dict[str, Run] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Models:
    """The networks of one model name, built once: training form, deploy form, exports per size (in ``cache``)."""

    def __init__(self, name: str, args: argparse.Namespace, cache: Path) -> None:
        torch.manual_seed(0)
        self.name, self.args, self.cache = name, args, cache
        self.train = well_conditioned_(build_model(name, 80), seed=0).eval()
        conversion = convert_for_deploy(self.train, img_size=320)
        self.deploy = conversion.model.eval()
        self.reparam_check = conversion.check.to_dict() if conversion.check is not None else None
        self.deploy_cl = copy.deepcopy(self.deploy).to(memory_format=torch.channels_last)
        self._official: torch.nn.Module | str | None = None
        self._int8: dict[int, Path] = {}

    def official(self) -> torch.nn.Module | str:
        """The official fused model with our weights, or why it is not measured."""
        if self._official is None:
            self._official = load_official(self.args.official, self.name, self.train)
        return self._official

    def int8(self, size: int, onnx_path: Path) -> Path:
        """The static int8 model of the export at ``size``, calibrated on generated probe images (speed only)."""
        if size not in self._int8:
            from core.export import quantize_int8

            calib = [probe_image(size, 1, seed=100 + i).numpy() for i in range(self.args.calib)]
            logging.disable(logging.WARNING)  # ONNX Runtime's advice to pre-process the graph, on the root logger
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._int8[size] = quantize_int8(onnx_path, self.cache / f"{self.name}_{size}_int8.onnx", calib)
            finally:
                logging.disable(logging.NOTSET)
        return self._int8[size]


def load_official(checkout: Path | None, name: str, train: torch.nn.Module) -> torch.nn.Module | str:
    """``models.yolo.Model`` of the official checkout at ``checkout`` with ``train``'s weights, fused; or the reason
    it cannot be measured (no checkout given, not a checkout, import or load failure)."""
    if checkout is None:
        return "not measured (no --official checkout of WongKinYiu/yolov7 given)"
    cfg = checkout / "cfg" / "training" / f"{name}.yaml"
    if not (checkout / "models" / "yolo.py").is_file() or not cfg.is_file():
        return f"not measured: {checkout} has no models/yolo.py or cfg/training/{name}.yaml (not a yolov7 checkout?)"
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            from models.yolo import Model  # type: ignore[import-not-found]  # the user's checkout, not ours

            model = Model(str(cfg), ch=3, nc=train.nc)
            model.load_state_dict(train.state_dict(), strict=True)
            return model.fuse().eval()
    except Exception as exc:  # whatever the user's checkout or its dependencies raise
        return f"not measured: the official model from {checkout} failed ({type(exc).__name__}: {exc})"


def build_workload(models: Models, size: int, batch: int, wanted: list[str], threads: int) -> Workload:
    """Every wanted path that can run here for ``models`` at ``size`` x ``size``, batch ``batch``."""
    name = models.name
    w = Workload(name, size, batch, count_gflops(models.deploy, size))
    x = probe_image(size, batch)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    arr = np.ascontiguousarray(x.numpy())
    train, deploy, deploy_cl = models.train, models.deploy, models.deploy_cl
    native_bf16 = cpu_has_native_bf16()

    def bf16_decoded() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            raw = deploy_cl.forward_levels(x_cl, aux=False)
        return deploy_cl.head.decode([r.float() for r in raw])  # the decode in fp32, as the predictor does

    for path in wanted:
        if path == "train":
            w.paths[path] = Run(lambda: train(x), "fp32")
        elif path == "deploy":
            w.paths[path] = Run(lambda: deploy(x), "fp32")
        elif path == "deploy+cl":
            w.paths[path] = Run(lambda: deploy_cl(x_cl), "fp32")
        elif path in ("bf16", "bf16+jit") and not native_bf16:
            w.notes.append(f"{path}: not measured (this CPU has no native bf16; emulated bf16 is many times slower)")
        elif path == "bf16":
            w.paths[path] = Run(bf16_decoded, "bf16")
        elif path in ("deploy+jit", "bf16+jit"):
            bf16 = path == "bf16+jit"
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
            with torch.inference_mode(), autocast, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                jit = torch.jit.freeze(torch.jit.trace(deploy_cl, x_cl, check_trace=False))
            w.paths[path] = Run(autocast_call(jit, x_cl, bf16), "bf16" if bf16 else "fp32")
        elif path == "official":
            official = models.official()
            if isinstance(official, str):
                w.notes.append(f"official: {official}")
                continue
            with torch.inference_mode():
                diff = float((official(x)[0][..., :4] - deploy(x)[..., :4]).abs().max())
            w.info["official_vs_deploy_max_box_px"] = diff
            w.notes.append(f"official: the official fused model's boxes differ from our deploy form's by {diff:.2g} px")
            w.paths[path] = Run(lambda net=official: net(x), "fp32")
        else:
            add_runtime_path(w, path, models, arr, threads)
    return w


def autocast_call(net: Callable[[torch.Tensor], object], x: torch.Tensor, bf16: bool) -> Callable[[], object]:
    def call() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return net(x)

    return call


def add_runtime_path(w: Workload, path: str, models: Models, arr: np.ndarray, threads: int) -> None:
    """ONNX Runtime / OpenVINO paths (fp32 verified against PyTorch when built; int8; OpenVINO bf16)."""
    runtime = "openvino" if "openvino" in path else "onnxruntime"
    why = missing_runtime(runtime)
    if why is not None:
        w.notes.append(f"{path}: not measured ({why})")
        return
    if path == "openvino-bf16" and not cpu_has_native_bf16():
        w.notes.append(f"{path}: not measured (no native bf16 on this CPU: OpenVINO would run f32)")
        return
    try:
        runner, onnx_path = build_runner(runtime, models.deploy, w.size, directory=models.cache, threads=threads)
    except BackendError as exc:
        w.notes.append(f"{path}: not measured ({exc})")
        return
    if path in ("onnxruntime", "openvino"):
        w.paths[path] = Run(lambda: runner(arr), "fp32")
        return
    from core.inference.backends import OnnxRuntimeRunner, OpenVinoRunner

    try:
        if path == "openvino-bf16":
            import openvino as ov

            config = {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": "bf16",
            }
            request = ov.Core().compile_model(str(onnx_path), "CPU", config).create_infer_request()
            w.paths[path] = Run(lambda: request.infer({0: arr}), "bf16")
            return
        int8_path = models.int8(w.size, onnx_path)
        int8_runner = (OpenVinoRunner if runtime == "openvino" else OnnxRuntimeRunner)(int8_path, threads=threads)
    except Exception as exc:  # a runtime that cannot build or run this graph: say so, measure the rest
        w.notes.append(f"{path}: not measured ({type(exc).__name__}: {exc})")
        return
    w.paths[path] = Run(lambda: int8_runner(arr), "int8")


# -- tables ----------------------------------------------------------------------------------------------------------
def summarize(w: Workload, times: dict[str, list[float]], peaks: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per path: min, median, the ratio to torch eager (``deploy``, else the first torch path) and the limit."""
    base_name = "deploy" if "deploy" in times else next((p for p in times if p in TORCH_PATHS), None)
    base = statistics.median(times[base_name]) if base_name else float("nan")
    out = {}
    for name, ts in times.items():
        med, precision = statistics.median(ts), w.paths[name].precision
        limit = 1000 * w.gflops * w.batch / peaks["bf16" if precision == "bf16" else "fp32"]
        out[name] = {
            "min_ms": min(ts),
            "median_ms": med,
            "x_eager": base / med,
            "eager_path": base_name,
            "limit_ms": limit,
            "median_x_limit": med / limit,
            "precision": precision,
            "times_ms": ts,
        }
    return out


def phase_table(title: str, rows: dict[str, dict[str, Any]], load: tuple[float, float]) -> str:
    eager = next(iter(rows.values()))["eager_path"] if rows else None
    lines = [f"{title} (load average {load[0]:.1f} -> {load[1]:.1f})"]
    lines.append(
        f"  {'path':<14} {'min ms':>8} {'median ms':>10} {'x ' + str(eager):>12} {'limit ms':>9} {'median/limit':>13}"
        f" {'n':>3}"
    )
    for name, r in rows.items():
        lines.append(
            f"  {name:<14} {r['min_ms']:8.1f} {r['median_ms']:10.1f} {r['x_eager']:11.2f}x {r['limit_ms']:9.1f}"
            f" {r['median_x_limit']:12.2f}x {len(r['times_ms']):3d}  {r['precision']}"
        )
    return "\n".join(lines)


def final_table(results: list[dict[str, Any]], phase: str) -> str:
    """Markdown: one row per workload, one column per path, ``median (min)`` ms."""
    done = [r for r in results if phase in r["phases"]]
    paths = list(dict.fromkeys(p for r in done for p in r["phases"][phase]["paths"]))
    if not done:
        return ""
    lines = [
        f"{phase}: median (min) ms; limit = deploy FLOPs x batch / peak fp32 matmul",
        "| model | img | batch | " + " | ".join(paths) + " | limit | load avg |",
        "|---|---|---|" + "---|" * (len(paths) + 2),
    ]
    for r in done:
        ph = r["phases"][phase]
        cells = [
            f"{ph['paths'][p]['median_ms']:.0f} ({ph['paths'][p]['min_ms']:.0f})" if p in ph["paths"] else "-"
            for p in paths
        ]
        limit = 1000 * r["gflops"] * r["batch"] / r["peaks_gflops"]["fp32"]
        load = f"{ph['load'][0]:.1f} -> {ph['load'][1]:.1f}"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | " + " | ".join(cells) + f" | {limit:.0f} | {load} |"
        )
    return "\n".join(lines)


def goals(results: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Issue 17's goals from the measured medians: lines to print and the same as data."""
    hit = next(
        (r for r in results if (r["model"], r["size"], r["batch"]) == (GOAL_MODEL, GOAL_SIZE, 1)),
        None,
    )
    what = f"{GOAL_MODEL} at {GOAL_SIZE} px, batch 1"
    if hit is None or "quiet" not in hit["phases"]:
        return [f"goals ({what}): not measured in this run (needs --models {GOAL_MODEL} --sizes {GOAL_SIZE} "
                "--batches 1 and the quiet phase)"], {}  # fmt: skip
    quiet, load = hit["phases"]["quiet"], hit["phases"].get("load")
    candidates = {"fastest path": quiet["paths"]}
    lossless = {k: v for k, v in quiet["paths"].items() if v["precision"] == "fp32"}
    fastest_all = min(quiet["paths"], key=lambda p: quiet["paths"][p]["median_ms"])
    if lossless and quiet["paths"][fastest_all]["precision"] != "fp32":
        candidates["fastest fp32 path"] = lossless
    lines, data = [f"goals ({what}, medians, on {hit['cpu']}):"], {}
    for label, pool in candidates.items():
        best = min(pool, key=lambda p: pool[p]["median_ms"])
        q = pool[best]["median_ms"]
        ok = q <= GOAL_MS
        entry: dict[str, Any] = {"path": best, "quiet_ms": q, "quiet_met": ok}
        text = f"  {label} {best}: quiet {q:.1f} ms (<= {GOAL_MS:.0f} ms: {'MET' if ok else 'NOT MET'})"
        if load is not None and best in load["paths"]:
            ratio = load["paths"][best]["median_ms"] / q
            entry.update(load_ms=load["paths"][best]["median_ms"], load_ratio=ratio, load_met=ratio <= GOAL_LOAD_RATIO)
            text += f"; with the training load {entry['load_ms']:.1f} ms = {ratio:.2f}x quiet"
            text += f" (<= {GOAL_LOAD_RATIO:.0f}x: {'MET' if entry['load_met'] else 'NOT MET'})"
        else:
            text += "; under the training load: not measured (run the load phase)"
        if quiet["load"][0] > hit["threads"] + 1:  # the benchmark itself accounts for about ``threads``
            text += f" [the quiet phase began at load average {quiet['load'][0]:.1f}: the machine was not quiet]"
        lines.append(text)
        data[label] = entry
    return lines, data


# -- NMS and bf16 agreement (batch 1, quiet) ------------------------------------------------------------------------
def nms_agreement(a: torch.Tensor, b: torch.Tensor, cfg: NmsConfig) -> dict[str, object]:
    """How the detections of ``b`` (e.g. bf16) differ from those of ``a`` (fp32) after NMS.

    ``same``: fraction of ``a``'s detections with a partner in ``b`` of the same class and boxes within 1e-2 px
    (the fp32 re-parameterization criterion); ``iou0.5``: same class at IoU >= 0.5 (greedy by score, the usual
    detection match), with the box and score differences over those pairs.
    """
    da, db = apply_nms(a, cfg)[0], apply_nms(b, cfg)[0]
    out: dict[str, object] = {"fp32": int(len(da)), "bf16": int(len(db))}
    if not (len(da) and len(db)):
        return out
    same_cls = da[:, 5:6] == db[:, 5].unsqueeze(0)
    near = same_cls & ((da[:, None, :4] - db[None, :, :4]).abs().amax(-1) <= 1e-2)
    out["same"] = float(near.any(1).float().mean())
    iou = box_iou(da[:, :4], db[:, :4])
    iou[~same_cls] = 0.0
    pairs, taken = [], set()
    for i in range(len(da)):
        for j in iou[i].argsort(descending=True).tolist():
            if iou[i, j] < 0.5:
                break
            if j not in taken:
                taken.add(j)
                pairs.append((i, j))
                break
    out["iou0.5"] = len(pairs) / len(da)
    if pairs:
        ia, ib = (torch.tensor(v) for v in zip(*pairs))
        box = (da[ia, :4] - db[ib, :4]).abs()
        out["median_box_px"] = float(box.median())
        out["max_box_px"] = float(box.max())
        out["max_score"] = float((da[ia, 4] - db[ib, 4]).abs().max())
    return out


def fmt_agreement(a: dict[str, object]) -> str:
    text = f"{a['fp32']} vs {a['bf16']} detections"
    if "iou0.5" in a:
        text += f", {100 * float(a['same']):.0f}% the same (1e-2 px), {100 * float(a['iou0.5']):.0f}% matched"
        text += " (same class, IoU>=0.5)"
        text += f" (box diff median {a.get('median_box_px', float('nan')):.2g} px"
        text += f", max {a.get('max_box_px', float('nan')):.2g} px)"
    return text


def sparse_pair(ref: torch.Tensor, other: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both predictions with the objectness of all but ``ref``'s ``k`` most confident boxes set to 0 (what a trained
    detector gives: few confident boxes)."""
    drop = torch.ones(ref.shape[1], dtype=torch.bool)
    drop[ref[0, :, 4].topk(min(k, ref.shape[1])).indices] = False
    a, b = ref.clone(), other.clone()
    a[0, drop, 4] = 0.0
    b[0, drop, 4] = 0.0
    return a, b


def bf16_agreement(ref: torch.Tensor, low: torch.Tensor) -> dict[str, object]:
    return {
        "max_box_px": float((ref[..., :4] - low[..., :4]).abs().max()),
        "max_prob": float((ref[..., 4:] - low[..., 4:]).abs().max()),
        "nms_detect": nms_agreement(ref, low, NmsConfig()),
        "nms_eval": nms_agreement(ref, low, NmsConfig(conf=0.001, iou=0.65, multi_label=True)),
        "nms_detect_top100": nms_agreement(*sparse_pair(ref, low, 100), NmsConfig()),
    }


def fmt_bf16(acc: dict[str, Any]) -> str:
    return (
        f"max box diff {acc['max_box_px']:.3g} px, max prob diff {acc['max_prob']:.3g}; NMS detect: "
        f"{fmt_agreement(acc['nms_detect'])}; NMS eval: {fmt_agreement(acc['nms_eval'])}; NMS detect on the "
        f"top-100 boxes: {fmt_agreement(acc['nms_detect_top100'])}"
    )


def nms_candidates(pred: torch.Tensor, cfg: NmsConfig) -> int:
    """Rows that enter ``torchvision.ops.nms`` (before ``max_nms``): the quantity NMS time depends on."""
    x = pred[0][pred[0][:, 4] > cfg.conf]
    scores = x[:, 5:] * x[:, 4:5] if pred.shape[2] > 6 else x[:, 4:5]
    n = int((scores > cfg.conf).sum()) if cfg.multi_label else int((scores.max(1).values > cfg.conf).sum())
    return min(n, cfg.max_nms)


def nms_timings(pred: torch.Tensor, repeats: int) -> list[dict[str, Any]]:
    """Official NMS at detect and test settings on the untrained output and on its top-k objectness boxes (k = 100,
    1000; untrained weights give far more candidates than a trained detector)."""
    rows = []
    inputs = [("all", pred)] + [(f"top{k}", sparse_pair(pred, pred, k)[0]) for k in (100, 1000)]
    for cfg in (NmsConfig(), NmsConfig(conf=0.001, iou=0.65, multi_label=True)):
        for label, p in inputs:
            t = timed(lambda cfg=cfg, p=p: apply_nms(p, cfg), repeats)
            rows.append(
                {
                    "boxes": label,
                    "conf": cfg.conf,
                    "iou": cfg.iou,
                    "multi_label": cfg.multi_label,
                    "candidates": nms_candidates(p, cfg),
                    "detections": int(len(apply_nms(p, cfg)[0])),
                    **t,
                }
            )
    return rows


def conformance_bf16() -> dict[str, object] | None:
    """bf16 vs fp32 on the conformance file's yolov7-tiny weights and real (horses) input, when present."""
    path = ROOT.parent / "shared" / "yolov7" / "conformance" / "tiny_forward_kaiming.npz"
    if not path.is_file() or not cpu_has_native_bf16():
        return None
    from core.conformance.forward import load_reference_weights

    data = np.load(path)
    model = build_model("yolov7-tiny", 80)
    model.load_state_dict(load_reference_weights(data))
    deploy = convert_for_deploy(model.eval(), check=False).model.to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.array(data["input"])).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = deploy(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            raw = deploy.forward_levels(x, aux=False)
        low = deploy.head.decode([r.float() for r in raw])
    return {"input": "conformance horses 320x320, yolov7-tiny kaiming weights", **bf16_agreement(ref, low)}


# -- main --------------------------------------------------------------------------------------------------------------
def bench(w: Workload, models: Models, args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, Any]:
    """Both phases of one workload; prints a table per phase and returns all numbers."""
    cpu = cpu_description()
    res: dict[str, Any] = {
        "model": w.model,
        "size": w.size,
        "batch": w.batch,
        "gflops": w.gflops,
        "cpu": cpu,
        "threads": args.threads,
        "peaks_gflops": peaks,
        "notes": w.notes,
        "reparam_check": models.reparam_check,
        **w.info,
        "phases": {},
    }
    calls = {name: p.call for name, p in w.paths.items()}
    with torch.inference_mode():
        for call in calls.values():
            for _ in range(args.warmup):
                call()
    for phase in args.phases:
        load_ctx = training_load(args.threads) if phase == "load" else contextlib.nullcontext()
        with load_ctx:
            before = os.getloadavg()[0]
            times = run_phase(calls, args.rounds, args.iters)
            after = os.getloadavg()[0]
        rows = summarize(w, times, peaks)
        res["phases"][phase] = {"load": [before, after], "paths": rows}
        label = "quiet" if phase == "quiet" else "with a training job on the same cores"
        print(phase_table(f"{w.model} {w.size} px batch {w.batch}, {label}", rows, (before, after)), flush=True)
    if w.batch == 1 and "bf16" in w.paths:
        with torch.inference_mode():
            ref, low = models.deploy(probe_image(w.size)), w.paths["bf16"].call()
            res["bf16_accuracy"] = bf16_agreement(ref, low)  # type: ignore[arg-type]
        print(f"  bf16 vs fp32: {fmt_bf16(res['bf16_accuracy'])}")
    if w.batch == 1 and args.nms:
        with torch.inference_mode():
            res["nms"] = nms_timings(models.deploy(probe_image(w.size)), args.iters * args.rounds)
        for r in res["nms"]:
            kind = "multi-label" if r["multi_label"] else "best class"
            print(
                f"  NMS ({r['boxes']}) conf={r['conf']} iou={r['iou']} {kind}: median {r['median_ms']:.2f} ms, "
                f"min {r['min_ms']:.2f} ms ({r['candidates']} candidates -> {r['detections']} detections)"
            )
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["yolov7-tiny", "yolov7"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), metavar="PATH",
                    help=f"paths to measure: {', '.join(DEFAULT_PATHS + EXTRA_PATHS)} or 'all' (default: "
                    f"{' '.join(DEFAULT_PATHS)})")  # fmt: skip
    ap.add_argument("--phases", nargs="+", choices=["quiet", "load"], default=["quiet", "load"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per phase")
    ap.add_argument("--iters", type=int, default=4, help="timed calls per path and round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per path before the first phase")
    ap.add_argument("--calib", type=int, default=8, help="generated calibration images for the int8 model")
    ap.add_argument(
        "--official", type=Path, default=None, help="a checkout of WongKinYiu/yolov7 (imported, not copied)"
    )
    ap.add_argument("--nms", action="store_true", help="also time the official NMS (batch 1, quiet)")
    ap.add_argument("--cache", type=Path, default=None, help="keep the exported graphs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers to this file")
    args = ap.parse_args(argv)
    args.paths = list(DEFAULT_PATHS + EXTRA_PATHS) if "all" in args.paths else args.paths
    unknown = [p for p in args.paths if p not in DEFAULT_PATHS + EXTRA_PATHS]
    if unknown:
        ap.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_PATHS + EXTRA_PATHS)}")
    if args.official is not None and not args.official.is_dir():
        ap.error(f"--official {args.official}: no such directory")
    if min(args.sizes) < 32 or any(s % 32 for s in args.sizes) or min(args.batches) < 1 or args.threads < 1:
        ap.error("sizes must be multiples of 32, batches and threads at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore", message="torch.meshgrid")  # raised by the official model's grid, every call
    t_start = time.monotonic()
    cpu = cpu_description()
    peaks = measure_peaks()
    print(f"{cpu}; {args.threads} threads")
    print(f"peak matmul: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s (3072x3072, best of 6)")
    print(f"load average at start: {os.getloadavg()[0]:.1f}; paths: {' '.join(args.paths)}; phases: "
          f"{' '.join(args.phases)}; {args.rounds} rounds x {args.iters} timed calls")  # fmt: skip
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        for name in args.models:
            models = Models(name, args, cache)
            for size in args.sizes:
                for batch in args.batches:
                    t0 = time.monotonic()
                    w = build_workload(models, size, batch, args.paths, args.threads)
                    print(f"\n{name} {size} px batch {batch}: {w.gflops * batch:.1f} GFLOPs (deploy form)", flush=True)
                    for note in w.notes:
                        print(f"  {note}")
                    results.append(bench(w, models, args, peaks))
                    results[-1]["seconds"] = time.monotonic() - t0
    again = measure_peaks()  # a busy neighbour during the first measurement would understate the limit
    if any(again[k] > peaks[k] * 1.05 for k in peaks):
        print(f"\nnote: peaks measured again at the end: fp32 {again['fp32']:.0f}, bf16 {again['bf16']:.0f} GFLOP/s "
              "(the limits use the first measurement)")  # fmt: skip
    conf = conformance_bf16() if "bf16" in args.paths else None
    if conf:
        print(f"bf16 vs fp32 on {conf['input']}: {fmt_bf16(conf)}")
    print(f"\n{cpu}; {args.threads} threads; peak fp32 {peaks['fp32']:.0f} GFLOP/s")
    for phase in args.phases:
        print("\n" + final_table(results, phase))
    goal_lines, goal_data = goals(results)
    print("\n" + "\n".join(goal_lines))
    total = time.monotonic() - t_start
    print(f"\ntotal {total:.0f} s")
    if args.json:
        payload = {
            "cpu": cpu,
            "threads": args.threads,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "peaks_gflops": peaks,
            "peaks_gflops_end": again,
            "results": results,
            "goals": goal_data,
            "bf16_conformance": conf,
            "seconds": total,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
