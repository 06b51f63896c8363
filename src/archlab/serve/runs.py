"""The runs a server holds, and what each can do: its verbs, asked of its task.

A run is named by its directory's name (or ``NAME=RUN_DIR``); a request names a run,
never a path.  The verbs served are the task's (:attr:`archlab.tasks.Task.verbs`),
plus ``classify`` where ``predict`` answers with a class: ``classify`` gives every
class's probability, ``predict`` the task's own answer (a label and its probability,
a value, a ranking).  A repeated run's directory (``--seeds``, ``--folds``,
``--splits``) predicts and classifies as its members' ensemble, as ``archlab
predict`` does; its other verbs need one member's directory.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archlab.errors import ArchlabError
from archlab.run import LoadedRun, RunGroup, load
from archlab.tasks import FILE_INPUTS, Task

# what the server can be asked, in the order the playground shows it
SERVED_VERBS = ("generate", "translate", "classify", "predict", "sample", "embed")
GROUP_VERBS = ("classify", "predict")  # what a repeated run's ensemble answers
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ServedRun:
    name: str
    run_dir: Path
    run: LoadedRun | RunGroup
    task_cls: type[Task]
    verbs: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    batch: Any = None  # a BatchWorker, for GPT runs

    @property
    def single(self) -> LoadedRun:
        """The run itself (verbs other than predict and classify are refused for groups)."""
        assert isinstance(self.run, LoadedRun)
        return self.run

    @property
    def task(self) -> Task:
        run = self.run
        return run.members[0].task if isinstance(run, RunGroup) else run.task

    def cannot(self, verb: str) -> str:
        """Why this run does not serve ``verb``: one sentence."""
        article = "an" if self.task_cls.name[0] in "aeiou" else "a"
        kind = f"{article} {self.task_cls.name} run"
        if verb in self.task_cls.verbs or (verb == "classify" and "predict" in self.task_cls.verbs):
            if isinstance(self.run, RunGroup) and verb not in GROUP_VERBS:
                return (
                    f"{self.name} is a repeated run ({len(self.run)} members), which can only "
                    f"{' and '.join(GROUP_VERBS)} as an ensemble; serve one member's directory "
                    f"to {verb}"
                )
            if verb == "classify":
                return f"{self.name} holds {kind}, whose predictions are not classes; use predict"
        can = ", ".join(self.verbs) or "nothing but be listed"
        return f"{self.name} holds {kind}, which cannot {verb} (it can: {can})"


def parse_run_args(args: list[str]) -> list[tuple[str, Path]]:
    """``RUN_DIR`` or ``NAME=RUN_DIR`` arguments -> (name, directory), names unique."""
    out: list[tuple[str, Path]] = []
    for arg in args:
        name, sep, path = arg.partition("=")
        if not sep or not name or Path(arg).exists():
            name, path = Path(arg).resolve().name, arg
        if not NAME.match(name):
            raise ArchlabError(
                f"{name!r} cannot name a run in a URL (letters, digits, '.', '_' and '-'); "
                f"name it with NAME={path}"
            )
        if name in [n for n, _ in out]:
            raise ArchlabError(
                f"two runs are named {name}; name them apart with NAME=RUN_DIR, e.g. "
                f"{name}-2={path}"
            )
        out.append((name, Path(path)))
    if not out:
        raise ArchlabError("give at least one RUN_DIR to serve")
    return out


def load_served(name: str, run_dir: Path) -> ServedRun:
    """Load the run in ``run_dir`` and find the verbs it serves."""
    run = load(run_dir)
    group = isinstance(run, RunGroup)
    task_cls = run.task_class() if group else type(run.task)
    task = run.members[0].task if group else run.task
    can = task_cls.verbs if group else run.verbs  # a single run's: what its model can do
    verbs = []
    for verb in SERVED_VERBS:
        declared = verb in can
        if verb == "classify":
            declared = "predict" in can and task.prediction_labels() is not None
        if declared and (not group or verb in GROUP_VERBS):
            verbs.append(verb)
    served = ServedRun(name, Path(run_dir), run, task_cls, tuple(verbs))
    served.info = describe(served)
    return served


def describe(served: ServedRun) -> dict[str, Any]:
    """What ``GET /v1/runs`` says of a run."""
    run, task = served.run, served.task
    group = isinstance(run, RunGroup)
    config = run.members[0].config if group else run.config
    results: dict[str, Any] = {}
    try:
        raw = json.loads((served.run_dir / "results.json").read_text("utf-8"))
        for split in ("val", "test"):
            if isinstance(raw.get(split), dict):
                results[split] = {
                    k: v
                    for k, v in raw[split].items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
    except (OSError, ValueError):
        pass
    model = config.get("model", {})
    info: dict[str, Any] = {
        "name": served.name,
        "task": served.task_cls.name,
        "model": model.get("name"),
        "verbs": list(served.verbs),
        "results": results,
        "members": len(run) if group else None,
        "inputs": [
            {"name": n, "kind": FILE_INPUTS.get(n, "text")} for n in served.task_cls.predict_inputs
        ]
        if "predict" in served.verbs
        else [],
        "labels": task.prediction_labels() if "classify" in served.verbs else None,
        "predicts": served.task_cls.predicts,  # "query": link prediction
        "options": sorted(served.task_cls.predict_options),
    }
    if "generate" in served.verbs:
        info["context"] = model.get("block_size")
    if "sample" in served.verbs:
        info["conditional"] = bool(model.get("num_classes"))
    return info


# ----- the verbs, run synchronously in the inference thread -----


def generate_text(served: ServedRun, body: Any, emit, should_stop) -> str | None:
    """The task's ``generate_stream``, piece by piece (runs that are not batched)."""
    run = served.single
    pieces = run.task.generate_stream(
        run.model,
        body.prompt,
        max_new_tokens=body.max_new_tokens,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        seed=body.seed,
    )
    next(pieces)  # the prompt itself
    for piece in pieces:
        reason = should_stop()
        if reason:
            return reason
        emit(piece)
    return None


