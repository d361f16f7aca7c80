"""The paper's studies as functions: the assignment-strategy ablation and the scaling ablation.

* ``run_assignment_study(data, model, out=DIR, epochs=..., img=..., batch=..., strategies=..., seeds=...)``: one
  normal run directory per condition and seed under ``DIR/runs``, evaluated on the test split (pycocotools), with
  ``DIR/study.json``, ``table.md``, ``table.csv``, ``objectness.png`` / ``objectness.html``.
* ``scaling_study(model, depth, width, out=DIR)``: params, GFLOPs and channel ratios of width-only, depth-only and
  compound scaling.
* ``load_study(path)`` (validated study.json, ``ValueError`` naming the file otherwise) and ``list_studies(root)``
  (study folders up to two levels down): what the front ends' Compare views read.

study.json (version 1): ``{"kind": "assignment", "version", "created", "settings": {data, model, width, epochs,
img, batch, seeds, strategies, aux_wiring, recipe, split, train_overrides}, "state", "runs": [{name, condition,
seed, run_dir (relative to the study folder), status: finished|running|pending|failed, metrics: {AP, AP50, AP75,
APs, APm, APl (fractions), split, weights, source} or null, error?}], "summary": [{condition, n, AP_mean, AP_std,
...}], "paper": [{condition, AP, AP50, AP75, source}], "figure": "objectness.png", "figure_html", "table":
"table.md"}``; for ``kind`` "scaling": ``{"settings", "rows": [{variant, depth, width, params, gflops,
channel_ratios ({block: transition in/out ratio}), max_ratio_change_vs_base, blocks, backbone_out_ratios,
metrics}], "paper", "table"}``.
"""

from core.study.assignment import CONDITIONS, WIRINGS, parse_seeds, run_assignment_study
from core.study.paper import PAPER_ASSIGNMENT, PAPER_SCALING
from core.study.scaling import VARIANTS, channel_ratios, scaling_study, scaling_table
from core.study.store import list_studies, load_study

__all__ = [
    "CONDITIONS",
    "PAPER_ASSIGNMENT",
    "PAPER_SCALING",
    "VARIANTS",
    "WIRINGS",
    "channel_ratios",
    "list_studies",
    "load_study",
    "parse_seeds",
    "run_assignment_study",
    "scaling_study",
    "scaling_table",
]
