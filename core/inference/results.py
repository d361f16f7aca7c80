"""Per-image detections and their plain-data forms (JSON per image, COCO results).

Boxes are xyxy in **original image pixels** (after undoing the letterbox, clipped to the image); scores are
``obj * cls`` as in the official NMS; labels are class indices into ``class_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# COCO's 80 detection classes use the ids 1..90 with these ten left out (the 2017 annotation files).
_COCO_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO80_TO_COCO91: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in _COCO_UNUSED_IDS)


@dataclass
class Detections:
    """Detections of one image.

    ``boxes`` ``[n, 4]`` float32 xyxy in original pixels, ``scores`` ``[n]``, ``labels`` ``[n]`` int64, sorted by
    descending score. ``image_size`` is the original ``(h, w)``; ``source`` the file path or a placeholder name.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    image_size: tuple[int, int]
    source: str = ""

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def names(self) -> list[str]:
        """Class name of every detection."""
        return [self.class_names[i] for i in self.labels.tolist()]

    def to_dict(self) -> dict[str, torch.Tensor]:
        """torchvision-style ``{'boxes': [n, 4] xyxy, 'scores': [n], 'labels': [n] int64}``."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}

    def to_json(self) -> dict[str, Any]:
        """Plain data: image size and one record per detection (box xyxy in pixels, score, label, name)."""
        h, w = self.image_size
        return {
            "source": self.source,
            "width": w,
            "height": h,
            "detections": [
                {"box_xyxy": [round(v, 2) for v in box], "score": round(score, 5), "label": label, "name": name}
                for box, score, label, name in zip(
                    self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.names
                )
            ],
        }

    def to_coco(self, image_id: int | str, category_ids: list[int] | tuple[int, ...] | None = None) -> list[dict]:
        """COCO result records ``{image_id, category_id, bbox: [x, y, w, h], score}`` (pixels, top-left corner).

        ``category_ids[label]`` gives the category id (e.g. :data:`COCO80_TO_COCO91`); default: the label itself.
        """
        out = []
        for (x1, y1, x2, y2), score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            cat = category_ids[label] if category_ids is not None else label
            bbox = [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]
            out.append({"image_id": image_id, "category_id": int(cat), "bbox": bbox, "score": round(score, 5)})
        return out
