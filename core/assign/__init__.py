"""Lead-guided label assignment of YOLOv7: one assigner, fine (lead) or coarse (aux) as a parameter.

* ``find_candidates``: step 1, the candidate cells of each box (centre + 2 neighbours, or + 4 when coarse).
* ``assign``: step 2, SimOTA dynamic-k selection, vectorized over the batch with bounded memory.
* ``explain_assignment``: the per-box, per-level view drawn by the assignment explorer (JSON-ready).
"""

from core.assign.candidates import COARSE_OFFSET, FINE_OFFSET, find_candidates
from core.assign.explorer import AUX_SETS, AssignmentView, BoxView, CellView, LevelView, SetView, explain_assignment
from core.assign.simota import DEFAULT_CHUNK_ELEMENTS, assign
from core.assign.types import Assignment, ImageMatrices, LevelCells

__all__ = [
    "AUX_SETS",
    "COARSE_OFFSET",
    "DEFAULT_CHUNK_ELEMENTS",
    "FINE_OFFSET",
    "Assignment",
    "AssignmentView",
    "BoxView",
    "CellView",
    "LevelView",
    "SetView",
    "explain_assignment",
    "ImageMatrices",
    "LevelCells",
    "assign",
    "find_candidates",
]
