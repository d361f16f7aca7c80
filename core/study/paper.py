"""The YOLOv7 paper's own ablation numbers, for reference beside a study's table.

Source: Wang, Bochkovskiy, Liao, "YOLOv7: Trainable bag-of-freebies sets new state-of-the-art for real-time object
detectors", arXiv:2207.02696v1 (6 Jul 2022), section 5.4 "Ablation study". Numbers are AP on COCO val (min-val)
in percent as printed there, copied here as fractions (0..1) to match pycocotools. Only numbers read in the paper's
text are listed; none is derived.

* Table 6 "Ablation study on proposed auxiliary head" (YOLOv7-E6, 1280 px): base / independent / lead guided /
  coarse-to-fine lead guided.
* Table 7 "Ablation study on constrained auxiliary head" (YOLOv7-E6, 1280 px): base / aux without constraint /
  aux with constraint (the upper bound on coarse objectness by the distance from the object centre).
* Table 8 "Ablation study on partial auxiliary head" (YOLOv7-E6E, 1280 px): base / aux / partial aux.
* Table 3 "Ablation study on proposed model scaling" (640 px): base (v7-X light) / width only (1.25 w) /
  depth only (2.0 d) / compound (v7-X), with #Param. and FLOPs.

Note the paper's model and scale: the assignment ablations use YOLOv7-E6 trained on all of COCO at 1280 px, so the
absolute numbers are not comparable with a small study; the ordering and the size of the gaps are what to compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PAPER = "YOLOv7 paper (arXiv:2207.02696v1)"


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table. AP values are fractions; ``params_m``/``gflops`` only for Table 3."""

    table: str
    model: str
    row: str
    AP: float
    AP50: float
    AP75: float
    params_m: float | None = None
    gflops: float | None = None

    @property
    def source(self) -> str:
        return f"{PAPER}, {self.table} ({self.model}, COCO val, {self.row!r})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": self.source}


def _r(table: str, model: str, row: str, ap: float, ap50: float, ap75: float, **kw: float) -> PaperRow:
    return PaperRow(table, model, row, round(ap / 100, 4), round(ap50 / 100, 4), round(ap75 / 100, 4), **kw)


_E6 = "YOLOv7-E6, 1280 px"
TABLE_6 = (
    _r("Table 6", _E6, "base (v7-E6)", 55.6, 73.2, 60.7),
    _r("Table 6", _E6, "independent", 55.8, 73.4, 60.9),
    _r("Table 6", _E6, "lead guided", 55.9, 73.5, 61.0),
    _r("Table 6", _E6, "coarse-to-fine lead guided", 55.9, 73.5, 61.1),
)
TABLE_7 = (
    _r("Table 7", _E6, "base (v7-E6)", 55.6, 73.2, 60.7),
    _r("Table 7", _E6, "aux without constraint", 55.9, 73.5, 61.0),
    _r("Table 7", _E6, "aux with constraint", 55.9, 73.5, 61.1),
)
TABLE_8 = (
    _r("Table 8", "YOLOv7-E6E, 1280 px", "base (v7-E6E)", 56.3, 74.0, 61.5),
    _r("Table 8", "YOLOv7-E6E, 1280 px", "aux", 56.5, 74.0, 61.6),
    _r("Table 8", "YOLOv7-E6E, 1280 px", "partial aux", 56.8, 74.4, 62.1),
)
TABLE_3 = (
    _r("Table 3", "640 px", "base (v7-X light)", 51.7, 70.1, 56.0, params_m=47.0, gflops=125.5),
    _r("Table 3", "640 px", "width only (1.25 w)", 52.4, 70.9, 57.1, params_m=73.4, gflops=195.5),
    _r("Table 3", "640 px", "depth only (2.0 d)", 52.7, 70.8, 57.3, params_m=69.3, gflops=187.6),
    _r("Table 3", "640 px", "compound (v7-X)", 52.9, 71.1, 57.5, params_m=71.3, gflops=189.9),
)

# study condition -> the paper row that matches it (the bounded strategy is Table 7's constrained aux head)
PAPER_ASSIGNMENT: dict[str, PaperRow] = {
    "none": TABLE_6[0],
    "independent": TABLE_6[1],
    "lead-guided": TABLE_6[2],
    "coarse-to-fine": TABLE_6[3],
    "coarse-to-fine-bounded": TABLE_7[2],
}
# further rows worth reading beside the study (printed under its table)
PAPER_NOTES = (
    f"{PAPER}, Table 7 (YOLOv7-E6): aux without constraint AP 55.9 / AP50 73.5 / AP75 61.0, with constraint "
    "55.9 / 73.5 / 61.1 (Table 6's coarse-to-fine row equals the constrained one).",
    f"{PAPER}, Table 8 (YOLOv7-E6E): base 56.3, aux 56.5, partial aux 56.8 AP (the --aux-wiring partial idea).",
)
# scaling study variant -> Table 3 row (the paper's depth-only row scales depth by 2.0, not 1.5)
PAPER_SCALING: dict[str, PaperRow] = {
    "base": TABLE_3[0],
    "width-only": TABLE_3[1],
    "depth-only": TABLE_3[2],
    "compound": TABLE_3[3],
}


def paper_assignment_rows(conditions: list[str]) -> list[dict[str, Any]]:
    """study.json's ``paper`` list: ``{"condition", "AP", "AP50", "AP75", "source"}`` per condition."""
    out = []
    for c in conditions:
        row = PAPER_ASSIGNMENT.get(c)
        if row is not None:
            out.append({"condition": c, "AP": row.AP, "AP50": row.AP50, "AP75": row.AP75, "source": row.source})
    return out
