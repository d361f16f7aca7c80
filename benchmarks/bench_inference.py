"""Inference latency on this CPU: training form vs deploy form vs channels_last vs bf16 vs ONNX Runtime.

Usage::

    python benchmarks/bench_inference.py                      # yolov7-tiny and yolov7 at 320 and 640
    python benchmarks/bench_inference.py --models yolov7-tiny --sizes 640 --json out.json

Per model and size (batch 1, ``torch.set_num_threads(--threads)``, inference mode, denormals flushed), the
network forward (decode included, NMS excluded) of:

* ``train``        training form (IDetect, RepConv/BN unfused) in eval mode, NCHW fp32
* ``deploy``       fused deploy form (:func:`core.inference.convert_for_deploy`), NCHW fp32
* ``deploy+cl``    the same in channels_last (NHWC) memory layout
* ``deploy+jit``   channels_last, ``torch.jit.trace`` + ``torch.jit.freeze``
* ``bf16``         channels_last under CPU bfloat16 autocast (oneDNN AVX-512 BF16), decode in fp32
* ``bf16+jit``     the same, traced and frozen
* ``onnxruntime``  the exported deploy form (:func:`core.export.export_onnx`), all graph optimizations

Each latency is the min (and median) of ``--repeats`` timed runs after warm-up, interleaved in rounds (each
round runs every path once untimed, then twice timed), so that a busy neighbour slows all paths alike (the
machine this was written on is shared) while each path runs with warm caches, as in a detection loop.
Beside it: the physical limit, i.e. the model's FLOPs (2 x (MACs + bias), the paper's convention) divided by
this machine's measured peak matrix throughput (fp32 or bf16 matmul GFLOP/s with the same threads), and
latency / limit. NMS is timed separately
(official semantics, detect.py and test.py settings). The bf16 accuracy change is measured against fp32 on the
same input: max box / probability difference and whether NMS keeps exactly the same detections.

Weights: the well-conditioned ``kaiming`` scheme of the conformance file (:func:`core.inference.well_conditioned_`),
so activations stay in a realistic range (PyTorch's default init lets them decay to denormals, which makes
fp32 CPU convolutions many times slower). Input: a smooth probe image (:func:`core.inference.probe_image`).
Rerun to check stability.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchvision.ops import box_iou  # noqa: E402

from core.device import cpu_description, cpu_has_native_bf16  # noqa: E402
from core.inference import convert_for_deploy, probe_image, well_conditioned_  # noqa: E402
from core.models import build_model  # noqa: E402
from core.models.profile import count_gflops  # noqa: E402
from core.nms import NmsConfig, apply_nms  # noqa: E402


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


def timed_rounds(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3, per_round: int = 2
) -> dict[str, dict[str, float]]:
    """Like :func:`timed` for several paths, interleaved: each round runs every path once untimed (so that its
    weights are back in cache, as in a detection loop) and then ``per_round`` times timed. On a shared machine
    the load then falls on all paths alike; the min over rounds estimates the uncontended latency."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats // per_round)):
        for k, fn in fns.items():
            fn()
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[k].append(1000 * (time.perf_counter() - t0))
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v)} for k, v in times.items()}


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


def sparse_objectness(pred: torch.Tensor, k: int) -> torch.Tensor:
    """``pred`` with the objectness of all but the ``k`` most confident boxes set to 0."""
    out = pred.clone()
    keep = torch.zeros(pred.shape[1], dtype=torch.bool)
    keep[pred[0, :, 4].topk(min(k, pred.shape[1])).indices] = True
    out[0, ~keep, 4] = 0.0
    return out


