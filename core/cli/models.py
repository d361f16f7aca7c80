"""``yolov7-studio models``: the model zoo as a table (or JSON), counted the way the paper counts."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list every YOLOv7 variant with parameters, GFLOPs, layers, strides and head",
        description="Parameters and GFLOPs of the training form and of the deploy form after fusion "
        "(2 x (MACs + bias) per conv, the paper's convention), at the native size (640 for P5, 1280 for P6).",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--img", type=int, default=None, help="image size for GFLOPs (default: native size)")
    p.add_argument("--classes", type=int, default=80, help="number of classes (default 80, as in the paper)")
    p.add_argument(
        "--compound",
        action="store_true",
        help="also show compound-scaled variants derived from yolov7 and yolov7-e6 (depth 1.5, width 1.25)",
    )
    p.set_defaults(func=run)


def _rows(args: argparse.Namespace) -> list[dict]:
    from core.models import compound_scale, get_spec, list_models
    from core.models.profile import profile

    specs = [get_spec(n) for n in list_models()]
    if args.compound:
        specs += [compound_scale(get_spec("yolov7")), compound_scale(get_spec("yolov7-e6"))]
    return [profile(s, args.classes, args.img).to_dict() for s in specs]


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of :class:`core.models.profile.ModelProfile` dicts."""
    header = [
        "model",
        "img",
        "params train",
        "GFLOPs train",
        "params deploy",
        "GFLOPs deploy",
        "paper",
        "layers",
        "strides",
        "head",
        "act",
    ]
    lines = []
    for r in rows:
        paper = f"{r['paper_params_m']}M/{r['paper_gflops']}G" if r["paper_gflops"] else "-"
        if r["derived_from"]:
            paper = f"(from {r['derived_from']})"
        lines.append(
            [
                r["name"],
                str(r["img_size"]),
                f"{r['params_train']:,}",
                f"{r['gflops_train']:.2f}",
                f"{r['params_deploy']:,}",
                f"{r['gflops_deploy']:.2f}",
                paper,
                f"{r['layers_train']}/{r['layers_deploy']}",
                "/".join(map(str, r["strides"])),
                f"{r['head_train']}->{r['head_deploy']}",
                r["activation"],
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{'<' if i in (0, 6, 9, 10) else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    out.append("")
    out.append(
        "params/GFLOPs deploy = re-parameterized deploy form (RepConv and BN fused, implicit folded, no aux "
        "head): the paper's convention. The paper's D6 row matches the training form."
    )
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    rows = _rows(args)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    return 0
