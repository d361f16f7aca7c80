"""The assignment study's table: per condition mean and spread over seeds, the paper's numbers beside them.

Values in study.json and table.csv are fractions (as pycocotools gives them); table.md shows percent with one
decimal, ``mean ± sample std`` (``-`` for the spread of a single seed, and for an undefined value, e.g. APs on a
dataset without small objects, which pycocotools reports as -1).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from core.study.paper import PAPER_ASSIGNMENT, PAPER_NOTES
from core.study.store import METRIC_KEYS


def _clean(v: Any) -> float | None:
    """A metric as a float, or None where pycocotools could not define it (-1) or it is missing/NaN."""
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) or f < 0 else f


def summarize(runs: list[dict[str, Any]], conditions: list[str]) -> list[dict[str, Any]]:
    """``summary`` rows: per condition ``n`` (runs with metrics) and ``<key>_mean`` / ``<key>_std`` for every
    metric (sample standard deviation, ``None`` for fewer than two values)."""
    out = []
    for cond in conditions:
        done = [r["metrics"] for r in runs if r["condition"] == cond and r.get("metrics")]
        row: dict[str, Any] = {"condition": cond, "n": len(done)}
        for key in METRIC_KEYS:
            vals = [v for v in (_clean(m.get(key)) for m in done) if v is not None]
            mean = sum(vals) / len(vals) if vals else None
            std = (
                math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                if len(vals) > 1 and mean is not None
                else None
            )
            row[f"{key}_mean"], row[f"{key}_std"] = mean, std
        out.append(row)
    return out


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * mean:.1f}"


def markdown_table(summary: list[dict[str, Any]], settings: dict[str, Any], notes: list[str] | None = None) -> str:
    """The paper-style markdown table (printed by the command and written to table.md)."""
    seeds = settings.get("seeds") or []
    lines = [
        f"Assignment study: {settings.get('model')} (width {settings.get('width')}), {settings.get('epochs')} epochs "
        f"at {settings.get('img')} px, batch {settings.get('batch')}, recipe {settings.get('recipe')}, "
        f"aux wiring {settings.get('aux_wiring')}, seeds {seeds}; data {settings.get('data')}",
        "",
        f"AP in % on the '{settings.get('split', 'test')}' split (pycocotools), mean ± sample std over seeds. "
        "Paper: AP^val in % of the same condition (YOLOv7-E6 on COCO at 1280 px; see the source column).",
        "",
        "| condition | n | AP | AP50 | AP75 | APs | APm | APl | paper AP | paper AP50 | paper AP75 | paper source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        cells = [_pct(row.get(f"{k}_mean"), row.get(f"{k}_std")) for k in METRIC_KEYS]
        p = PAPER_ASSIGNMENT.get(row["condition"])
        paper = (
            [f"{100 * p.AP:.1f}", f"{100 * p.AP50:.1f}", f"{100 * p.AP75:.1f}", f"{p.table}: {p.row}"]
            if p
            else (["-", "-", "-", "paper numbers not available here"])
        )
        lines.append(f"| {row['condition']} | {row['n']} | " + " | ".join(cells + paper) + " |")
    lines += ["", *[f"- {n}" for n in (*(notes or []), *PAPER_NOTES)]]
    return "\n".join(lines) + "\n"


def csv_table(summary: list[dict[str, Any]]) -> str:
    """table.csv: one row per condition, fractions, with the paper's numbers (empty where none)."""
    buf = io.StringIO()
    fields = ["condition", "n"] + [f"{k}_{s}" for k in METRIC_KEYS for s in ("mean", "std")]
    fields += ["paper_AP", "paper_AP50", "paper_AP75", "paper_source"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in summary:
        p = PAPER_ASSIGNMENT.get(row["condition"])
        out = {k: ("" if row.get(k) is None else row[k]) for k in fields if k in row}
        out.update({"paper_AP": p.AP, "paper_AP50": p.AP50, "paper_AP75": p.AP75, "paper_source": p.source} if p
                   else {"paper_source": "paper numbers not available here"})  # fmt: skip
        w.writerow(out)
    return buf.getvalue()
