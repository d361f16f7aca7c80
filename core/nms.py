"""Non-maximum suppression with the official YOLOv7 semantics, on ``torchvision.ops``.

Input: decoded predictions ``[B, N, 5 + nc]`` (xywh in pixels, objectness, class probabilities).
Output per image: ``[n, 6]`` rows ``(x1, y1, x2, y2, score, class)`` sorted by descending score, or the
torchvision-style dicts of :func:`to_dicts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_convert, nms

MAX_WH = 4096  # official class offset for batched NMS


@dataclass(frozen=True)
class NmsConfig:
    """Official defaults are detect.py's (conf 0.25, IoU 0.45); test.py uses conf 0.001, IoU 0.65, multi-label."""

    conf: float = 0.25
    iou: float = 0.45
    classes: tuple[int, ...] | None = None
    agnostic: bool = False
    multi_label: bool = False
    max_det: int = 300
    max_nms: int = 30000


EVAL_NMS = NmsConfig(conf=0.001, iou=0.65, multi_label=True)


def non_max_suppression(
    prediction: torch.Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | tuple[int, ...] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = 30000,
) -> list[torch.Tensor]:
    """Per image ``[n, 6]`` = (x1, y1, x2, y2, score, class) after NMS.

    Candidates need objectness > ``conf_thres``; score = obj * cls (obj alone when nc == 1). ``multi_label``
    keeps every (box, class) pair above the threshold, otherwise the best class only. Boxes are offset by
    class * 4096 so that one ``torchvision.ops.nms`` call handles all classes (``agnostic`` disables it).
    """
    nc = prediction.shape[2] - 5
    out: list[torch.Tensor] = []
    for x in prediction:
        x = x[x[:, 4] > conf_thres]
        if not x.shape[0]:
            out.append(torch.zeros((0, 6), device=prediction.device, dtype=prediction.dtype))
            continue
        if nc == 1:
            scores_all = x[:, 4:5].clone()
        else:
            scores_all = x[:, 5:] * x[:, 4:5]
        box = box_convert(x[:, :4], "cxcywh", "xyxy")
        if multi_label:
            i, j = (scores_all > conf_thres).nonzero(as_tuple=False).T
            det = torch.cat((box[i], scores_all[i, j, None], j[:, None].to(x.dtype)), 1)
        else:
            conf, j = scores_all.max(1, keepdim=True)
            det = torch.cat((box, conf, j.to(x.dtype)), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            det = det[(det[:, 5:6] == torch.tensor(classes, device=det.device, dtype=det.dtype)).any(1)]
        if not det.shape[0]:
            out.append(det)
            continue
        if det.shape[0] > max_nms:
            det = det[det[:, 4].argsort(descending=True)[:max_nms]]
        offset = det[:, 5:6] * (0 if agnostic else MAX_WH)
        keep = nms(det[:, :4] + offset, det[:, 4], iou_thres)[:max_det]
        out.append(det[keep])
    return out


def apply_nms(prediction: torch.Tensor, cfg: NmsConfig = NmsConfig()) -> list[torch.Tensor]:
    """:func:`non_max_suppression` with a :class:`NmsConfig`."""
    return non_max_suppression(
        prediction, cfg.conf, cfg.iou, cfg.classes, cfg.agnostic, cfg.multi_label, cfg.max_det, cfg.max_nms
    )


def to_dicts(dets: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """torchvision-style ``[{'boxes': [n,4] xyxy, 'scores': [n], 'labels': [n] int64}]``."""
    return [{"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long()} for d in dets]
