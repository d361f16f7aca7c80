"""One image through the model and the assigner: lead and aux objectness maps, and the lead-guided assignment.

``explore_image(model, image, boxes, classes)`` letterboxes the image to a square input (the assigner assumes
square inputs, as the official loss does), runs the model once in eval mode (BN uses its running statistics) with
the auxiliary branch on, and returns an :class:`ImageExploration`. The caller's model is never switched between
train and eval mode: the forward runs on :func:`eval_view`, a per-call copy of the module tree that shares every
parameter and buffer, so several threads can explore with one model (also while it serves predictions):

* per level: the lead and aux objectness maps ``sigmoid(t_obj)`` ``[na, H, W]``, and per class of interest the
  class-conditional maps ``sigmoid(t_obj) * sigmoid(t_cls)`` ``[na, H, W]`` (objectness alone when ``nc == 1``,
  as the official scoring, because a one-class model is never trained on its class logit);
* the :class:`core.assign.AssignmentView` of :func:`core.assign.explain_assignment` (candidates, fine (lead) and
  coarse (aux) positives, IoU, cost, dynamic k, unmatched boxes), computed from the LEAD predictions only, as in
  training; this is the single source of every number the figures draw;
* the mapping between original and input pixels.

Edge cases
* A model WITHOUT an auxiliary head: the lead maps are returned and ``aux_obj``/``aux_cls`` are ``None``; both
  label sets are still computed by default (the coarse set is what an aux head would be trained on, with the
  ``ComputeLossAuxOTA`` settings, top-k 20). Such a model's own training used the fine set with top-k 10: pass
  ``coarse=False, topk=10`` to see exactly that. ``notes`` says so.
* An image without boxes: maps only, ``view`` is ``None``.

Box formats: ``boxes`` are pixel ``xyxy`` in ORIGINAL image coordinates; ``boxes_input`` the same boxes in input
(letterboxed) pixels; the view's cells are ``(level, anchor, gj, gi)`` with cell ``x0 = gi * stride``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.assign import AssignmentView, explain_assignment
from core.data.letterbox import unletterbox_boxes
from core.explore.stats import input_targets, size_bucket
from core.inference.eval_view import eval_view
from core.inference.letterbox import letterbox
from core.inference.sources import ImageReadError, check_array, pil_to_array, read_image

__all__ = ["PixelMapping", "LevelMaps", "ImageExploration", "explore_image", "prepare_boxes"]


@dataclass(frozen=True)
class PixelMapping:
    """Original image pixels <-> square network-input pixels (official letterbox: scale, then integer padding).

    ``original_size`` is ``(w, h)``; ``input_size`` the square side; ``ratio`` the ``(rw, rh)`` scale factors;
    ``pad`` the ``(left, top)`` padding in input pixels. A point maps as ``x_in = x * rw + left``.
    """

    original_size: tuple[int, int]
    input_size: int
    ratio: tuple[float, float]
    pad: tuple[int, int]

    def to_input(self, xyxy: np.ndarray) -> np.ndarray:
        """``[N, 4]`` original-pixel xyxy -> input-pixel xyxy (float64)."""
        out = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
        out[:, [0, 2]] = out[:, [0, 2]] * self.ratio[0] + self.pad[0]
        out[:, [1, 3]] = out[:, [1, 3]] * self.ratio[1] + self.pad[1]
        return out

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """``[N, 4]`` input-pixel xyxy -> original-pixel xyxy (float64), the exact inverse of :meth:`to_input`
        (:func:`core.data.letterbox.unletterbox_boxes`, the mapping of the predictor and evaluation; not clipped)."""
        out = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        w, h = self.original_size
        return unletterbox_boxes(out, self.ratio, self.pad, (h, w), clip=False)

    def to_dict(self) -> dict[str, Any]:
        return {"original_size": list(self.original_size), "input_size": self.input_size,
                "ratio": list(self.ratio), "pad": list(self.pad)}  # fmt: skip


@dataclass
class LevelMaps:
    """Maps of one level. Arrays are float32 ``[na, H, W]`` in ``[0, 1]``; cell ``(gj, gi)`` covers input pixels
    ``[gi * stride, (gi + 1) * stride) x [gj * stride, (gj + 1) * stride)``.

    ``lead_cls`` / ``aux_cls``: class id -> objectness x class probability. ``aux_*`` are ``None`` without an
    auxiliary head. ``anchors_px``: per anchor ``(w, h)`` in input pixels.
    """

    level: int
    stride: int
    grid: tuple[int, int]
    anchors_px: list[tuple[float, float]]
    lead_obj: np.ndarray
    aux_obj: np.ndarray | None
    lead_cls: dict[int, np.ndarray] = field(default_factory=dict)
    aux_cls: dict[int, np.ndarray] | None = None

    @property
    def name(self) -> str:
        """``P3`` for stride 8, ``P4`` for 16, ... (the paper's level names)."""
        return f"P{int(round(np.log2(self.stride)))}"


@dataclass
class ImageExploration:
    """Everything the explorer shows for one image (see the module docstring).

    ``image``: the network input, ``[S, S, 3]`` RGB uint8. ``boxes`` ``[N, 4]`` original-pixel xyxy,
    ``boxes_input`` ``[N, 4]`` input-pixel xyxy, ``classes`` ``[N]`` int64, ``targets`` ``[N, 6]`` (image, class,
    x, y, w, h normalized to the input) as given to the assigner. ``view`` is ``None`` for an image without boxes.
    """

    model_name: str
    class_names: list[str]
    has_aux: bool
    img_size: int
    strides: list[int]
    image: np.ndarray
    mapping: PixelMapping
    boxes: np.ndarray
    boxes_input: np.ndarray
    classes: np.ndarray
    targets: np.ndarray
    levels: list[LevelMaps]
    view: AssignmentView | None
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def num_boxes(self) -> int:
        return int(len(self.classes))

    def class_name(self, cls: int) -> str:
        return self.class_names[cls] if 0 <= cls < len(self.class_names) else str(cls)

    def box_summaries(self) -> list[dict[str, Any]]:
        """Per box: class, boxes (original and input pixels), COCO size bucket at the input, and per label set its
        dynamic k, candidates, positives (total and per level) and whether it got none. Plain JSON values."""
        out = []
        for g in range(self.num_boxes):
            x1, y1, x2, y2 = self.boxes_input[g]
            row: dict[str, Any] = {
                "index": g, "class": int(self.classes[g]), "class_name": self.class_name(int(self.classes[g])),
                "xyxy": [float(v) for v in self.boxes[g]], "xyxy_input": [float(v) for v in self.boxes_input[g]],
                "size": size_bucket((x2 - x1) * (y2 - y1)),
            }  # fmt: skip
            if self.view is not None:
                bv = self.view.boxes[g]
                for kind, s in (("fine", bv.fine), ("coarse", bv.coarse)):
                    if s is None:
                        continue
                    row[kind] = {"dynamic_k": s.dynamic_k, "candidates": s.n_candidates, "positives": s.n_positives,
                                 "positives_per_level": [len(lv.positives) for lv in s.levels],
                                 "none": s.n_positives == 0}  # fmt: skip
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: settings, mapping, boxes, per-level map statistics and the full assignment view.

        The maps themselves are not included (see :meth:`save_npz`)."""
        levels = []
        for lv in self.levels:
            entry: dict[str, Any] = {"level": lv.level, "name": lv.name, "stride": lv.stride, "grid": list(lv.grid),
                                     "anchors_px": [list(a) for a in lv.anchors_px],
                                     "lead_obj_max": [float(m.max()) for m in lv.lead_obj]}  # fmt: skip
            if lv.aux_obj is not None:
                entry["aux_obj_max"] = [float(m.max()) for m in lv.aux_obj]
            levels.append(entry)
        return {
            "source": self.source, "model": self.model_name, "class_names": list(self.class_names),
            "has_aux": self.has_aux, "img_size": self.img_size, "strides": list(self.strides),
            "mapping": self.mapping.to_dict(), "boxes": self.box_summaries(), "levels": levels,
            "notes": list(self.notes), "assignment": self.view.to_dict() if self.view is not None else None,
        }  # fmt: skip

    def save_npz(self, path: str | Path, extra: dict[str, np.ndarray] | None = None) -> Path:
        """Write the input image, boxes and every map to a compressed ``.npz`` (keys ``lead_obj_<level>``,
        ``aux_obj_<level>``, ``lead_cls_<level>_<class>`` ...), plus the ``extra`` arrays."""
        arrays: dict[str, np.ndarray] = {"image": self.image, "boxes": self.boxes, "boxes_input": self.boxes_input,
                                         "classes": self.classes, "strides": np.asarray(self.strides)}  # fmt: skip
        for lv in self.levels:
            arrays[f"lead_obj_{lv.level}"] = lv.lead_obj
            if lv.aux_obj is not None:
                arrays[f"aux_obj_{lv.level}"] = lv.aux_obj
            for c, m in lv.lead_cls.items():
                arrays[f"lead_cls_{lv.level}_{c}"] = m
            for c, m in (lv.aux_cls or {}).items():
                arrays[f"aux_cls_{lv.level}_{c}"] = m
        arrays.update(extra or {})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        return path


def prepare_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]] | None,
    classes: np.ndarray | Sequence[int] | None,
    size: tuple[int, int],
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ground truth: ``[N, 4]`` original-pixel xyxy boxes and ``[N]`` class ids for an image of ``size``
    ``(w, h)``. Boxes are clipped to the image; a box without area inside it, a non-finite value or a class outside
    ``[0, num_classes)`` raises ``ValueError`` naming the box."""
    b = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64)
    c = np.zeros(0, dtype=np.int64) if classes is None else np.asarray(classes)
    if b.size == 0 and c.size == 0:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] pixel xyxy, got shape {tuple(b.shape)}")
    c = c.reshape(-1)
    if len(c) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(c)} class ids")
    if not np.all(np.isfinite(b)):
        raise ValueError("boxes contain NaN or infinite values")
    if not np.all(np.equal(np.mod(c.astype(np.float64), 1), 0)):
        raise ValueError(f"class ids must be integers, got {c.tolist()}")
    c = c.astype(np.int64)
    bad = np.nonzero((c < 0) | (c >= num_classes))[0]
    if len(bad):
        raise ValueError(f"box {int(bad[0])}: unknown class {int(c[bad[0]])} (the model has {num_classes} classes, "
                         f"ids 0..{num_classes - 1})")  # fmt: skip
    w, h = size
    b = b.copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    empty = np.nonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))[0]
    if len(empty):
        raise ValueError(f"box {int(empty[0])} has no area inside the {w}x{h} image (xyxy expected)")
    return b, c


