"""``archlab tune``: train every setting of a grid and choose one on validation.

    archlab tune minilm-mr --grid trainer.lr=5e-5,1e-4,2e-4,4e-4 --on-folds 0 1

Each setting (one value per ``--grid`` key; all combinations) is trained as ``archlab
train --folds/--seeds`` trains a recipe (:func:`archlab.run.train_repeats`), once per
fold of ``--on-folds`` (``data.fold=K``, the recipe's ``data.folds`` unchanged) or per
seed of ``--seeds N`` (from the recipe's ``trainer.seed``), or once, into
``RUN_DIR/SETTING`` (e.g. ``RUN_DIR/trainer.lr=1e-4/fold-0``).  The choice is the setting
with the best mean over those runs of the task's metric (:attr:`Task.metric`; larger is
better for :data:`~archlab.tasks.HIGHER_IS_BETTER` metrics, smaller for the others) on
the validation split, as each run's results.json gives it; test figures are in each
setting's results.json and take no part.  Ties go to the setting first in the grid; a
setting whose training stopped (a non-finite loss) is reported and cannot be chosen, nor
can one whose validation figure is not finite.  The grid cannot vary the task, what is
validated on (:data:`VALIDATION_DATA`) or trainer.seed.

``RUN_DIR/tune.json`` says what was tuned (recipe, ``--set``, grid, repeats), each
setting's validation figures (every metric: mean, NAME_std and NAME_runs per run), the
choice, the command and the wall time; it is rewritten as each setting ends, so an
interrupted tune keeps its finished settings.  The same command again continues it:
finished settings are read back, a stopped run resumes from its checkpoint, and a
setting whose training stopped is not retried; a value must be written as the first call
wrote it (``1e-4``, not ``0.0001``), since it names the setting's directory.  tune.json
holds the SHA-256 of the recipe as read (``recipe_sha256``): a recipe edited since the
tune began is refused, since its earlier settings trained another recipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archlab.config import apply_overrides, parse_override, read_recipe
from archlab.errors import ConfigError
from archlab.io import atomic_write_text, to_json
from archlab.run import REPEAT_LABELS, resolve, train_repeats
from archlab.tasks import HIGHER_IS_BETTER, get_task
from archlab.train import TrainingStopped, rundir

TUNE_FILE = "tune.json"
# data keys that change which examples are validated on
VALIDATION_DATA = frozenset({"data.dataset", "data.folds", "data.fold", "data.split_seed"})


@dataclass
class Repeats:
    """What each setting is trained over: ``key`` (data.fold, trainer.seed) and its values."""

    key: str
    values: list[int]
    option: str  # the command-line option that chose them, for messages and the command

    @property
    def label(self) -> str:
        return REPEAT_LABELS[self.key]


def parse_grid(texts: list[str], overrides: list[str]) -> dict[str, list[str]]:
    """``--grid KEY=V1,V2,...`` options as {KEY: [V1, V2, ...]}, the values as typed.

    Commas inside brackets belong to the value (``model.channels=[16,16],[32,32]``).
    """
    if not texts:
        raise ConfigError(
            "give at least one --grid KEY=V1,V2,... (e.g. --grid trainer.lr=1e-4,2e-4)"
        )
    fixed = {_key(text) for text in overrides}
    grid: dict[str, list[str]] = {}
    for text in texts:
        try:
            section, field, raw = parse_override(text)
        except ConfigError as exc:  # its message names --set
            raise ConfigError(str(exc).replace("--set", "--grid", 1)) from None
        key = f"{section}.{field}"
        values = _split_values(raw)
        if not any(values):
            raise ConfigError(
                f"--grid {text!r} lists no values; give them after '=', comma-separated"
            )
        if "" in values:
            raise ConfigError(f"--grid {text!r} has an empty value between its commas")
        if len({_same(v) for v in values}) < len(values):
            raise ConfigError(f"--grid {text!r} lists a value twice")
        if key in grid:
            raise ConfigError(f"--grid names {key} twice; list all its values in one --grid")
        if key in fixed:
            raise ConfigError(f"{key} is both in --grid and in --set; keep it in one of them")
        grid[key] = values
    return grid


def _key(override: str) -> str:
    """``"trainer.lr=1e-4"`` -> ``"trainer.lr"``."""
    section, field, _ = parse_override(override)
    return f"{section}.{field}"


def _same(value: str) -> object:
    """What ``value`` means, so that one number written two ways (``1e-4``, ``0.0001``) is
    one value: a float where it reads as one, else the text."""
    try:
        return float(value)
    except ValueError:
        return value.strip()


def _split_values(raw: str) -> list[str]:
    """``"1e-4,2e-4"`` -> ["1e-4", "2e-4"]; commas within [] or {} do not split."""
    values, depth, current = [], 0, ""
    for char in raw:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return [*values, current.strip()]


def settings_of(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, the first key varying slowest."""
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def setting_name(setting: dict[str, str]) -> str:
    """A setting as its directory is named: ``trainer.lr=1e-4,model.dropout=0.1``."""
    return ",".join(f"{key}={value}" for key, value in setting.items()).replace("/", "_")


