"""Detection datasets: read COCO / YOLO / Pascal VOC into one representation, check, convert, and feed training.

Public API (everything else in the package is an implementation detail):

* Representation: ``DetectionDataset``, ``ImageRecord`` (boxes in pixel ``xyxy``), ``Issue``, ``SplitInfo``.
* Reading: ``load_dataset(path, format=None)`` (folder, data.yaml, COCO json or .zip), ``detect_format``.
* Checking: ``check_dataset(dataset) -> CheckReport`` (``.dataset`` is the cleaned dataset to train on),
  ``report_to_text``, ``report_to_dict``, ``save_figures``, ``compute_stats``,
  ``DATASET_FIGURES`` (name -> figure function of the statistics).
* Conversion: ``convert_dataset``, ``write_dataset``; for evaluation ``to_coco_dict`` / ``to_coco_api``.
* Uploads: ``safe_extract``, ``ZipLimits``, ``UnsafeArchiveError``.
* Training input: ``Hyp``/``get_hyp``/``HYP_PRESETS``, ``YoloDataset``, ``create_train_loader``,
  ``create_val_loader``, ``Batch``, ``LabelCounts``, ``multi_scale_resize``, ``letterbox``.
* Demo data: ``make_demo_dataset``, ``ensure_demo_dataset``; previews: ``render_preview``.
* Progress: ``load_dataset``, ``check_dataset`` (and ``core.eval.evaluate``) take ``progress``, a ``ProgressFn``
  ``(fraction 0..1, message)`` such as a UI's progress bar (``True`` = a tqdm bar where the call has one).
"""

from core.data.augment import LabelCounts
from core.data.check import CheckReport, check_dataset
from core.data.convert import convert_dataset, write_dataset
from core.data.demo import ensure_demo_dataset, make_demo_dataset
from core.data.figures import FIGURES as DATASET_FIGURES
from core.data.figures import save_figures
from core.data.hyp import HYP_PRESETS, Hyp, default_hyp_for, get_hyp
from core.data.io_coco import coco_category_id, coco_image_id, to_coco_api, to_coco_dict
from core.data.io_yolo import label_path_for
from core.data.letterbox import letterbox
from core.data.load import detect_format, load_dataset
from core.data.loader import Batch, DetectionLoader, create_train_loader, create_val_loader, multi_scale_resize
from core.data.pipeline import YoloDataset
from core.data.preview import render_preview
from core.data.progress import ProgressFn
from core.data.report import report_to_dict, report_to_text
from core.data.safezip import UnsafeArchiveError, ZipLimits, safe_extract
from core.data.stats import compute_stats
from core.data.types import DetectionDataset, ImageRecord, Issue, SplitInfo

__all__ = [
    "label_path_for",
    "DATASET_FIGURES",
    "Batch",
    "CheckReport",
    "DetectionDataset",
    "DetectionLoader",
    "HYP_PRESETS",
    "Hyp",
    "ImageRecord",
    "Issue",
    "LabelCounts",
    "ProgressFn",
    "SplitInfo",
    "UnsafeArchiveError",
    "YoloDataset",
    "ZipLimits",
    "check_dataset",
    "coco_category_id",
    "coco_image_id",
    "compute_stats",
    "convert_dataset",
    "create_train_loader",
    "create_val_loader",
    "default_hyp_for",
    "detect_format",
    "ensure_demo_dataset",
    "get_hyp",
    "letterbox",
    "load_dataset",
    "make_demo_dataset",
    "multi_scale_resize",
    "render_preview",
    "report_to_dict",
    "report_to_text",
    "safe_extract",
    "save_figures",
    "to_coco_api",
    "to_coco_dict",
    "write_dataset",
]
