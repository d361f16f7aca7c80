"""FiftyOne-side steps of the bridge: evaluation per variant, label-error scores, saved views.

Every function takes a ``fiftyone`` dataset (FiftyOne is imported only when they run) and replaces what an
earlier run of the bridge stored under the same keys, so running the bridge again updates the dataset in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMS = ("training", "deploy", "onnx")  # the forms a checkpoint's predictions can come from
GT_FIELD = "ground_truth"
MISTAKENNESS = "mistakenness"  # the brain key and the field names compute_mistakenness writes
ERRORS_EVAL = "errors_eval"  # class-agnostic match (IoU 0.5) of the label-error variant: "fp" = covers no label
LIKELY_WRONG_MIN = 0.5  # a matched label whose class or box disagrees with a confident prediction
LIKELY_MISSING_CONF = 0.5  # an unmatched prediction this confident is a likely missing label


class BridgeError(ValueError):
    """Input the FiftyOne bridge cannot use; the message names the file or setting and the problem."""


@dataclass
class VariantEvaluation:
    """FiftyOne's COCO-style evaluation of one prediction field (``mAP`` = AP@[.5:.95], ``-1`` if undefined)."""

    field: str
    eval_key: str
    mAP: float
    per_class_ap: dict[str, float] = field(default_factory=dict)
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "eval_key": self.eval_key, "mAP": self.mAP, "per_class_AP": self.per_class_ap,
                "tp": self.tp, "fp": self.fp, "fn": self.fn}  # fmt: skip


def evaluate_variant(dataset: Any, pred_field: str, eval_key: str) -> VariantEvaluation:
    """``evaluate_detections`` (COCO method, IoU 0.5 for TP/FP/FN, mAP over 0.5:0.95) into ``eval_key``."""
    if dataset.has_evaluation(eval_key):
        dataset.delete_evaluation(eval_key)
    results = dataset.evaluate_detections(
        pred_field, gt_field=GT_FIELD, eval_key=eval_key, method="coco", compute_mAP=True, progress=False
    )
    per_class = {}
    for name in results.classes:
        ap = float(results.mAP(classes=[name]))
        if ap > -1:
            per_class[str(name)] = ap
    counts = {k: int(dataset.sum(f"{eval_key}_{k}") or 0) for k in ("tp", "fp", "fn")}
    return VariantEvaluation(pred_field, eval_key, float(results.mAP()), per_class, **counts)


def label_errors(dataset: Any, pred_field: str) -> None:
    """``fiftyone.brain.compute_mistakenness`` of ``ground_truth`` against ``pred_field`` (replacing an earlier run):
    ``mistakenness`` / ``mistakenness_loc`` / ``possible_spurious`` on ground-truth boxes, ``possible_missing`` on
    predictions, and per sample the maximum mistakenness and both counts; plus ``errors_eval`` (``tp``/``fp``/``fn``),
    the class-agnostic IoU-0.5 matching of ``pred_field`` to the labels that the brain uses (it deletes its own)."""
    import fiftyone.brain as fob

    if dataset.has_brain_run(MISTAKENNESS):
        dataset.delete_brain_run(MISTAKENNESS)
    if dataset.has_evaluation(MISTAKENNESS + "_eval"):
        dataset.delete_evaluation(MISTAKENNESS + "_eval")
    for f in (MISTAKENNESS, "possible_missing", "possible_spurious"):  # stale sample fields of another variant
        if dataset.has_sample_field(f):
            dataset.delete_sample_field(f)
    fob.compute_mistakenness(dataset, pred_field, label_field=GT_FIELD, progress=False)
    # the brain deletes its own class-agnostic matching afterwards; keep one for the likely-missing view
    if dataset.has_evaluation(ERRORS_EVAL):
        dataset.delete_evaluation(ERRORS_EVAL)
    dataset.evaluate_detections(
        pred_field, gt_field=GT_FIELD, eval_key=ERRORS_EVAL, classwise=False, iou=0.5, progress=False
    )


def save_views(
    dataset: Any, variants: list[tuple[str, str]], error_field: str | None, has_assignment: bool
) -> list[str]:
    """Saved views (replacing those of an earlier run): ``fp_<variant>`` / ``fn_<variant>`` per (pred field, eval
    key), ``likely_missing`` and ``likely_wrong`` (from the label-error scores of ``error_field``),
    ``no_positive`` (ground-truth boxes YOLOv7's assigner gives no positive), ``disagreement`` (images where the
    variants disagree). Returns the names saved."""
    from fiftyone import ViewField as F

    views: dict[str, Any] = {}
    for pred_field, eval_key in variants:
        short = pred_field[len("pred_") :]
        views[f"fp_{short}"] = dataset.filter_labels(pred_field, F(eval_key) == "fp").sort_by(
            f"{eval_key}_fp", reverse=True
        )
        views[f"fn_{short}"] = dataset.filter_labels(GT_FIELD, F(eval_key) == "fn").sort_by(
            f"{eval_key}_fn", reverse=True
        )
    if error_field is not None:
        views["likely_missing"] = dataset.filter_labels(
            error_field, (F(ERRORS_EVAL) == "fp") & (F("confidence") >= LIKELY_MISSING_CONF)
        )
        views["likely_wrong"] = dataset.filter_labels(
            GT_FIELD, (F(MISTAKENNESS) >= LIKELY_WRONG_MIN) | (F(MISTAKENNESS + "_loc") >= LIKELY_WRONG_MIN)
        ).sort_by(MISTAKENNESS, reverse=True)
    if has_assignment:
        views["no_positive"] = dataset.filter_labels(GT_FIELD, F("no_positive") == True)  # noqa: E712
    if dataset.has_sample_field("variant_disagreement"):
        views["disagreement"] = dataset.match(F("variant_disagreement") > 0).sort_by(
            "variant_disagreement", reverse=True
        )
    for name, view in views.items():
        dataset.save_view(name, view, overwrite=True)
    return list(views)