def plan_repeats(
    recipe_name: str, overrides: list[str], on_folds: list[int] | None, seeds: int | None
) -> Repeats:
    """The runs of each setting: ``--on-folds K...``, ``--seeds N`` or one run (the recipe's
    seed); checked against the recipe's task."""
    if on_folds is not None and seeds is not None:
        raise ConfigError("give --on-folds or --seeds, not both")
    recipe_raw = read_recipe(recipe_name)
    recipe = resolve(apply_overrides(recipe_raw, overrides))
    if on_folds is not None:
        if "fold" not in recipe.task.data_keys():
            raise ConfigError(
                f"the {recipe.task.name} task has no data.fold, so --on-folds has nothing to "
                "vary; tune over seeds with --seeds N"
            )
        if not on_folds or len(set(on_folds)) < len(on_folds):
            raise ConfigError("--on-folds takes one or more different folds, e.g. --on-folds 0 1")
        if "data.fold" in {_key(text) for text in overrides}:
            raise ConfigError("--on-folds sets data.fold; leave data.fold out of --set")
        for fold in on_folds:
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # notes said once already
                    resolve(apply_overrides(recipe_raw, [*overrides, f"data.fold={fold}"]))
            except ConfigError as exc:
                raise ConfigError(f"--on-folds {fold}: {exc}") from None
        return Repeats("data.fold", list(on_folds), "--on-folds " + " ".join(map(str, on_folds)))
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds takes a positive number of seeds, got {seeds}")
    first = recipe.trainer.seed
    n = seeds or 1
    return Repeats("trainer.seed", list(range(first, first + n)), f"--seeds {n}" if seeds else "")


def check_settings(
    recipe_name: str, overrides: list[str], grid: dict[str, list[str]], repeats: Repeats
) -> None:
    """Resolve every run of every setting, so a value that does not fit its key (or the
    other keys) is refused before anything trains."""
    if "data.fold" in grid and repeats.key == "data.fold":
        raise ConfigError("data.fold is what --on-folds varies; it cannot be in --grid too")
    for key in grid:
        if key.startswith("task.") or key in VALIDATION_DATA:
            raise ConfigError(
                f"{key} cannot be in --grid: it changes the task or the validation set, and "
                "figures on different validation sets do not compare; tune on one of them"
            )
    if "trainer.seed" in grid:
        raise ConfigError(
            "trainer.seed cannot be in --grid: a seed chosen on validation is chosen noise; "
            "average over seeds with --seeds N instead"
        )
    raw = read_recipe(recipe_name)
    names = [setting_name(s) for s in settings_of(grid)]
    if len(set(names)) < len(names):
        raise ConfigError("two settings of the grid would share a directory name; change a value")
    if any(len(name.encode()) > 255 for name in names):  # found now, not after hours
        raise ConfigError(
            "a setting's directory name (KEY=VALUE,...) would be longer than 255 bytes; "
            "tune fewer keys at once, or shorter values"
        )
    with contextlib.redirect_stderr(io.StringIO()):  # the notes of resolving, once each
        for setting in settings_of(grid):
            sets = [f"{k}={v}" for k, v in setting.items()]
            for value in repeats.values:
                resolve(apply_overrides(raw, [*overrides, *sets, f"{repeats.key}={value}"]))


