"""Evaluate a model on a dataset split: predictions in original pixels, COCO metrics, curves, confusion matrix.

The reported AP numbers come from pycocotools on exactly the detection list that is exported as COCO results
JSON (so anyone can re-run pycocotools on the file and get the same numbers).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.letterbox import pad_offsets, unletterbox_boxes
from core.data.progress import ProgressArg, as_progress, wants_tqdm
from core.eval.coco_eval import CocoMetrics, evaluate_coco
from core.eval.matching import ConfusionMatrix, PRCurves, match_image, pr_curves
from core.nms import NmsConfig, apply_nms

VAL_NMS = NmsConfig(conf=0.001, iou=0.65, multi_label=True)  # the official test.py setting

# NMS IoU of the official evaluations (FACTS.md 1e): the test.py command 0.65 (the published numbers); the per-epoch
# evaluation in train.py 0.6 (it calls test() without iou_thres, so the function's default applies); the final
# COCO-only evaluation of best.pt/last.pt in train.py 0.7. We use VAL_NMS (0.65) for the per-epoch evaluation, the
# final one (metrics.json) and the `val` command alike (TrainConfig.eval_iou), so that results.csv, metrics.json
# and `val` on best.pt give the same numbers for the same weights; the official per-epoch value is an accident of a
# function default, and a run that must reproduce official per-epoch curves sets eval_iou=OFFICIAL_EPOCH_IOU.
OFFICIAL_EPOCH_IOU = 0.6
OFFICIAL_FINAL_COCO_IOU = 0.7


@dataclass
class EvalResult:
    """Everything one evaluation produced. ``coco`` holds the reported numbers."""

    coco: CocoMetrics
    curves: PRCurves
    confusion: np.ndarray
    class_names: list[str]
    detections: list[dict[str, Any]]
    num_images: int
    num_boxes: int
    speed_ms: dict[str, float] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.curves.mp

    @property
    def recall(self) -> float:
        return self.curves.mr

    def row(self) -> dict[str, float]:
        """The metric columns of ``results.csv``: precision, recall, mAP50, mAP50-95 and per class."""
        out = {"precision": self.precision, "recall": self.recall, "mAP50": self.coco.map50, "mAP50-95": self.coco.map}
        for name in self.class_names:
            out[f"AP50/{name}"] = self.coco.per_class_ap50.get(name, float("nan"))
            out[f"AP50-95/{name}"] = self.coco.per_class_ap.get(name, float("nan"))
        return out

    def summary(self) -> str:
        s = self.coco.stats
        lines = [
            f"{self.num_images} images, {self.num_boxes} boxes: P {self.precision:.3f}  R {self.recall:.3f}  "
            f"mAP50 {s['AP50']:.3f}  mAP50-95 {s['AP']:.3f}  (pycocotools)",
            f"{'class':<16}{'boxes':>7}{'P':>7}{'R':>7}{'AP50':>7}{'AP50-95':>9}",
        ]
        for c, name in enumerate(self.class_names):
            lines.append(
                f"{name:<16}{int(self.curves.n_gt[c]):>7}{self.curves.p[c]:>7.3f}{self.curves.r[c]:>7.3f}"
                f"{self.coco.per_class_ap50.get(name, float('nan')):>7.3f}"
                f"{self.coco.per_class_ap.get(name, float('nan')):>9.3f}"
            )
        return "\n".join(lines)


def to_original(det: torch.Tensor, shape: Any) -> torch.Tensor:
    """Map letterboxed ``xyxy`` back to original pixels with the loader's ``((h0, w0), ((gh, gw), (dw, dh)))``.

    The one inverse mapping the predictor uses too (:func:`core.data.letterbox.unletterbox_boxes`): the integer
    padding the pixels were shifted by, not the half pads ``(dw, dh)`` themselves.
    """
    (h0, w0), ((gh, gw), (dw, dh)) = shape
    return unletterbox_boxes(det, (gw, gh), pad_offsets(dw, dh), (h0, w0))


def coco_results(image_id: int, det: torch.Tensor) -> list[dict[str, Any]]:
    """COCO results entries (category_id = class + 1, bbox xywh) for one image's detections."""
    out = []
    for x1, y1, x2, y2, score, cls in det.tolist():
        out.append(
            {
                "image_id": image_id,
                "category_id": int(cls) + 1,
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(score, 5),
            }
        )
    return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    split: str = "val",
    *,
    img_size: int = 640,
    batch_size: int = 16,
    workers: int = 0,
    nms: NmsConfig = VAL_NMS,
    device: torch.device | str = "cpu",
    save_json: str | Path | None = None,
    fuse: bool = True,
    loader: Any = None,
    progress: ProgressArg = False,
) -> EvalResult:
    """Run ``model`` over ``dataset.split(split)`` (letterbox, rectangular batches) and compute every metric.

    ``fuse``: evaluate the re-parameterized deploy form (same outputs, faster). ``save_json``: write the
    COCO results list there. ``progress``: ``True`` shows a tqdm bar; a callable ``(fraction 0..1, message)``
    (e.g. a UI's progress bar) is called with increasing fractions, ending with 1.0. The ground truth given to
    pycocotools keeps COCO crowd regions and stated areas (``core.data.io_coco.to_coco_dict``).
    """
    from core.data.io_coco import to_coco_dict
    from core.data.loader import create_val_loader
    from core.models import Yolo, reparameterize

    device = torch.device(device)
    net = reparameterize(model) if fuse and isinstance(model, Yolo) else model
    net = net.to(device).eval()
    records = list(dataset.split(split))
    class_names = list(dataset.class_names)
    nc = len(class_names)
    stride = max(net.head.strides) if isinstance(net, Yolo) else 32
    loader = loader or create_val_loader(dataset, img_size, batch_size, workers, split=split, stride=max(stride, 32))
    detections: list[dict[str, Any]] = []
    corrects, confs, pcls = [], [], []
    confusion = ConfusionMatrix(nc)
    t_inf = t_nms = 0.0
    report = as_progress(progress)
    report(0.0, f"evaluating {len(records)} images of '{split}'")
    batches = loader
    if wants_tqdm(progress):
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"val {split}", leave=False)
    n_batches = len(loader) if hasattr(loader, "__len__") else 0
    for n_done, batch in enumerate(batches, start=1):
        if n_batches:
            report.sub(0.0, 0.9).update(n_done - 1, n_batches, "inference, batch")
        x = batch.images.to(device, non_blocking=True).float() / 255
        t0 = time.perf_counter()
        pred = net(x)
        t1 = time.perf_counter()
        dets = apply_nms(pred.float(), nms)
        t_inf += t1 - t0
        t_nms += time.perf_counter() - t1
        for j, det in enumerate(dets):
            idx = int(batch.indices[j])
            rec = records[idx]
            det = to_original(det.cpu(), batch.shapes[j])
            gt_boxes = torch.tensor(np.array(rec.boxes), dtype=torch.float32)
            gt_cls = torch.tensor(np.array(rec.classes))
            corrects.append(match_image(det, gt_boxes, gt_cls).numpy())
            confs.append(det[:, 4].numpy())
            pcls.append(det[:, 5].numpy())
            confusion.update(det, gt_boxes, gt_cls)
            detections.extend(coco_results(idx + 1, det))
    gt_all = np.concatenate([np.asarray(r.classes) for r in records]) if records else np.zeros(0)
    curves = pr_curves(
        np.concatenate(corrects) if corrects else np.zeros((0, 10), bool),
        np.concatenate(confs) if confs else np.zeros(0),
        np.concatenate(pcls) if pcls else np.zeros(0),
        gt_all, nc,
    )  # fmt: skip
    if save_json is not None:
        Path(save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(save_json).write_text(json.dumps(detections))
    report(0.9, "COCO metrics (pycocotools)")
    coco = evaluate_coco(to_coco_dict(dataset, split), detections)
    report(1.0, f"mAP50 {coco.map50:.3f}, mAP50-95 {coco.map:.3f}")
    n = max(len(records), 1)
    return EvalResult(
        coco,
        curves,
        confusion.matrix,
        class_names,
        detections,
        len(records),
        int(gt_all.size),
        {"inference": 1000 * t_inf / n, "nms": 1000 * t_nms / n},
    )
