"""The scaling study: width-only, depth-only and compound scaling of a base spec (paper Sec. 3.3, Table 3).

Rows: ``base``; ``width-only`` (every width times ``width``, :func:`core.models.scale_width`); ``depth-only`` (the
computational blocks' depth times ``depth``, widths unchanged: :func:`core.models.compound_scale` with width 1);
``compound`` (depth of the computational blocks times ``depth`` and the transition layers' width times ``width``:
:func:`core.models.compound_scale`). Parameters and GFLOPs are those of the fused deploy form at 640 px (the
paper's convention, :func:`core.models.profile.profile`, 80 classes).

The channel ratios are the paper's argument. In a concatenation-based block (ELAN) the transition layer (the 1x1
conv after the concatenation) reads ``2 * branch + chain * (taps - 2)`` channels and writes ``out``. Scaling only the
depth adds chain outputs to the concatenation, so the transition's input/output ratio grows (and the next block
receives a different proportion of channels than the design intended); compound scaling widens the transition
output by the same factor the concatenation grew, so the ratio stays as in the base model. Width-only scaling keeps
the ratios (up to rounding) at a higher cost.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.models.specs import Elan, ModelSpec, compound_scale, get_spec, scale_width
from core.study.paper import PAPER_SCALING
from core.study.store import VERSION, write_study
from core.train.rundir import atomic_write_text

VARIANTS = ("base", "width-only", "depth-only", "compound")


def concat_width(e: Elan) -> int:
    """Channels the transition layer of ``e`` reads: the two 1x1 branches plus the tapped chain outputs."""
    return 2 * e.branch + e.chain * (e.taps - 2)


def _blocks(spec: ModelSpec) -> list[tuple[str, Elan]]:
    named = [("backbone", spec.backbone), ("neck_td", spec.neck_td), ("neck_bu", spec.neck_bu)]
    return [(f"{part}.{i + 1}", e) for part, blocks in named for i, e in enumerate(blocks)]


def channel_ratios(spec: ModelSpec) -> dict[str, Any]:
    """Per computational block: depth, transition input width, output width and their ratio; and the ratio of
    consecutive backbone blocks' output widths."""
    blocks = {name: {"depth": e.depth, "transition_in": concat_width(e), "out": e.out,
                     "ratio": concat_width(e) / e.out} for name, e in _blocks(spec)}  # fmt: skip
    outs = [e.out for e in spec.backbone]
    consecutive = {f"backbone.{i + 1}->{i + 2}": outs[i + 1] / outs[i] for i in range(len(outs) - 1)}
    return {"blocks": blocks, "backbone_out_ratios": consecutive}


def variant_specs(base: ModelSpec, depth: float, width: float) -> dict[str, ModelSpec]:
    return {
        "base": base,
        "width-only": scale_width(base, width, name=f"{base.name}-w{width:g}"),
        "depth-only": compound_scale(base, depth=depth, width=1.0, name=f"{base.name}-d{depth:g}"),
        "compound": compound_scale(base, depth=depth, width=width),
    }


def _max_change(ratios: dict[str, Any], base: dict[str, Any]) -> float:
    """Largest relative change of a block's transition in/out ratio against the base model."""
    return max(abs(r["ratio"] / base["blocks"][k]["ratio"] - 1) for k, r in ratios["blocks"].items())


def scaling_study(
    model: str = "yolov7",
    depth: float = 1.5,
    width: float = 1.25,
    *,
    img: int = 640,
    num_classes: int = 80,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Profile the four variants and their channel ratios; write study.json + table.md to ``out`` if given.

    Returns the study dict (``kind`` "scaling"). ``ValueError`` for an unknown model or non-positive factors.
    """
    from core.models.profile import profile

    if not (depth > 0 and width > 0 and math.isfinite(depth) and math.isfinite(width)):
        raise ValueError(f"depth and width must be positive numbers, got depth {depth}, width {width}")
    try:
        base = get_spec(model)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    base_ratios = channel_ratios(base)
    rows = []
    for variant, spec in variant_specs(base, depth, width).items():
        p = profile(spec, num_classes=num_classes, img_size=img)
        ratios = channel_ratios(spec)
        rows.append({
            "variant": variant, "spec": spec.name,
            "depth": 1.0 if variant in ("base", "width-only") else depth,
            "width": 1.0 if variant in ("base", "depth-only") else width,
            "params": p.params_deploy, "gflops": p.gflops_deploy,
            # flat {block: transition in/out ratio} (what a front end lists), details beside it
            "channel_ratios": {name: round(b["ratio"], 4) for name, b in ratios["blocks"].items()},
            "max_ratio_change_vs_base": _max_change(ratios, base_ratios),
            "blocks": ratios["blocks"], "backbone_out_ratios": ratios["backbone_out_ratios"], "metrics": None,
        })  # fmt: skip
    study: dict[str, Any] = {
        "kind": "scaling", "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {"model": model, "depth": depth, "width": width, "img": img, "num_classes": num_classes,
                     "counts": f"deploy form (fused), {img} px, {num_classes} classes"},
        "rows": rows, "table": "table.md",
        "paper": [{"variant": v, **r.to_dict()} for v, r in PAPER_SCALING.items()],
    }  # fmt: skip
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "table.md", scaling_table(study))
        write_study(out, study)
    return study


def scaling_table(study: dict[str, Any]) -> str:
    """Markdown: one row per variant (params, GFLOPs, ratios), then the per-block ratios, then the paper's Table 3."""
    s = study["settings"]
    rows = study["rows"]
    lines = [
        f"Scaling study of {s['model']}: depth x{s['depth']:g}, width x{s['width']:g} "
        f"(params and GFLOPs of the {s['counts']})",
        "",
        "| variant | depth | width | params (M) | GFLOPs | max change of a transition's in/out ratio vs base |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        change = r["max_ratio_change_vs_base"]
        lines.append(f"| {r['variant']} | {r['depth']:g} | {r['width']:g} | {r['params'] / 1e6:.1f} | "
                     f"{r['gflops']:.1f} | {100 * change:.1f}% |")  # fmt: skip
    names = list(rows[0]["blocks"])
    lines += ["", "Transition layer input/output channels per computational block (the ratio the paper keeps):", "",
              "| block | " + " | ".join(r["variant"] for r in rows) + " |", "|---|" + "---|" * len(rows)]  # fmt: skip
    for b in names:
        cells = []
        for r in rows:
            x = r["blocks"][b]
            cells.append(f"{x['transition_in']}/{x['out']} = {x['ratio']:.2f} (depth {x['depth']})")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    cons = rows[0]["backbone_out_ratios"]
    lines += ["", "Output width ratio of consecutive backbone blocks:", "",
              "| blocks | " + " | ".join(r["variant"] for r in rows) + " |", "|---|" + "---|" * len(rows)]  # fmt: skip
    for k in cons:
        lines.append(f"| {k} | " + " | ".join(f"{r['backbone_out_ratios'][k]:.2f}" for r in rows)
                     + " |")  # fmt: skip
    lines += ["", "Paper, Table 3 (YOLOv7-X light as base, COCO val, 640 px; its depth-only row scales depth by 2.0):",
              "", "| variant | paper row | params (M) | GFLOPs | AP | AP50 | AP75 |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in study["paper"]:
        lines.append(f"| {p['variant']} | {p['row']} | {p['params_m']} | {p['gflops']} | {100 * p['AP']:.1f} | "
                     f"{100 * p['AP50']:.1f} | {100 * p['AP75']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