def command_line(
    recipe_name: str, grid: dict[str, list[str]], repeats: Repeats, overrides: list[str], out: Path
) -> str:
    words = ["archlab", "tune", recipe_name]
    for key, values in grid.items():
        words += ["--grid", f"{key}={','.join(values)}"]
    words += repeats.option.split()
    for text in overrides:
        words += ["--set", text]
    return shlex.join([*words, "--out", str(out)])


def tune(
    recipe_name: str,
    overrides: list[str],
    grid: dict[str, list[str]],
    repeats: Repeats,
    *,
    out: str | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Train every setting of ``grid`` (unless done in ``out`` already) and choose one.

    Returns RUN_DIR and what tune.json holds.  A KeyboardInterrupt leaves tune.json
    with the settings finished so far.
    """
    check_settings(recipe_name, overrides, grid, repeats)
    raw = read_recipe(recipe_name)
    metric = get_task(str(apply_overrides(raw, overrides)["task"]["name"])).metric
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    what = {
        "recipe": recipe_name,
        "set": list(overrides),
        "repeats": {"key": repeats.key, "values": repeats.values},
        "recipe_sha256": recipe_digest(raw),
    }
    claim, earlier = _claim(Path(out) if out else None, recipe_name, what, grid)
    run_dir = claim.run_dir
    state = {
        **what,
        "grid": grid,
        "metric": metric,
        "split": "val",
        "better": better,
        "settings": [],
        "choice": None,
        "finished": False,
        "command": command_line(recipe_name, grid, repeats, overrides, run_dir),
        "wall_seconds": earlier.get("wall_seconds", 0.0),
    }
    failed = {s["name"]: s for s in earlier.get("settings", []) if s.get("status") == "failed"}
    started = time.perf_counter()
    settings = settings_of(grid)
    _say(f"tuning {recipe_name} in {run_dir}: {len(settings)} settings, each on "
         f"{repeats.label} {', '.join(map(str, repeats.values))}; choosing by {better} "
         f"val {metric}")  # fmt: skip
    if not (run_dir / TUNE_FILE).is_file():  # a tune killed in its first setting continues
        _save(run_dir, state, started)
    try:
        for i, setting in enumerate(settings, 1):
            name = setting_name(setting)
            sets = [f"{k}={v}" for k, v in setting.items()]
            head = f"[{i}/{len(settings)}] {name}"
            if name in failed:
                _say(f"{head}: stopped in an earlier call ({failed[name]['error']}); not retried")
                state["settings"].append(failed[name])
                continue
            done = (run_dir / name / "results.json").is_file()
            _say(f"{head}: {'finished earlier, read back' if done else 'training'}")
            one = time.perf_counter()
            try:
                _, results = train_repeats(
                    recipe_name,
                    [*overrides, *sets],
                    key=repeats.key,
                    values=repeats.values,
                    label=repeats.label,
                    out=str(run_dir / name),
                    progress=progress,
                    keep_finished=True,
                )
            except TrainingStopped as exc:
                entry = {"name": name, "set": sets, "status": "failed", "error": str(exc)}
                _say(f"{head}: stopped: {exc}")
            else:
                entry = {
                    "name": name,
                    "set": sets,
                    "status": "done",
                    "val": results.get("val", {}),
                    "train_seconds": results.get("train", {}).get("seconds"),
                }
                _say(f"{head}: val {metric} {_mean_std(entry, metric)} "
                     f"({time.perf_counter() - one:.0f} s)")  # fmt: skip
            state["settings"].append(entry)
            _save(run_dir, state, started)
        state["choice"] = choose(state["settings"], metric, better)
        state["finished"] = True
    except KeyboardInterrupt:
        _say(f"interrupted; the finished settings are kept; continue with: {state['command']}")
        raise
    finally:
        state["wall_seconds"] = _save(run_dir, state, started)
        claim.release()
    return run_dir, state


def choose(settings: list[dict], metric: str, better: str) -> dict | None:
    """The setting with the best mean validation ``metric`` (the first of equals); None
    if no setting has one."""
    scored = [
        s
        for s in settings
        if s["status"] == "done"
        and s["val"].get(metric) is not None
        and math.isfinite(s["val"][metric])  # a NaN compares as neither better nor worse
    ]
    if not scored:
        return None
    sign = -1.0 if better == "higher" else 1.0
    best = min(scored, key=lambda s: sign * s["val"][metric])  # min keeps the first of equals
    return {"name": best["name"], "set": best["set"], f"val_{metric}": best["val"][metric]}


def table(state: dict) -> str:
    """The settings and their validation metric (mean ± std over the runs), and the choice."""
    metric, repeats = state["metric"], state["repeats"]
    runs = f"{REPEAT_LABELS[repeats['key']]} {', '.join(map(str, repeats['values']))}"
    header = f"val {metric} ({runs})"
    width = max(len("setting"), *(len(s["name"]) for s in state["settings"]))
    lines = [f"{'setting':<{width}}  {header}"]
    chosen = (state["choice"] or {}).get("name")
    for s in state["settings"]:
        figure = _mean_std(s, metric) if s["status"] == "done" else f"stopped: {s['error']}"
        mark = "  <- chosen" if s["name"] == chosen else ""
        lines.append(f"{s['name']:<{width}}  {figure}{mark}")
    if chosen is None:
        lines.append("no setting has a validation figure: nothing chosen")
    else:
        sets = " ".join(f"--set {shlex.quote(s)}" for s in [*state["set"], *state["choice"]["set"]])
        lines.append(f"chosen ({state['better']} val {metric} is better): {chosen}")
        lines.append(f"train it with: archlab train {state['recipe']} {sets}")
    return "\n".join(lines)


def _mean_std(setting: dict, metric: str) -> str:
    val = setting["val"]
    if val.get(metric) is None:
        return "—"
    runs = val.get(f"{metric}_runs", [val[metric]])
    spread = f" ± {val[f'{metric}_std']:.4f}" if len(runs) > 1 else ""
    return f"{val[metric]:.4f}{spread}"


def recipe_digest(recipe: dict) -> str:
    """SHA-256 of a recipe as read (its keys sorted), so that an edit is noticed."""
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _claim(
    run_dir: Path | None, recipe_name: str, what: dict, grid: dict[str, list[str]]
) -> tuple[rundir.Claim, dict]:
    """RUN_DIR for this tune, and the tune.json an earlier call of the same tune left there.

    A value the earlier call wrote another way (``0.0001`` for ``1e-4``) is refused: its
    setting's directory is named as first written."""
    if run_dir is None or not (run_dir / TUNE_FILE).is_file():
        if run_dir is not None and run_dir.is_dir() and any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} already holds files but no {TUNE_FILE}; choose another --out"
            )
        return rundir.claim_new(run_dir, f"{Path(recipe_name).stem}-tune"), {}
    earlier = json.loads((run_dir / TUNE_FILE).read_text("utf-8"))
    for key, value in what.items():
        if key != "recipe_sha256" and earlier.get(key) != value:
            raise ConfigError(
                f"{run_dir} holds a tune with another {key} ({earlier.get(key)!r}, not "
                f"{value!r}); give another --out, or the same recipe, --set and folds or seeds"
            )
    if earlier.get("recipe_sha256") != what["recipe_sha256"]:
        why = (
            "as it read before an edit (the recipe's SHA-256 differs), so its settings trained "
            "another recipe"
            if "recipe_sha256" in earlier
            else "begun before tune.json recorded the recipe's SHA-256, so an edit since cannot "
            "be ruled out"
        )
        raise ConfigError(f"{run_dir} holds a tune of {recipe_name} {why}; give another --out")
    for key, values in grid.items():
        for value in values:
            for before in earlier.get("grid", {}).get(key, []):
                if before != value and _same(before) == _same(value):
                    raise ConfigError(
                        f"{run_dir} has {key}={before} from an earlier call; write it as "
                        f"{before}, not {value}, so that its runs are found"
                    )
    return rundir.claim_existing(run_dir), earlier


def _save(run_dir: Path, state: dict, started: float) -> float:
    """Write tune.json, with the wall time of the earlier calls and of this one so far
    (``state`` holds the earlier calls'); that time."""
    wall = round(state["wall_seconds"] + time.perf_counter() - started, 2)
    atomic_write_text(
        run_dir / TUNE_FILE, to_json({**state, "wall_seconds": wall}, indent=2) + "\n"
    )
    return wall


def _say(message: str) -> None:
    print(f"archlab tune: {message}", file=sys.stderr, flush=True)
