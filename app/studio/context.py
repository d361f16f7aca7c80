"""What every tab of the studio shares: the workspace, the model cache, the job runner, and the pickers to refresh."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.modelcache import ModelCache
from app.workspace import Workspace


@dataclass
class StudioContext:
    """Built once per studio process and handed to every tab's ``build(ctx)``.

    Tabs register their dataset and checkpoint dropdowns in ``dataset_pickers`` / ``checkpoint_pickers``; the app
    refreshes their choices on page load and whenever a tab reports a new dataset, checkpoint or run (see
    :func:`app.studio.app.build_app`). ``change_events`` holds the event dependencies (what ``.click``
    returns) after which they change. ``jobs`` is the :class:`app.jobs.JobRunner` of the workspace.
    """

    workspace: Workspace
    cache: ModelCache = field(default_factory=ModelCache)
    jobs: Any = None
    dataset_pickers: list[Any] = field(default_factory=list)
    checkpoint_pickers: list[Any] = field(default_factory=list)
    change_events: list[Any] = field(default_factory=list)  # events after which the pickers are refreshed

    def dataset_choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for a ``gr.Dropdown``: the demo first, then uploads and linked folders."""
        return [(e.label, e.id) for e in self.workspace.list_datasets()]

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for a ``gr.Dropdown``: the demo checkpoint first, then runs, then uploads."""
        return [(e.label, e.id) for e in self.workspace.list_checkpoints()]
