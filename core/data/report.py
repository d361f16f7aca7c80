"""Text and JSON renderings of a ``CheckReport`` (what ``yolov7-studio data check`` prints)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from core.data.check import ISSUE_KINDS, CheckReport
from core.data.stats import DatasetStats
from core.data.types import Issue

_ACTION_ORDER = ("dropped", "clipped", "kept", "ignored")


def report_to_dict(report: CheckReport, max_issues: int | None = None) -> dict[str, object]:
    """JSON-ready dict: summary (used / left out), issue counts, issues (optionally capped), statistics."""
    ds = report.dataset
    issues = report.issues if max_issues is None else report.issues[:max_issues]
    return {
        "source": str(ds.source or ds.root),
        "root": str(ds.root),
        "format": ds.format,
        "classes": list(ds.class_names),
        "splits": {"source": ds.split_info.source, "description": ds.split_info.describe(), **ds.split_counts()},
        "summary": {
            "input_images": report.input_images,
            "input_boxes": report.input_boxes,
            "used_images": report.used_images,
            "used_boxes": report.used_boxes,
            "left_out_images": report.left_out_images,
            "left_out_boxes": report.left_out_boxes,
            "clipped_boxes": report.clipped_boxes,
            "defective_boxes": len(report.defective_boxes),
        },
        "issue_counts": report.counts_by_kind(),
        "issues": [i.to_dict() for i in issues],
        "issues_total": len(report.issues),
        "stats": report.stats.to_dict(),
        "figures": list(report.figures),
    }


def _issue_line(issue: Issue, shown: Callable[[str], str] = str) -> str:
    count = f" (x{issue.count})" if issue.count != 1 else ""
    return f"    {shown(issue.file)}: {issue.message} -> {issue.action}{count}"


def zip_names(report: CheckReport) -> Callable[[str], str]:
    """Path -> how to show it: ``data.zip:images/a.jpg`` for a file extracted from an archive (the user knows the
    names inside the zip, not the extraction cache), else the path as is."""
    ds = report.dataset
    source = Path(str(ds.source or ""))
    if source.suffix.lower() != ".zip":
        return str
    base = next((p for p in (ds.root, *ds.root.parents) if (p / ".yolov7-studio-extracted").exists()), None)
    if base is None:
        return str

    def shown(path: str) -> str:
        try:
            return f"{source.name}:{Path(path).relative_to(base).as_posix()}"
        except ValueError:
            return path

    return shown


def report_to_text(report: CheckReport, max_per_kind: int = 10) -> str:
    """Human-readable report: summary, problems by kind (file and reason), statistics, anchor fit."""
    ds, st = report.dataset, report.stats
    shown = zip_names(report)
    lines = [
        f"Dataset {ds.source or ds.root} ({ds.format.upper()}), {ds.num_classes} classes: "
        + (", ".join(ds.class_names) if ds.class_names else "none (no labelled box)"),
        f"Splits: {ds.split_info.describe()}: " + ", ".join(f"{s} {n}" for s, n in ds.split_counts().items()),
        "",
        f"Will be used: {report.used_images} images, {report.used_boxes} boxes "
        f"({report.clipped_boxes} of them clipped to the image)",
        f"Left out: {report.left_out_images} images, {report.left_out_boxes} boxes "
        f"(of {report.input_images} images and {report.input_boxes} boxes read)",
        f"Defective boxes (dropped or clipped): {len(report.defective_boxes)}",
    ]
    for issue in report.issues:  # the one problem that makes everything else moot comes first
        if issue.kind in ("no_labels_found", "empty_dataset"):
            lines[1:1] = ["", f"WARNING: {issue.message}", ""]
    if not report.used_images and not any(i.kind == "empty_dataset" for i in report.issues):
        lines[1:1] = ["", f"WARNING: no image can be used ({report.left_out_images} left out: see Problems)", ""]
    by_kind: dict[str, list[Issue]] = defaultdict(list)
    for issue in report.issues:
        by_kind[issue.kind].append(issue)
    lines.append("")
    if not by_kind:
        lines.append("Problems: none found")
    else:
        lines.append("Problems:")
        for kind, items in sorted(by_kind.items(), key=lambda kv: (_severity(kv[1]), kv[0])):
            total = sum(i.count for i in items)
            lines.append(f"  {kind}: {total} - {ISSUE_KINDS.get(kind, '')}")
            lines.extend(_issue_line(i, shown) for i in items[:max_per_kind])
            if len(items) > max_per_kind:
                lines.append(f"    ... {len(items) - max_per_kind} more (see --json)")
    lines += ["", "Statistics:", f"  images: {st.num_images}, boxes: {st.num_boxes}"]
    lines.append("  boxes per class: " + ", ".join(f"{n} {c}" for n, c in st.boxes_per_class.items()))
    for split, counts in st.boxes_per_class_split.items():
        lines.append(f"    {split}: " + ", ".join(f"{n} {c}" for n, c in counts.items()))
    bpi = st.boxes_per_image
    if len(bpi):
        lines.append(f"  boxes per image: mean {bpi.mean():.1f}, min {bpi.min()}, max {bpi.max()}")
    sizes = list(st.image_sizes.items())
    lines.append("  image sizes: " + ", ".join(f"{s} ({n})" for s, n in sizes[:5]) + (" ..." if len(sizes) > 5 else ""))
    lines.append("  box sizes (COCO buckets): " + ", ".join(f"{k} {v}" for k, v in st.size_buckets.items()))
    pct = _percentiles_of(st)
    if pct:
        lines.append(
            "  box w x h px: median {0[0]:g}x{0[1]:g}, 5% {1[0]:g}x{1[1]:g}, 95% {2[0]:g}x{2[1]:g}".format(
                pct["p50"], pct["p5"], pct["p95"]
            )
        )
    lines += ["", "Anchor fit (official autoanchor metric, anchor_t 4; autoanchor re-fits anchors below BPR 0.98):"]
    for fit in st.anchor_fits:
        levels = ", ".join(
            f"P{k + 3}/{s}: best {b}, matchable {m}"
            for k, (s, b, m) in enumerate(zip(fit.strides, fit.best_level, fit.matchable))
        )
        flag = "" if fit.bpr >= 0.98 else "  <- below 0.98"
        head = f"  {' / '.join(fit.models)} @ {fit.train_size}: BPR {fit.bpr:.4f}"
        lines.append(f"{head}, anchors/box {fit.anchors_per_box:.2f}{flag}")
        lines.append(f"    levels (stride): {levels}")
    if report.figures:
        lines += ["", "Figures:"] + [f"  {f}" for f in report.figures]
    return "\n".join(lines)


def _percentiles_of(st: DatasetStats) -> dict[str, list[float]]:
    value = st.to_dict()["box_wh_px"]
    return value if isinstance(value, dict) else {}


def _severity(items: list[Issue]) -> int:
    action = items[0].action.split()[0] if items else "kept"
    return _ACTION_ORDER.index(action) if action in _ACTION_ORDER else len(_ACTION_ORDER)
