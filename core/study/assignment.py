"""The assignment study: every auxiliary-head assignment strategy trained with the same data, seeds and recipe.

``run_assignment_study(data, model, out=DIR, ...)`` trains one normal run directory per (condition, seed) under
``DIR/runs/<condition>_s<seed>`` (sequentially; the job runner, studio and dashboard see them as runs), evaluates
each on the test split with pycocotools, and writes ``study.json``, ``table.md``, ``table.csv`` and the objectness
figure (see :mod:`core.study`). It is resumable: a finished run is not retrained (its metrics are re-read), an
interrupted one is resumed by the Trainer, and study.json is rewritten atomically after every change, so front ends
follow the progress. Conditions: ``none`` (the same model without the auxiliary head, the paper's baseline) and the
four strategies of the one assigner (``TrainConfig.assign``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.study.paper import paper_assignment_rows
from core.study.store import METRIC_KEYS, STUDY_FILE, VERSION, load_study, write_study
from core.study.table import csv_table, markdown_table, summarize
from core.train.config import TrainConfig
from core.train.rundir import RunDir, RunInUse, atomic_write_text

CONDITIONS = ("none", "independent", "lead-guided", "coarse-to-fine", "coarse-to-fine-bounded")
DEFAULT_STRATEGY = "coarse-to-fine"  # the official behaviour (TrainConfig's default)
WIRINGS = ("top-down", "partial")
# settings that must match for a study folder to be continued (conditions and seeds may be added)
_FIXED = ("data", "model", "width", "epochs", "img", "batch", "aux_wiring", "recipe", "train_overrides")
# train_overrides that do not change results (a study may be continued with other values)
_NEUTRAL = ("device", "workers", "plots", "progress")
# TrainConfig fields the study sets itself (train_overrides may not change them)
_OWN = ("data", "model", "width", "epochs", "img", "batch", "seed", "aux", "assign", "aux_wiring", "recipe", "out",
        "name", "weights", "objectness_every")  # fmt: skip

Log = Callable[[str], None]
Progress = Callable[[float, str], None]


def _config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def parse_seeds(seeds: int | Sequence[int]) -> list[int]:
    """``K`` -> seeds ``0..K-1``; a sequence -> those seeds (distinct, in order). ``ValueError`` when empty/negative."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds: need at least 1, got {seeds}")
        return list(range(seeds))
    out = list(dict.fromkeys(int(s) for s in seeds))
    if not out or min(out) < 0:
        raise ValueError(f"seeds: need a non-empty list of seeds >= 0, got {list(seeds)}")
    return out


def check_conditions(strategies: Sequence[str] | None, aux_wiring: str = "top-down") -> list[str]:
    """Validate the conditions (default: all five) against :data:`CONDITIONS` and what this engine supports."""
    conds = list(dict.fromkeys(strategies)) if strategies else list(CONDITIONS)
    unknown = [c for c in conds if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}: choose from {', '.join(CONDITIONS)}")
    if aux_wiring not in WIRINGS:
        raise ValueError(f"unknown aux wiring {aux_wiring!r}: choose from {', '.join(WIRINGS)}")
    fields = _config_fields()
    if "assign" not in fields:
        unsupported = [c for c in conds if c not in ("none", DEFAULT_STRATEGY)]
        if unsupported:
            raise ValueError(f"strategy {unsupported[0]!r} needs TrainConfig.assign, which this checkout's training "
                             f"engine does not have yet: only 'none' and '{DEFAULT_STRATEGY}' can run")  # fmt: skip
    if "aux_wiring" not in fields and aux_wiring != "top-down":
        raise ValueError(f"aux wiring {aux_wiring!r} needs TrainConfig.aux_wiring, which this engine lacks")
    return conds


def run_name(condition: str, seed: int) -> str:
    return f"{condition}_s{seed}"


def train_config(settings: dict[str, Any], condition: str, seed: int, out: Path) -> TrainConfig:
    """The TrainConfig of one run: the study's settings, the condition's head and strategy, the seed."""
    fields = _config_fields()
    kw: dict[str, Any] = dict(
        data=settings["data"], model=settings["model"], width=settings["width"], epochs=settings["epochs"],
        img=settings["img"], batch=settings["batch"], recipe=settings["recipe"], seed=seed, aux=condition != "none",
        out=str(out / "runs" / run_name(condition, seed)), name=run_name(condition, seed), objectness_every=0,
    )  # fmt: skip
    if "assign" in fields and condition != "none":
        kw["assign"] = condition
    if "aux_wiring" in fields and condition != "none":
        kw["aux_wiring"] = settings["aux_wiring"]
    kw["plots"] = "html"  # each run's training curves for the dashboard, without the slower PNG export
    kw.update(settings.get("train_overrides") or {})
    return TrainConfig(**kw)