def translate(served: ServedRun, text: str, beam: int | None, attention: bool) -> dict:
    run = served.single
    if attention:
        return run.task.translate_with_attention(run.model, text, beam)
    return {"translation": run.task.translate(run.model, text, beam)}


def predict(served: ServedRun, inputs: list[str], options: dict[str, Any]) -> list[dict]:
    run = served.run
    if served.task_cls.predicts == "query" and options.get("side") == "head":
        inputs = inputs[::-1]  # ENTITY RELATION -> the command line's RELATION TAIL
    if isinstance(run, RunGroup):
        if options:
            return run.members[0].task.predict_ensemble(
                [m.model for m in run.members], inputs, **options
            )
        return run.predict(inputs)
    if options:
        return run.task.predict(run.model, inputs, **options)
    return run.task.predict(run.model, inputs)


def classify(served: ServedRun, inputs: list[str]) -> dict | str:
    """Every class's probability (the members' mean for a group), or why it cannot be."""
    run = served.run
    members = run.members if isinstance(run, RunGroup) else [run]
    scores = [m.task.predict_scores(m.model, inputs)[0] for m in members]
    reasons = [s for s in scores if isinstance(s, str)]
    if reasons:
        return reasons[0]
    mean = torch.stack([s.detach().double().flatten() for s in scores]).mean(0)
    labels = served.task.prediction_labels()
    k = int(mean.argmax())
    return {
        "label": labels[k],
        "probability": float(mean[k]),
        "labels": list(labels),
        "probabilities": mean.tolist(),
    }


def sample_png(served: ServedRun, n: int, seed: int) -> tuple[bytes, str]:
    run = served.single
    with tempfile.TemporaryDirectory(prefix="archlab-serve-") as folder:
        out = Path(folder) / "grid.png"
        layout = run.task.sample(run.model, out, n=n, seed=seed)
        return out.read_bytes(), layout


def embed(served: ServedRun, texts: list[str]) -> list[list[float]]:
    """The task's ``embed(model, texts)``: one vector per text."""
    run = served.single
    vectors = run.task.embed(run.model, texts)
    return [list(map(float, v)) for v in vectors]


def smiles_svg(smiles: str, size: int = 300) -> str | None:
    """RDKit's 2-D drawing of a molecule as SVG, or None if RDKit cannot parse it."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles.strip()) if smiles.strip() else None
    if mol is None:
        return None
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def check_image(data: bytes, max_pixels: int) -> None:
    """Refuse an image whose pixel count is over ``max_pixels`` before decoding it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            w, h = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return  # the task says what is wrong with it
    if w * h > max_pixels:
        raise ArchlabError(
            f"the image is {w} x {h} pixels, over this server's limit of {max_pixels:,} pixels"
        )


def check_audio(path: Path, max_seconds: float) -> None:
    """Refuse a sound longer than ``max_seconds`` before reading it whole."""
    try:
        import soundfile

        seconds = soundfile.info(str(path)).duration
    except Exception:  # unreadable: the task says what is wrong with it
        return
    if seconds > max_seconds:
        raise ArchlabError(
            f"the sound lasts {seconds:.1f} s, over this server's limit of {max_seconds:g} s"
        )
