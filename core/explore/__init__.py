"""Assignment explorer: how YOLOv7's lead-guided assigner labels an image, and what the lead and aux heads see.

Public API (what the CLI and the front ends call):

* One image: ``explore_image(model, image, boxes, classes, img_size=...) -> ImageExploration`` (maps per level and
  anchor for the lead and aux heads, the :class:`core.assign.AssignmentView`, the pixel mapping);
  ``exploration_figure(exp)`` (interactive plotly), ``level_figure(exp, level)`` (static panel),
  ``save_exploration(exp, out)`` (HTML + PNG per level + JSON).
* A dataset: ``assignment_stats(model, dataset, split, progress=...) -> AssignmentStats``; ``STATS_FIGURES`` and
  ``save_stats(stats, out)``.
* Safe on a shared model: ``eval_view(model)`` (eval mode without switching the caller's model); both calls above
  use it, so several threads can explore with one model.
* Training: ``training_hooks(cfg)`` (the hooks a TrainConfig asks for; every caller of ``core.train.Trainer`` passes
  them as ``hooks=``), ``ObjectnessHook(every)`` (``--objectness-every N``),
  ``convergence_figure(run_dir)`` (the slider over epochs).
* Labels of one image: ``read_labels(path, width, height, class_names)`` (YOLO .txt or VOC .xml), ``LabelError``.
"""

from core.explore.engine import ImageExploration, LevelMaps, PixelMapping, explore_image, prepare_boxes
from core.explore.export import SavedFiles, save_exploration, save_stats, write_html, write_pngs
from core.explore.figure import default_level, exploration_figure, level_figure, view_cells
from core.explore.labels import LabelError, read_labels
from core.explore.stats import SIZE_BUCKETS, AssignmentStats, BoxCounts, GroupStats, assignment_stats, size_bucket
from core.explore.stats_figures import STATS_FIGURES
from core.explore.training import ObjectnessHook, convergence_figure, load_snapshots, training_hooks, write_snapshot
from core.inference.eval_view import eval_view

__all__ = [
    "STATS_FIGURES",
    "SIZE_BUCKETS",
    "AssignmentStats",
    "BoxCounts",
    "GroupStats",
    "ImageExploration",
    "LabelError",
    "LevelMaps",
    "ObjectnessHook",
    "PixelMapping",
    "SavedFiles",
    "assignment_stats",
    "convergence_figure",
    "default_level",
    "eval_view",
    "exploration_figure",
    "explore_image",
    "level_figure",
    "load_snapshots",
    "write_snapshot",
    "prepare_boxes",
    "read_labels",
    "save_exploration",
    "save_stats",
    "size_bucket",
    "training_hooks",
    "view_cells",
    "write_html",
    "write_pngs",
]
