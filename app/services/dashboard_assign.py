"""The dashboard's Assignments page: :func:`app.services.assign.dataset_stats` as plain, picklable data."""

from __future__ import annotations

from typing import Any

from app.modelcache import ModelCache
from app.services import assign as A
from app.workspace import Workspace


def group_rows(stats: Any) -> list[dict[str, Any]]:
    """One row per class and per size bucket: boxes, mean fine/coarse positives per box, share without any."""
    out = []
    for kind, groups in (("all", [stats.overall]), ("class", stats.by_class), ("size", stats.by_size)):
        for g in groups:
            out.append(
                {
                    "group": kind,
                    "name": g.name,
                    "boxes": g.boxes,
                    "fine / box": g.fine_mean,
                    "fine: none %": None if g.fine_none_share is None else 100 * g.fine_none_share,
                    "coarse / box": g.coarse_mean,
                    "coarse: none %": None if g.coarse_none_share is None else 100 * g.coarse_none_share,
                    **{
                        f"fine on {lv} (share)": share
                        for lv, share in zip(stats.level_names, g.fine_level_share or [], strict=False)
                    },
                }
            )
    return out


def split_stats(
    ws: Workspace, cache: ModelCache, *, checkpoint: str, dataset: str, split: str, max_images: int
) -> dict[str, Any]:
    """``{"summary": markdown, "figures": {name: plotly figure}, "rows": group_rows, "boxes", "images"}``."""
    stats, figures = A.dataset_stats(
        ws, cache, dataset=dataset, split=split, checkpoint=checkpoint, max_images=max_images
    )
    return {
        "summary": A.stats_summary(stats),
        "figures": figures,
        "rows": group_rows(stats),
        "boxes": stats.boxes,
        "images": stats.images,
    }