def _load_image(image: str | Path | np.ndarray | Image.Image) -> tuple[np.ndarray, str]:
    """``[H, W, 3]`` RGB uint8 and a source name, from a path, a PIL image (any mode) or an RGB array."""
    if isinstance(image, np.ndarray):
        return check_array(image, "image"), "array"
    if isinstance(image, Image.Image):
        return pil_to_array(image), "PIL image"
    if not isinstance(image, (str, Path)):
        raise ImageReadError(f"image: unsupported type {type(image).__name__} (expected a path, a PIL image or a "
                             "uint8 RGB numpy array [H, W, 3])")  # fmt: skip
    return read_image(image), str(image)


@torch.no_grad()
def explore_image(
    model: Any,
    image: str | Path | np.ndarray | Image.Image,
    boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    classes: np.ndarray | Sequence[int] | None = None,
    *,
    img_size: int = 640,
    coarse: bool = True,
    topk: int | None = None,
    anchor_t: float = 4.0,
    class_maps: Sequence[int] = (),
    device: str | torch.device | None = None,
) -> ImageExploration:
    """Run ``model`` (a :class:`core.models.Yolo`) on one image and explain the assignment of its boxes.

    Args:
        model: any training-form model (with or without aux head); it is not changed, not even its train/eval
            mode (the forward runs on :func:`eval_view`), so one model can serve several threads at once.
        image: a file path, a PIL image (any mode, converted to RGB), or an ``[H, W, 3]`` RGB uint8 array (as the
            predictor takes).
        boxes: ``[N, 4]`` pixel xyxy in original image coordinates (or ``None``); classes: ``[N]`` class ids.
        img_size: square input side, a multiple of the largest stride.
        coarse: also compute the coarse (aux) label set. topk: IoUs summed for dynamic k (default 20 when the
            coarse set is computed, as ``ComputeLossAuxOTA``, else 10). anchor_t: anchor filter threshold.
        class_maps: extra class ids whose obj x cls maps are wanted (the boxes' classes are always included).
        device: where the input goes (default: the model's device; the model must already be there).

    Raises:
        ValueError: bad boxes, unknown class, input size not a multiple of the stride, deploy model.
        core.inference.sources.ImageReadError: unreadable image.
    """
    head = model.head
    if getattr(model, "deploy", False) or not hasattr(head, "anchors"):
        raise ValueError("the explorer needs a training-form model (a deploy model has no auxiliary head and "
                         "may be fused); load the training checkpoint")  # fmt: skip
    max_stride = int(max(head.strides))
    if img_size % max_stride:
        raise ValueError(f"img_size {img_size} is not a multiple of the largest stride {max_stride}")
    rgb, source = _load_image(image)
    h0, w0 = rgb.shape[:2]
    boxes_o, cls = prepare_boxes(boxes, classes, (w0, h0), int(head.nc))
    bad_maps = [c for c in class_maps if not 0 <= int(c) < head.nc]
    if bad_maps:
        raise ValueError(f"class_maps: unknown class {bad_maps[0]} (the model has {head.nc} classes)")
    inp, info = letterbox(rgb, img_size, auto=False)
    mapping = PixelMapping((w0, h0), img_size, info.ratio, info.pad)
    boxes_in = mapping.to_input(boxes_o)

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(inp.transpose(2, 0, 1))).to(dev).float().div(255).unsqueeze(0)
    raw = [r.float() for r in eval_view(model).forward_levels(x, aux=True)]
    nl = int(head.nl)
    lead, aux = raw[:nl], (raw[nl : 2 * nl] if len(raw) >= 2 * nl else None)

    wanted = sorted({int(c) for c in cls.tolist()} | {int(c) for c in class_maps})
    anchors_px = head.anchor_grid.view(nl, head.na, 2).detach().float().cpu()
    levels = []
    for i in range(nl):
        lead_obj, lead_cls = _maps(lead[i][0], wanted, int(head.nc))
        aux_obj, aux_cls = _maps(aux[i][0], wanted, int(head.nc)) if aux is not None else (None, None)
        grid = (int(lead[i].shape[2]), int(lead[i].shape[3]))
        levels.append(LevelMaps(i, int(head.strides[i]), grid, [(float(a), float(b)) for a, b in anchors_px[i]],
                                lead_obj, aux_obj, lead_cls, aux_cls))  # fmt: skip

    targets = input_targets(boxes_in, cls, img_size)
    view = None
    k = topk if topk is not None else (20 if coarse else 10)
    if len(cls):
        view = explain_assignment(lead, torch.from_numpy(targets).float().to(dev), head.anchors, head.stride,
                                  img_size, aux=coarse, topk=k, anchor_t=anchor_t)  # fmt: skip
    notes = []
    if aux is None:
        notes.append(
            "the model has no auxiliary head: aux maps are absent"
            + (
                "; the coarse set shows what an aux head would be trained on (ComputeLossAuxOTA settings), "
                "while this model's own training used the fine set with top-k 10"
                if coarse
                else ""
            )
        )
    if not len(cls):
        notes.append("no ground-truth boxes: objectness maps only, no assignment")
    return ImageExploration(
        model_name=str(getattr(model, "name", type(model).__name__)),
        class_names=list(getattr(model, "names", [str(i) for i in range(head.nc)])),
        has_aux=aux is not None, img_size=img_size, strides=[int(s) for s in head.strides], image=inp,
        mapping=mapping, boxes=boxes_o, boxes_input=boxes_in, classes=cls, targets=targets, levels=levels,
        view=view, notes=notes, source=source,
    )  # fmt: skip


def _maps(level: torch.Tensor, classes: list[int], nc: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """``[na, H, W, 5+nc]`` logits -> objectness ``[na, H, W]`` and per class obj x cls ``[na, H, W]``."""
    obj = level[..., 4].sigmoid()
    cls_maps = {}
    for c in classes:
        m = obj if nc == 1 else obj * level[..., 5 + c].sigmoid()
        cls_maps[c] = m.cpu().numpy().astype(np.float32)
    return obj.cpu().numpy().astype(np.float32), cls_maps
