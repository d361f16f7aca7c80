"""Conversion between COCO, YOLO and Pascal VOC through the common representation."""

from __future__ import annotations

from pathlib import Path

from core.data.check import CheckReport, check_dataset
from core.data.io_coco import write_coco
from core.data.io_voc import write_voc
from core.data.io_yolo import write_yolo
from core.data.load import load_dataset
from core.data.types import DetectionDataset

WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}


def write_dataset(dataset: DetectionDataset, to: str, out: str | Path, copy_images: bool = True) -> Path:
    """Write ``dataset`` in format ``to`` under ``out`` (must not exist or be empty); returns what the writer
    returns (the folder, or ``data.yaml`` for YOLO).

    Raises:
        ValueError: unknown format. FileExistsError: ``out`` holds files.
    """
    if to not in WRITERS:
        raise ValueError(f"unknown format {to!r}; expected one of {sorted(WRITERS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty; choose a new output folder")
    return WRITERS[to](dataset, out, copy_images=copy_images)


def convert_dataset(
    source: str | Path, to: str, out: str | Path, format: str | None = None, decode: bool = True
) -> tuple[Path, CheckReport]:
    """Read ``source`` (any supported format), check and clean it, and write it as ``to`` under ``out``.

    What is written is the cleaned dataset (corrupt images and invalid boxes left out, boxes clipped), with the
    splits of the source (or the recorded seeded split). Returns (written path, the check report).
    """
    report = check_dataset(load_dataset(source, format=format), decode=decode)
    return write_dataset(report.dataset, to, out), report
