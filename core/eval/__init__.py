"""Evaluation: COCO metrics through pycocotools (the reported numbers), plus precision/recall curves and a
confusion matrix from our own box matching (what the plots and the per-epoch P/R columns use)."""

from core.eval.coco_eval import CocoMetrics, evaluate_coco
from core.eval.evaluator import EvalResult, evaluate

__all__ = ["CocoMetrics", "EvalResult", "evaluate", "evaluate_coco"]