def _check_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    overrides = dict(overrides or {})
    fields = _config_fields()
    bad = [k for k in overrides if k not in fields]
    if bad:
        raise ValueError(f"train_overrides: unknown training setting {bad[0]!r}")
    own = [k for k in overrides if k in _OWN]
    if own:
        raise ValueError(f"train_overrides: {own[0]!r} is set by the study itself")
    return overrides


def _check_data(data: str) -> None:
    if not Path(data).exists():
        raise ValueError(f"{data}: no such dataset (give a dataset folder, data.yaml, COCO .json or .zip)")


def _check_model(model: str) -> None:
    from core.models import get_spec

    try:
        get_spec(model)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


# -- one run ---------------------------------------------------------------------------------------------------
def _run_state(run_dir: Path) -> str:
    """``finished`` (done, or stopped at the study's max_steps), ``running`` (another live process), ``resume``
    (an interrupted run to continue) or ``new``."""
    rd = RunDir(run_dir)
    st = rd.read_status() or {}
    state, message = st.get("state"), str(st.get("message") or "")
    if state == "finished" or (state == "stopped" and message.startswith("stopped after max_steps")):
        return "finished"
    if state in ("running", "queued") and rd.is_alive(status=st):
        return "running"
    return "resume" if rd.holds_run() else "new"


def _weights(run_dir: Path) -> Path | None:
    rd = RunDir(run_dir)
    return rd.best if rd.best.exists() else rd.last if rd.last.exists() else None


def _metrics_from_file(run_dir: Path) -> dict[str, Any] | None:
    """The trainer's metrics.json evaluation of best.pt on the test split (or on the split it used when the
    dataset has no test split), as study metrics; None when absent."""
    try:
        m = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    entry = m.get("test") if isinstance(m.get("test"), dict) else m
    coco = entry.get("coco") if isinstance(entry, dict) else None
    if not isinstance(coco, dict) or not set(METRIC_KEYS) <= set(coco):
        return None
    return {**{k: float(coco[k]) for k in METRIC_KEYS}, "split": entry.get("split", m.get("split")),
            "weights": "best.pt", "source": "metrics.json"}  # fmt: skip


class _Evaluator:
    """Evaluates a run's weights on the study's split with the trainer's own evaluation (pycocotools); the
    dataset is read and checked once, as the trainer reads it."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self._data: dict[str, Any] = {}

    def dataset(self, cfg: TrainConfig) -> Any:
        if cfg.data not in self._data:
            from core.train.setup import prepare_dataset

            self._data[cfg.data] = prepare_dataset(cfg, lambda _m: None)[0]
        return self._data[cfg.data]

    def split(self, cfg: TrainConfig) -> str:
        ds = self.dataset(cfg)
        return "test" if ds.split("test") else "val" if ds.split("val") else cfg.train_split

    def __call__(self, cfg: TrainConfig, weights: Path) -> dict[str, Any]:
        from core.checkpoint.io import load_model
        from core.train import setup as S

        ds, split = self.dataset(cfg), self.split(cfg)
        model = load_model(weights).model
        result = S.evaluate_model(model, ds, cfg.replace(val_split=split), S.training_device(cfg.device, 0))
        stats = result.coco.stats
        return {**{k: float(stats[k]) for k in METRIC_KEYS}, "split": split, "weights": weights.name,
                "source": "evaluated by the study"}  # fmt: skip


def _prefixed(say: Log, name: str) -> Log:
    return lambda m: say(f"[{name}] {m}")


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, log: Log) -> str:
    """Train (or resume) one run in this process; returns the trainer's final state."""
    from core.train.trainer import Trainer

    status = Trainer(cfg, resume=run_dir if resume else None, log=log).fit()
    return str(status.get("state"))


