"""Predictor backends side by side on this CPU, quiet and with a training job on the same cores: a preset of
``benchmarks/bench_inference.py`` (yolov7-tiny deploy form, batch 1; torch NCHW and channels_last, ONNX Runtime,
OpenVINO f32 and, on CPUs with native bf16, OpenVINO bf16 for reference).

Usage::

    python benchmarks/bench_backends.py                         # yolov7-tiny deploy, 320 and 640, batch 1
    python benchmarks/bench_backends.py --sizes 320 --rounds 3 --json out.json

The paths, the interleaved rounds, the training-load subprocess and the printed tables are those of
``bench_inference.py`` (``deploy`` = torch NCHW, ``deploy+cl`` = torch NHWC, the ratio column is to ``deploy``);
``--json`` writes its format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_inference  # noqa: E402

PATHS = ["deploy", "deploy+cl", "onnxruntime", "openvino", "openvino-bf16"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="yolov7-tiny")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--no-load", action="store_true", help="quiet phase only")
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args(argv)
    forwarded = ["--models", args.model, "--sizes", *map(str, args.sizes), "--batches", "1", "--paths", *PATHS]
    forwarded += ["--threads", str(args.threads), "--rounds", str(args.rounds), "--iters", str(args.iters)]
    forwarded += ["--phases", "quiet"] if args.no_load else []
    forwarded += ["--json", args.json] if args.json else []
    return bench_inference.main(forwarded)


if __name__ == "__main__":
    raise SystemExit(main())
