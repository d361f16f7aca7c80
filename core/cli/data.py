"""``yolov7-studio data {check,convert,preview,demo}``: dataset validation, conversion, augmentation preview, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "data",
        help="check, convert and preview detection datasets (COCO, YOLO, Pascal VOC); make the demo dataset",
        description="Datasets: validation report with statistics and figures, format conversion, a grid of augmented "
        "training samples, and the built-in demo dataset.",
    )
    cmds = parser.add_subparsers(dest="data_command", metavar="ACTION")
    cmds.required = True

    check = cmds.add_parser("check", help="report every problem of a dataset, what will be used, and statistics")
    _add_source(check)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--out", type=Path, help="folder for report.json/report.txt, figures (HTML + PNG), split file")
    check.add_argument("--img-size", type=int, help="training size for the anchor fit (default: each model's own)")
    check.add_argument("--min-box-size", type=float, default=1.0, help="boxes under this many pixels are degenerate")
    check.add_argument("--no-decode", action="store_true", help="skip decoding every image (faster, finds less)")
    check.add_argument("--no-png", action="store_true", help="write the HTML figures only (no Chromium needed)")
    check.set_defaults(func=_run_check)

    convert = cmds.add_parser("convert", help="convert between coco, yolo and voc (the cleaned dataset is written)")
    _add_source(convert)
    convert.add_argument("--to", required=True, choices=("coco", "yolo", "voc"), help="output format")
    convert.add_argument("out", type=Path, help="output folder (new or empty)")
    convert.add_argument("--no-decode", action="store_true", help="skip decoding every image while checking")
    convert.set_defaults(func=_run_convert)

    preview = cmds.add_parser("preview", help="write a PNG grid of augmented training samples with their boxes")
    _add_source(preview)
    preview.add_argument("--out", type=Path, required=True, help="PNG file to write")
    preview.add_argument("--split", default="train", help="split to sample from (default train; 'all' for every image)")
    preview.add_argument("-n", "--num", type=int, default=16, help="number of samples (default 16)")
    preview.add_argument("--img-size", type=int, default=320, help="network input size (default 320)")
    preview.add_argument("--hyp", default="p5", help="hyperparameters: p5, p6, tiny, custom or a YAML file")
    preview.add_argument("--seed", type=int, default=0, help="random seed of the augmentations")
    preview.add_argument("--no-augment", action="store_true", help="show validation letterboxing instead")
    preview.set_defaults(func=_run_preview)

    demo = cmds.add_parser("demo", help="generate the built-in demo dataset (YOLO format)")
    demo.add_argument("--out", type=Path, default=Path("datasets/demo"), help="output folder (default datasets/demo)")
    demo.add_argument("--n-images", type=int, default=300, help="number of images")
    demo.add_argument("--img-size", type=int, default=320, help="image size in pixels")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(func=_run_demo)


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="dataset folder, data.yaml, COCO .json, box .csv, or .zip of one")
    p.add_argument(
        "--format",
        choices=("coco", "yolo", "voc", "csv"),
        help="skip format detection (csv: one row per box, columns filename, width, height, class, xmin, ymin, "
        "xmax, ymax)",
    )


def _load(args: argparse.Namespace):  # noqa: ANN202 - returns DetectionDataset or None
    from core.data.load import load_dataset
    from core.data.safezip import UnsafeArchiveError

    try:
        return load_dataset(args.path, format=args.format)
    except (FileNotFoundError, ValueError, UnsafeArchiveError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _run_check(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from core.data.check import check_dataset
    from core.data.figures import save_figures
    from core.data.load import write_split_file
    from core.data.report import report_to_dict, report_to_text

    dataset = _load(args)
    if dataset is None:
        return 2
    report = check_dataset(
        dataset, decode=not args.no_decode, min_box_size=args.min_box_size, img_size=args.img_size, progress=True
    )
    notes = []
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        written, note = save_figures(report.stats, args.out, png=not args.no_png)
        if note:
            notes.append(note)
        if report.dataset.split_info.source == "seeded":
            written.append(write_split_file(report.dataset, args.out / "split.json"))
        report = replace(report, figures=tuple(str(p) for p in written))
        (args.out / "report.json").write_text(json.dumps(report_to_dict(report), indent=1))
        (args.out / "report.txt").write_text(report_to_text(report) + "\n")
    if args.json:
        print(json.dumps(report_to_dict(report), indent=1))
    else:
        print(report_to_text(report))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0 if report.used_images else 1


def _run_convert(args: argparse.Namespace) -> int:
    from core.data.check import check_dataset
    from core.data.convert import write_dataset

    dataset = _load(args)
    if dataset is None:
        return 2
    report = check_dataset(dataset, decode=not args.no_decode)
    try:
        written = write_dataset(report.dataset, args.to, args.out)
    except (FileExistsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.used_images} images and {report.used_boxes} boxes as {args.to.upper()} to {written}; "
        f"left out {report.left_out_images} images and {report.left_out_boxes} boxes, "
        f"clipped {report.clipped_boxes} boxes (run 'data check' for the details)"
    )
    return 0


def _run_preview(args: argparse.Namespace) -> int:
    from core.data.check import check_dataset
    from core.data.hyp import get_hyp
    from core.data.preview import render_preview

    dataset = _load(args)
    if dataset is None:
        return 2
    try:
        hyp = get_hyp(args.hyp)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    clean = check_dataset(dataset, decode=False).dataset
    records = clean.split(args.split)
    if not records:
        print(f"error: split {args.split!r} has no images (splits: {clean.split_counts()})", file=sys.stderr)
        return 2
    out, counts = render_preview(
        records, clean.class_names, args.out, n=args.num, img_size=args.img_size, hyp=hyp, seed=args.seed,
        augment=not args.no_augment,
    )  # fmt: skip
    print(
        f"wrote {out}: {min(args.num, len(records))} samples; labels in {counts.input}, kept {counts.kept}, "
        f"cropped away {counts.cropped}, filtered {counts.filtered} ({counts.lost_share:.1%} lost)"
    )
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from core.data.demo import make_demo_dataset

    data_yaml = make_demo_dataset(args.out, n_images=args.n_images, img_size=args.img_size, seed=args.seed)
    print(f"wrote the demo dataset ({args.n_images} images, {args.img_size} px): {data_yaml}")
    return 0