def sparse_pair(ref: torch.Tensor, other: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both predictions with the objectness of all but ``ref``'s ``k`` most confident boxes set to 0."""
    drop = torch.ones(ref.shape[1], dtype=torch.bool)
    drop[ref[0, :, 4].topk(min(k, ref.shape[1])).indices] = False
    a, b = ref.clone(), other.clone()
    a[0, drop, 4] = 0.0
    b[0, drop, 4] = 0.0
    return a, b


def nms_candidates(pred: torch.Tensor, cfg: NmsConfig) -> int:
    """Rows that enter ``torchvision.ops.nms`` (before ``max_nms``): the quantity NMS time depends on."""
    x = pred[0][pred[0][:, 4] > cfg.conf]
    scores = x[:, 5:] * x[:, 4:5] if pred.shape[2] > 6 else x[:, 4:5]
    n = int((scores > cfg.conf).sum()) if cfg.multi_label else int((scores.max(1).values > cfg.conf).sum())
    return min(n, cfg.max_nms)


def bench_model(name: str, size: int, args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, object]:
    torch.manual_seed(0)
    train = well_conditioned_(build_model(name, 80), seed=0).eval()
    conversion = convert_for_deploy(train, img_size=320)
    deploy = conversion.model
    gflops_deploy = count_gflops(deploy, size)
    gflops_train = count_gflops(train, size, aux=False)
    x = probe_image(size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    deploy_cl = copy.deepcopy(deploy).to(memory_format=torch.channels_last)

    def decoded(model: torch.nn.Module, inp: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                raw = model.forward_levels(inp, aux=False)
        else:
            raw = model.forward_levels(inp, aux=False)
        return model.head.decode([r.float() for r in raw])

    paths: dict[str, tuple[Callable[[], object], float, str]] = {}
    paths["train"] = (lambda: train(x), gflops_train, "fp32")
    paths["deploy"] = (lambda: deploy(x), gflops_deploy, "fp32")
    paths["deploy+cl"] = (lambda: deploy_cl(x_cl), gflops_deploy, "fp32")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jit_fp32 = torch.jit.freeze(torch.jit.trace(deploy_cl, x_cl, check_trace=False))
    paths["deploy+jit"] = (lambda: jit_fp32(x_cl), gflops_deploy, "fp32")
    use_bf16 = cpu_has_native_bf16() and not args.no_bf16
    if use_bf16:
        paths["bf16"] = (lambda: decoded(deploy_cl, x_cl, bf16=True), gflops_deploy, "bf16")
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jit_bf16 = torch.jit.freeze(torch.jit.trace(deploy_cl, x_cl, check_trace=False))

        def run_jit_bf16() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return jit_bf16(x_cl)

        paths["bf16+jit"] = (run_jit_bf16, gflops_deploy, "bf16")
    if not args.no_onnx:
        from core.export import export_onnx, onnx_session

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(deploy, Path(tmp) / "m.onnx", img_size=size)
            session = onnx_session(onnx_path, threads=args.threads)
        feed = {"images": x.numpy()}
        paths["onnxruntime"] = (lambda: session.run(None, feed), gflops_deploy, "fp32")

    with torch.inference_mode():
        timings = timed_rounds({label: fn for label, (fn, _, _) in paths.items()}, args.repeats)
    rows = []
    for label, (_, gflops, precision) in paths.items():
        t = timings[label]
        limit_ms = 1000 * gflops / peaks[precision]
        rows.append(
            {
                "path": label,
                "precision": precision,
                "gflops": gflops,
                "limit_ms": limit_ms,
                "x_limit": t["min_ms"] / limit_ms,
                **t,
            }
        )
        print(
            f"  {name:12s} {size:4d} {label:12s} min {t['min_ms']:8.1f} ms  median {t['median_ms']:8.1f} ms  "
            f"limit {limit_ms:7.1f} ms ({precision}, {gflops:.1f} GFLOPs)  min/limit {t['min_ms'] / limit_ms:.2f}",
            flush=True,
        )

    with torch.inference_mode():
        pred = deploy(x)
        nms_rows = []
        # untrained weights give far more candidates than a trained detector; so NMS is also timed on the same
        # output with only the top-k objectness boxes left (k = 100, 1000), which is what trained models give
        inputs = [("all", pred)] + [(f"top{k}", sparse_objectness(pred, k)) for k in (100, 1000)]
        for cfg in (NmsConfig(), NmsConfig(conf=0.001, iou=0.65, multi_label=True)):
            for label, p in inputs:
                t = timed(lambda cfg=cfg, p=p: apply_nms(p, cfg), args.repeats)
                nms_rows.append(
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
        accuracy = None
        if use_bf16:
            ref, low = decoded(deploy_cl, x_cl), decoded(deploy_cl, x_cl, bf16=True)
            accuracy = {
                "max_box_px": float((ref[..., :4] - low[..., :4]).abs().max()),
                "max_prob": float((ref[..., 4:] - low[..., 4:]).abs().max()),
                "nms_detect": nms_agreement(ref, low, NmsConfig()),
                "nms_eval": nms_agreement(ref, low, NmsConfig(conf=0.001, iou=0.65, multi_label=True)),
                # like a trained detector: only the 100 most confident boxes (of fp32) keep their objectness
                "nms_detect_top100": nms_agreement(*sparse_pair(ref, low, 100), NmsConfig()),
            }
    check = conversion.check
    return {
        "model": name,
        "size": size,
        "reparam_check": check.to_dict() if check is not None else None,
        "paths": rows,
        "nms": nms_rows,
        "bf16_accuracy": accuracy,
    }


def conformance_bf16(args: argparse.Namespace) -> dict[str, object] | None:
    """bf16 vs fp32 on the conformance file's yolov7-tiny weights and real (horses) input, when present."""
    path = Path(__file__).resolve().parents[2] / "shared" / "yolov7" / "conformance" / "tiny_forward_kaiming.npz"
    if not path.is_file() or args.no_bf16 or not cpu_has_native_bf16():
        return None
    import numpy as np

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
    return {
        "input": "conformance horses 320x320, yolov7-tiny kaiming weights",
        "max_box_px": float((ref[..., :4] - low[..., :4]).abs().max()),
        "max_prob": float((ref[..., 4:] - low[..., 4:]).abs().max()),
        "nms_detect": nms_agreement(ref, low, NmsConfig()),
        "nms_eval": nms_agreement(ref, low, NmsConfig(conf=0.001, iou=0.65, multi_label=True)),
        "nms_detect_top100": nms_agreement(*sparse_pair(ref, low, 100), NmsConfig()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["yolov7-tiny", "yolov7"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write all numbers to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    peaks = measure_peaks()
    print(f"{cpu_description()}; {args.threads} threads")
    print(f"peak matmul: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s (3072x3072, best of 6)")
    results = []
    for name in args.models:
        for size in args.sizes:
            res = bench_model(name, size, args, peaks)
            results.append(res)
            for r in res["nms"]:  # type: ignore[union-attr]
                kind = "multi-label" if r["multi_label"] else "best class"
                print(
                    f"  {name:12s} {size:4d} NMS ({r['boxes']}) conf={r['conf']} iou={r['iou']} {kind}: median "
                    f"{r['median_ms']:.2f} ms, min {r['min_ms']:.2f} ms "
                    f"({r['candidates']} candidates -> {r['detections']} detections)"
                )
            if res["bf16_accuracy"]:
                acc = res["bf16_accuracy"]
                print(
                    f"  {name:12s} {size:4d} bf16 vs fp32: max box diff {acc['max_box_px']:.3g} px, max prob diff "
                    f"{acc['max_prob']:.3g}; NMS detect: {fmt_agreement(acc['nms_detect'])}; "
                    f"NMS eval: {fmt_agreement(acc['nms_eval'])}; NMS detect on the top-100 boxes: "
                    f"{fmt_agreement(acc['nms_detect_top100'])}"
                )
    again = measure_peaks()  # a busy neighbour during the first measurement would understate the limit
    if any(again[k] > peaks[k] * 1.05 for k in peaks):
        print(
            f"note: peaks measured again at the end: fp32 {again['fp32']:.0f}, bf16 {again['bf16']:.0f} GFLOP/s "
            "(the table's limits use the first measurement)"
        )
    conf = conformance_bf16(args)
    if conf:
        print(
            f"bf16 vs fp32 on {conf['input']}: max box diff {conf['max_box_px']:.3g} px, max prob diff "
            f"{conf['max_prob']:.3g}; NMS detect: {fmt_agreement(conf['nms_detect'])}; "
            f"NMS eval: {fmt_agreement(conf['nms_eval'])}; NMS detect on the top-100 boxes: "
            f"{fmt_agreement(conf['nms_detect_top100'])}"
        )
    print()
    print(format_table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "peaks_gflops": peaks,
                    "peaks_gflops_end": again,
                    "threads": args.threads,
                    "results": results,
                    "bf16_conformance": conf,
                },
                indent=1,
            )
        )
    return 0


def format_table(results: list[dict]) -> str:
    """Markdown latency table: one row per model/size, one column per path (min ms over rounds)."""
    paths = [p["path"] for p in results[0]["paths"]] if results else []
    head = "| model | img | " + " | ".join(f"{p} (ms)" for p in paths) + " | deploy speed-up | fastest / limit |"
    lines = [head, "|" + "---|" * (len(paths) + 4)]
    for res in results:
        by = {p["path"]: p for p in res["paths"]}
        cells = [f"{by[p]['min_ms']:.0f}" for p in paths]
        fastest = min(res["paths"], key=lambda p: p["min_ms"])
        best_deploy = min((p for p in res["paths"] if p["path"].startswith("deploy")), key=lambda p: p["min_ms"])
        speedup = by["train"]["min_ms"] / best_deploy["min_ms"]
        lines.append(
            f"| {res['model']} | {res['size']} | "
            + " | ".join(cells)
            + f" | {speedup:.2f}x ({best_deploy['path']}) | {fastest['path']} {fastest['min_ms']:.0f} ms"
            f" = {fastest['x_limit']:.2f}x of {fastest['limit_ms']:.0f} ms |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