# -- the study -------------------------------------------------------------------------------------------------
def _settings(data: str, model: str, width: float, epochs: int, img: int, batch: int, seeds: list[int],
              conds: list[str], aux_wiring: str, recipe: str, overrides: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {"data": str(data), "model": model, "width": float(width), "epochs": int(epochs), "img": int(img),
            "batch": int(batch), "seeds": seeds, "strategies": conds, "aux_wiring": aux_wiring, "recipe": recipe,
            "split": "test", "train_overrides": overrides}  # fmt: skip


def _merge(out: Path, settings: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The existing study in ``out`` (if any) and the settings to continue with (conditions/seeds united)."""
    if not (out / STUDY_FILE).exists():
        return None, settings
    old = load_study(out)
    if old["kind"] != "assignment":
        raise ValueError(f"{out / STUDY_FILE}: holds a {old['kind']} study; choose another --out")
    for key in _FIXED:
        a, b = old["settings"].get(key), settings.get(key)
        if key == "train_overrides":
            a = {k: v for k, v in (a or {}).items() if k not in _NEUTRAL}
            b = {k: v for k, v in (b or {}).items() if k not in _NEUTRAL}
        if a != b:
            raise ValueError(f"{out / STUDY_FILE}: this folder holds a study with other settings ({key}: {a!r} there, "
                             f"{b!r} asked); continue it with the same settings or choose another --out")  # fmt: skip
    merged = dict(settings)
    merged["seeds"] = list(dict.fromkeys([*old["settings"]["seeds"], *settings["seeds"]]))
    merged["strategies"] = [c for c in CONDITIONS if c in {*old["settings"]["strategies"], *settings["strategies"]}]
    return old, merged


def run_assignment_study(
    data: str | Path,
    model: str = "yolov7-tiny",
    *,
    out: str | Path,
    epochs: int = 30,
    img: int = 320,
    batch: int = 16,
    width: float = 1.0,
    strategies: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 1,
    aux_wiring: str = "top-down",
    recipe: str = "auto",
    train_overrides: dict[str, Any] | None = None,
    figure: bool = True,
    log: Log | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run (or continue) the assignment study in ``out``; returns the final study dict (as in study.json).

    ``strategies``: conditions to run (default all of :data:`CONDITIONS`); ``seeds``: ``K`` for ``0..K-1`` or a
    list. ``train_overrides``: further TrainConfig fields for every run (e.g. ``max_steps``, ``workers``,
    ``device``, ``plots``, ``assign_bound``), the same for all. ``log`` receives text lines (default: logging);
    ``progress(fraction, message)`` is called as runs start and end. Raises ``ValueError`` for bad input (missing
    data, unknown strategy or model, a folder holding a study with other settings). A failed run is recorded as
    ``failed`` with its error and the others continue; a stopped one (Ctrl-C, STOP file) stops the study, which
    the same call continues.
    """
    say: Log = log if log is not None else logging.getLogger("core.study").info
    report: Progress = progress if progress is not None else (lambda _f, _m: None)
    data = str(data)
    _check_data(data)
    _check_model(model)
    conds = check_conditions(strategies, aux_wiring)
    seed_list = parse_seeds(seeds)
    overrides = _check_overrides(train_overrides)
    if epochs < 1:
        raise ValueError(f"epochs: need at least 1, got {epochs}")
    out = Path(out)
    old, settings = _merge(out, _settings(data, model, width, epochs, img, batch, seed_list, conds, aux_wiring,
                                          recipe, overrides))  # fmt: skip
    study: dict[str, Any] = {
        "kind": "assignment", "version": VERSION,
        "created": old["created"] if old else datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings, "state": "running", "runs": [], "summary": [],
        "paper": paper_assignment_rows(settings["strategies"]), "figure": None, "table": None,
    }  # fmt: skip
    previous = {r["name"]: r for r in (old or {}).get("runs", [])}
    for seed in settings["seeds"]:
        for cond in settings["strategies"]:
            name = run_name(cond, seed)
            prev = previous.get(name, {})
            study["runs"].append({"name": name, "condition": cond, "seed": seed, "run_dir": f"runs/{name}",
                                  "status": prev.get("status", "pending"), "metrics": prev.get("metrics")})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        study["summary"] = summarize(study["runs"], settings["strategies"])
        write_study(out, study)

    save()
    evaluator = _Evaluator(say)
    todo = [r for r in study["runs"] if r["condition"] in conds and r["seed"] in seed_list]
    stopped = False
    for i, run in enumerate(todo):
        name, run_dir = run["name"], out / run["run_dir"]
        cfg = train_config(settings, run["condition"], run["seed"], out)
        state = _run_state(run_dir)
        report(i / len(todo), f"{name}: {state}")
        if state == "running":
            say(f"{name}: another process is training it; skipped (rerun the study when it has finished)")
            run["status"] = "running"
            save()
            continue
        if state != "finished":
            say(f"{name}: {'resuming' if state == 'resume' else 'training'} ({i + 1}/{len(todo)})")
            run.update(status="running", metrics=None)
            run.pop("error", None)
            save()
            t0 = time.time()
            try:
                final = _train(cfg, run_dir, state == "resume", _prefixed(say, name))
            except KeyboardInterrupt:  # a second Ctrl-C: the run is resumable, the study says so
                run["status"] = "pending"
                save()
                raise
            except RunInUse as exc:
                say(f"{name}: {exc}; skipped")
                save()
                continue
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
                run.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                say(f"{name}: FAILED: {run['error']}")
                save()
                continue
            if _run_state(run_dir) != "finished":
                run["status"] = "pending"
                say(f"{name}: {final} after {time.time() - t0:.0f} s; run the same study command again to resume")
                stopped = True
                save()
                break
        metrics = run.get("metrics") if state == "finished" else None
        if not metrics:
            metrics = _metrics_from_file(run_dir)
            weights = _weights(run_dir)
            if metrics is None and weights is not None:
                say(f"{name}: evaluating {weights.name} on the '{evaluator.split(cfg)}' split")
                metrics = evaluator(cfg, weights)
        if metrics is None:
            run.update(status="failed", error="finished without weights to evaluate")
        else:
            run.update(status="finished", metrics=metrics)
            say(f"{name}: AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  AP75 {metrics['AP75']:.4f} "
                f"({metrics.get('split')} split)")  # fmt: skip
        save()
    splits = {r["metrics"].get("split") for r in study["runs"] if r.get("metrics")}
    notes = []
    if splits and splits != {"test"}:
        settings["split"] = "/".join(sorted(s for s in splits if s))
        notes.append(f"the dataset has no test split: evaluated on {settings['split']} instead")
    _write_tables(out, study, notes, say)
    if figure and not stopped:
        study.update(_figure(out, study, evaluator, say))
    study["state"] = "stopped" if stopped else (
        "finished" if all(r["status"] == "finished" for r in study["runs"]) else "incomplete")  # fmt: skip
    report(1.0, f"study {study['state']}")
    save()
    return study


def _write_tables(out: Path, study: dict[str, Any], notes: list[str], say: Log) -> None:
    summary = summarize(study["runs"], study["settings"]["strategies"])
    failed = [f"{r['name']}: {r.get('error', r['status'])}" for r in study["runs"] if r["status"] == "failed"]
    md = markdown_table(summary, study["settings"], notes + [f"failed run {f}" for f in failed])
    atomic_write_text(out / "table.md", md)
    atomic_write_text(out / "table.csv", csv_table(summary))
    study["table"] = "table.md"
    say(md)


def figure_image(dataset: Any) -> tuple[Any, str]:
    """The fixed image of the figure: the first test image (dataset order) with at least 2 boxes (else the test
    image with the most boxes; val when there is no test split). Returns (record, split)."""
    split = "test" if dataset.split("test") else "val" if dataset.split("val") else "train"
    records = list(dataset.split(split))
    for rec in records:
        if len(rec.classes) >= 2:
            return rec, split
    return max(records, key=lambda r: len(r.classes)), split


def _figure(out: Path, study: dict[str, Any], evaluator: _Evaluator, say: Log) -> dict[str, Any]:
    """Objectness maps of the fixed image under every condition (its lowest finished seed)."""
    from core.checkpoint.io import load_model
    from core.explore import explore_image
    from core.study.figure import save_objectness_figure

    settings = study["settings"]
    try:
        cfg = train_config(settings, "none", settings["seeds"][0], out)
        rec, split = figure_image(evaluator.dataset(cfg))
        explorations = []
        for cond in settings["strategies"]:
            runs = sorted((r for r in study["runs"] if r["condition"] == cond and r["status"] == "finished"),
                          key=lambda r: r["seed"])  # fmt: skip
            weights = _weights(out / runs[0]["run_dir"]) if runs else None
            if weights is None:
                continue
            model = load_model(weights).model
            exp = explore_image(model, rec.path, rec.boxes, rec.classes, img_size=settings["img"])
            explorations.append((f"{cond} (seed {runs[0]['seed']})", exp))
        saved = save_objectness_figure(explorations, out, f"{split} image {Path(rec.path).name}")
    except Exception as exc:  # noqa: BLE001 - the table is the result; a figure failure is reported, not fatal
        say(f"objectness figure not made: {type(exc).__name__}: {exc}")
        return {"figure": None, "figure_note": f"{type(exc).__name__}: {exc}"}
    if saved["note"]:
        say(f"objectness figure: {saved['note']}")
    say(f"objectness figure: {out / (saved['png'] or saved['html'] or '')}")
    return {"figure": saved["png"], "figure_html": saved["html"], "figure_image": str(rec.path),
            "figure_note": saved["note"]}  # fmt: skip
