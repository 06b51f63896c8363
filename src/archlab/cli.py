"""The ``archlab`` command line.  It parses and dispatches; the work lives elsewhere.

Errors a user can fix (:class:`archlab.errors.ArchlabError`) are printed to stderr
as one sentence and exit with status 2; a failed run exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from archlab.bench import BENCHMARKS
from archlab.errors import ArchlabError
from archlab.io import to_json


def count_parameters(name: str) -> int:
    """Parameters of model ``name`` at its default config, built on the meta device (no memory)."""
    import torch

    from archlab.registry import create_model

    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from archlab.registry import list_models, model_entry

        rows = [(n, f"{count_parameters(n):,}", model_entry(n).summary) for n in list_models()]
        header = ("model", "parameters", "description")
    elif args.what == "recipes":
        from archlab.config import RECIPE_DIR, list_recipes

        rows = [(n, _recipe_summary(RECIPE_DIR / f"{n}.yaml"), "") for n in list_recipes()]
        header = ("recipe", "what it reproduces", "")
    elif args.what == "checkpoints":
        from archlab.data import data_root, get_checkpoint, list_checkpoints

        rows = []
        for name in list_checkpoints():
            c = get_checkpoint(name)
            rows.append((name, f"{c.description}; {c.licence}; {c.page}", ""))
        header = ("checkpoint", f"description (under {data_root()}/pretrained)", "")
    else:
        from archlab.data import data_root, get_dataset, list_datasets

        rows = [(n, get_dataset(n).description, "") for n in list_datasets()]
        header = ("dataset", f"description (data root: {data_root()})", "")
    width = max(len(r[0]) for r in [header, *rows])
    if args.what == "models":
        print(f"{header[0]:<{width}}  {header[1]:>12}  {header[2]}")
        for name, n_params, summary in rows:
            print(f"{name:<{width}}  {n_params:>12}  {summary}")
    else:
        print(f"{header[0]:<{width}}  {header[1]}")
        for name, summary, _ in rows:
            print(f"{name:<{width}}  {summary}")
    return 0


def _recipe_summary(path) -> str:
    """The recipe header's first sentence: its comment lines up to one that ends a sentence.

    The header's first line is meant to be that sentence; one that runs on to the
    next line is joined with it, never cut.
    """
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
        if lines[-1].rstrip(")\"'").endswith((".", "!", "?")):
            break
    return " ".join(line for line in lines if line)


def cmd_train(args: argparse.Namespace) -> int:
    from archlab.run import is_repeated, load_group, resume_repeats, train, train_repeats
    from archlab.train import TrainingStopped

    if not args.recipe and not args.resume:
        raise ArchlabError("give either a RECIPE to train or --resume RUN_DIR")
    overrides = train_overrides(args)
    repeats = repeat_counts(args)
    if repeats and (args.resume or len(repeats) > 1 or repeats[0] < 1):
        raise ArchlabError(
            "--seeds N, --folds N or --splits N takes a positive N, once; a repeated training "
            "that stopped continues with --resume RUN_DIR alone"
        )
    if args.resume and args.out:
        raise ArchlabError("--resume continues RUN_DIR where it is: give it without --out")
    repeated = bool(args.resume) and is_repeated(args.resume)
    if repeated and overrides:
        raise ArchlabError(
            f"{args.resume} holds a repeated training, which continues as it began: give "
            "--resume RUN_DIR without --set, --seed or --device (or resume one of its runs, "
            "RUN_DIR/seed-N, with them)"
        )
    if args.resume and not repeated and not (Path(args.resume) / "config.yaml").is_file():
        load_group(args.resume)  # says which runs an unfinished repeated training holds
    if args.recipe and args.resume:
        _check_resumed_recipe(args.recipe, args.resume)
    try:
        if repeated:
            run_dir, results = resume_repeats(args.resume)
        elif repeats:
            key, label, values, overrides = repeat_plan(args, overrides)
            run_dir, results = train_repeats(
                args.recipe, overrides, key=key, label=label, out=args.out, values=values
            )
        else:
            recipe = None if args.resume else args.recipe  # a resumed run follows its config.yaml
            run_dir, results = train(recipe, overrides, out=args.out, resume=args.resume)
    except TrainingStopped as exc:
        print(f"archlab: training stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        where = getattr(exc, "run_dir", None)  # archlab.run.RunInterrupted names it
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            said = (f"; the run is saved, continue it with `archlab train --resume {where}`"
                    if where else " before the run saved anything; nothing to resume")  # fmt: skip
            print(f"archlab: interrupted{said}", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(to_json({k: v for k, v in results.items() if k in ("val", "test")}))
        print(f"run directory: {run_dir}", file=sys.stderr)
    return 0


def _check_resumed_recipe(recipe_name: str, run_dir: str) -> None:
    """Refuse ``train RECIPE --resume RUN_DIR`` when the run was not trained from RECIPE.

    Single runs do not record their recipe's name, so the test is what the recipe
    fixes and --set rarely changes: its task, model and dataset, as the run has them
    (a repeated training's: its recipe.yaml with its overrides).  The resumed run
    follows its own config.yaml either way.
    """
    from archlab.config import read_recipe
    from archlab.run import is_repeated, read_repeats, read_run_config

    run = read_repeats(run_dir).recipe() if is_repeated(run_dir) else read_run_config(Path(run_dir))
    recipe = read_recipe(recipe_name)
    for section, key in (("task", "name"), ("model", "name"), ("data", "dataset")):
        ours, theirs = run.get(section, {}).get(key), recipe.get(section, {}).get(key)
        if ours is not None and theirs is not None and ours != theirs:
            raise ArchlabError(
                f"{run_dir} was not trained from the recipe {recipe_name} (its {section}.{key} "
                f"is {ours}, the recipe's {theirs}); give --resume {run_dir} alone"
            )


def train_overrides(args: argparse.Namespace) -> list[str]:
    """A train command's overrides: its --set values, then --seed and --device."""
    overrides = list(args.set)
    for key in ("seed", "device"):
        if getattr(args, key) is not None:
            overrides.append(f"trainer.{key}={getattr(args, key)}")
    return overrides


def repeat_counts(args: argparse.Namespace) -> list[int]:
    """The N a train command gives of ``--seeds``, ``--folds`` and ``--splits`` (at most one
    is allowed)."""
    return [n for n in (args.seeds, args.folds, args.splits) if n is not None]


def repeat_plan(
    args: argparse.Namespace, overrides: list[str]
) -> tuple[str, str, list[int], list[str]]:
    """What ``--seeds``, ``--folds`` or ``--splits`` varies: (key, run label, values, overrides)."""
    if args.seeds is not None:
        first = int(args.seed or 0)
        return "trainer.seed", "seed", list(range(first, first + args.seeds)), overrides
    if args.folds is not None:
        _check_repeatable(args.recipe, overrides, "--folds")
        folds = [*overrides, f"data.folds={args.folds}"]
        return "data.fold", "fold", list(range(args.folds)), folds
    _check_repeatable(args.recipe, overrides, "--splits")
    first = _split_seed(args.recipe, overrides)
    return "data.split_seed", "split", list(range(first, first + args.splits)), overrides


# the data key a task needs for each repeat option, and what the option repeats over
REPEATABLE = {"--folds": ("folds", "folds"), "--splits": ("split_seed", "data splits")}


def _check_repeatable(recipe_name: str, overrides: list[str], option: str) -> None:
    """Refuse ``option`` (--folds, --splits) for a task without its data key, saying what works."""
    from archlab.config import apply_overrides, read_recipe
    from archlab.tasks import get_task

    raw = apply_overrides(read_recipe(recipe_name), overrides)
    task = get_task(str(raw["task"].get("name")))
    fields = task.data_keys()
    key, _ = REPEATABLE[option]
    if key in fields:
        return
    ways = ["over seeds with --seeds N"] + [
        f"over {what} with {other} N"
        for other, (other_key, what) in REPEATABLE.items()
        if other_key in fields
    ]
    raise ArchlabError(
        f"the {task.name} task has no data.{key}, so {option} has nothing to vary; "
        f"repeat it {' or '.join(ways)}"
    )


def _split_seed(recipe_name: str, overrides: list[str]) -> int:
    """The recipe's data.split_seed (after ``--set``), where ``--splits`` starts counting."""
    from archlab.config import apply_overrides, read_recipe
    from archlab.run import resolve

    return resolve(apply_overrides(read_recipe(recipe_name), overrides)).task.data.split_seed


def cmd_tune(args: argparse.Namespace) -> int:
    from archlab.tune import parse_grid, plan_repeats, table, tune

    grid = parse_grid(args.grid, args.set)
    repeats = plan_repeats(args.recipe, args.set, args.on_folds, args.seeds)
    # a setting whose training stops is reported in the table and cannot be chosen; on
    # Ctrl-C, tune says how to continue and main exits with 130
    run_dir, state = tune(args.recipe, args.set, grid, repeats, out=args.out)
    print(table(state))
    print(f"tune.json: {run_dir / 'tune.json'}", file=sys.stderr)
    return 0 if state["choice"] else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from archlab.run import load

    run = _pick_member(load(args.run_dir), args.run_dir, args.member)
    print(to_json(run.evaluate(args.split)))
    return 0


def _pick_member(run, run_dir: str, member: str | None):
    """A repeated run's ``member`` (None: the run, or the group, as loaded)."""
    from archlab.run import RunGroup

    if member is None:
        return run
    if not isinstance(run, RunGroup):
        raise ArchlabError(
            f"--member picks one run of a repeated training (--seeds, --folds, --splits), and "
            f"{run_dir} is a single run; leave --member out"
        )
    return run.member(member)


def _load_run_that(run_dir: str, verb: str, member: str | None = None, group_ok: bool = False):
    """The run in ``run_dir`` (or its ``member``), if its task supports ``verb``; else one error.

    A repeated run's directory gives its group where ``group_ok``, else needs ``member``.
    """
    from archlab.run import RunGroup, load

    run = load(run_dir)
    task_cls = run.task_class() if isinstance(run, RunGroup) else type(run.task)
    if verb not in task_cls.verbs:
        can = ", ".join(sorted(task_cls.verbs)) or "nothing but eval"
        raise ArchlabError(
            f"{run_dir} holds a {task_cls.name} run, which cannot {verb} (it can: {can})"
        )
    if isinstance(run, RunGroup) and member is None and not group_ok:
        raise ArchlabError(
            f"{run_dir} holds {len(run)} runs ({run.label} {', '.join(map(str, run.values))}); "
            f"choose one with --member, e.g. --member {run.values[0]}"
        )
    run = _pick_member(run, run_dir, member)
    if not isinstance(run, RunGroup) and verb not in run.verbs:
        model = run.config["model"]["name"]
        can = ", ".join(sorted(run.verbs)) or "nothing but eval"
        raise ArchlabError(
            f"{run_dir} holds a {task_cls.name} run of model {model}, which cannot {verb} "
            f"(it can: {can})"
        )
    return run


def cmd_generate(args: argparse.Namespace) -> int:
    run = _load_run_that(args.run_dir, "generate", args.member)
    pieces = run.task.generate_stream(
        run.model,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print(flush=True)  # the text so far stays; end its line
        raise
    print()
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    run = _load_run_that(args.run_dir, "translate", args.member)
    print(run.task.translate(run.model, args.text, beam=args.beam))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from archlab.run import RunGroup
    from archlab.tasks import check_predict_options

    run = _load_run_that(args.run_dir, "predict", args.member, group_ok=True)
    task_cls = run.task_class() if isinstance(run, RunGroup) else type(run.task)
    options = {"side": args.side, "top_k": args.top_k}
    check_predict_options(task_cls, options)
    if task_cls.predicts == "query":
        (answer,) = run.predict(args.inputs, **options)
        _print_ranking(answer)
        return 0
    names, n = task_cls.predict_inputs, len(args.inputs)
    if n % len(names):
        raise ArchlabError(
            f"the {task_cls.name} task predicts from groups of {len(names)} files, "
            f"{' '.join(names)} in that order; got {n} file{'s' if n != 1 else ''}"
        )
    k = len(names)
    texts = [" ".join(args.inputs[i : i + k]) for i in range(0, n, k)]
    failed = 0
    for text, prediction in zip(texts, run.predict(args.inputs), strict=True):
        if "error" in prediction:
            shown = text if text.strip() else repr(text)
            print(f"archlab: error: {shown}: {prediction['error']}", file=sys.stderr)
            failed += 1
            continue
        print("\t".join([*map(_predicted, prediction.items()), text]), flush=True)
    return 2 if failed else 0


def _print_ranking(answer: dict) -> None:
    """A link prediction: the query on stderr, then rank, score, entity and the split that
    holds the completed triple (empty if none does), tab-separated."""
    side = answer["side"]
    print(f"{answer['query']}: the best {len(answer['ranking'])} {side}s", file=sys.stderr)
    print(f"rank\tscore\t{side}\tknown")
    for row in answer["ranking"]:
        print(f"{row['rank']}\t{row['score']:.4f}\t{row['entity']}\t{row['known']}", flush=True)


def _predicted(item: tuple[str, object]) -> str:
    """One field of a prediction: the label and the numbers as they are, others named."""
    key, value = item
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    plain = ("label", "probability", "probability_std", "value", "value_std")
    return shown if key in plain else f"{key}={shown}"


def cmd_sample(args: argparse.Namespace) -> int:
    run = _load_run_that(args.run_dir, "sample", args.member)
    layout = run.task.sample(run.model, args.out, n=args.n, seed=args.seed)
    print(f"wrote {args.out} ({layout})", file=sys.stderr)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    empty = [i + 1 for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ArchlabError(f"text {empty[0]} is empty; give each sentence as one argument")
    if args.out and not args.out.endswith(".npy"):
        raise ArchlabError(
            f"--out writes a NumPy .npy file; give a name ending in .npy, not {args.out}"
        )
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise ArchlabError(f"--out {args.out}: its folder does not exist")
    embeddings = _embedder(args.source, args.member)(texts)
    if args.out:
        import numpy as np

        from archlab.io import atomic_write

        array = embeddings.numpy().astype(np.float32)

        def save(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array)

        atomic_write(args.out, save)
        print(f"wrote {args.out} ({array.shape[0]} x {array.shape[1]}, float32)", file=sys.stderr)
    if args.similarity:
        print(_similarity_table(embeddings, texts))
    elif not args.out:
        for text, row in zip(texts, embeddings.tolist(), strict=True):
            print(" ".join(f"{x:.7g}" for x in row) + "\t" + text)
    return 0


def _embedder(source: str, member: str | None):
    """texts -> embeddings for a checkpoint (a registered name or a Hugging Face directory)
    or a run whose task declares the embed verb."""
    from archlab.data.pretrained import is_checkpoint

    path = Path(source)
    if is_checkpoint(source) or (path / "config.json").is_file():
        if member is not None:
            raise ArchlabError(
                f"--member picks one run of a repeated training; {source} is a checkpoint"
            )
        from archlab.interop.sentence_transformers import SentenceEncoder

        return SentenceEncoder.from_pretrained(source).embed
    if not path.exists() and len(path.parts) == 1:
        from archlab.data.pretrained import list_checkpoints

        raise ArchlabError(
            f"{source!r} is neither a registered checkpoint (known: "
            f"{', '.join(list_checkpoints())}) nor a directory"
        )
    return _load_run_that(source, "embed", member).embed


def _similarity_table(embeddings, texts: list[str]) -> str:
    """The cosine similarity of every pair, a row per text: [i], the values, the text."""
    import torch.nn.functional as F

    unit = F.normalize(embeddings.double(), dim=-1)
    cosine = (unit @ unit.T).tolist()
    labels = [f"[{i + 1}]" for i in range(len(texts))]
    first, cell = max(map(len, labels)), max(8, *(len(label) + 1 for label in labels))
    lines = [" " * first + "".join(f"{label:>{cell}}" for label in labels)]
    for label, row, text in zip(labels, cosine, texts, strict=True):
        lines.append(f"{label:<{first}}" + "".join(f"{x:>{cell}.4f}" for x in row) + f"  {text}")
    return "\n".join(lines)


def cmd_baseline(args: argparse.Namespace) -> int:
    from archlab.run import baseline

    if args.folds is not None and args.folds < 2:
        raise ArchlabError(f"--folds takes at least 2 folds, got {args.folds}")
    run_dir, results = baseline(
        args.recipe, list(args.set), args.method, out=args.out, folds=args.folds
    )
    print(to_json({k: v for k, v in results.items() if k in ("val", "test", "baseline")}))
    print(f"run directory: {run_dir}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from archlab.errors import require
    from archlab.serve import Limits, create_app

    uvicorn = require("uvicorn", "serve", "archlab serve (the HTTP server)")
    limits = Limits(**{name: getattr(args, name) for name, _, _ in _limit_options()})
    token = args.token or os.environ.get("ARCHLAB_SERVE_TOKEN") or None
    sock = _listening_socket(args.host, args.port)  # a busy or bad address: one sentence
    with sock:
        app = create_app(args.run_dirs, token=token, limits=limits)
        names = ", ".join(app.state.runs)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"archlab serve: {names} on http://{host}:{sock.getsockname()[1]}/ "
            f"(API: /v1/runs, docs: /docs{'; bearer token required' if token else ''}; "
            "Ctrl-C stops it)",
            file=sys.stderr,
        )

        # Ctrl-C: open generation streams end with an error event, then the server stops
        # (anything still open after SHUTDOWN_SECONDS is cut)
        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame) -> None:
                super().handle_exit(sig, frame)
                app.state.stop_streams()

        config = uvicorn.Config(
            app, log_level=args.log_level, timeout_graceful_shutdown=SHUTDOWN_SECONDS
        )
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again at its end
            Server(config).run(sockets=[sock])
    print("archlab serve: stopped", file=sys.stderr)
    return 0


SHUTDOWN_SECONDS = 5


def _listening_socket(host: str, port: int):
    """A socket bound to ``host:port`` (uvicorn listens on it), or one sentence why not."""
    import socket

    if not 0 <= port <= 65535:
        raise ArchlabError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ArchlabError(f"--host {host}: {exc.strerror or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            why += " (another server is on it: choose another --port)"
        raise ArchlabError(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def _limit_options() -> list[tuple[str, type, object]]:
    from archlab.serve.limits import limit_fields

    return limit_fields()


def cmd_bench(args: argparse.Namespace) -> int:
    from archlab.bench import run_benchmarks

    names = list(BENCHMARKS) if not args.names or args.names == ["all"] else args.names
    options = {k: getattr(args, k) for k in ("dataset", "models", "cases", "epochs", "seeds")}
    run_benchmarks(names, quick=args.quick, out=args.out, options=options)
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from archlab.claims import list_claims, run_claims

    if args.name is None:
        list_claims()
        return 0
    return run_claims(args.name, args.budget, dry_run=args.dry_run)


MEMBER_HELP = (
    "for a RUN_DIR of repeated runs (train --seeds, --folds, --splits): use only the run "
    "of this seed, fold or split seed (its value, e.g. --member 2 for seed-2, not its "
    "position; or its directory name, seed-2)"
)


def _add_member(p: argparse.ArgumentParser, required_for_groups: bool) -> None:
    extra = "; required for such a RUN_DIR" if required_for_groups else ""
    p.add_argument("--member", metavar="K", help=MEMBER_HELP + extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archlab",
        description="Modern neural-network structures, trained and measured against their "
        "reference implementations.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "list",
        help="list models, recipes, datasets or pretrained checkpoints",
        description="List what archlab has.",
    )
    p.add_argument(
        "what",
        nargs="?",
        default="models",
        choices=["models", "recipes", "datasets", "checkpoints"],
        help="what to list (default: models)",
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "train",
        help="train a recipe into a run directory",
        description="Train a shipped recipe (see `archlab list recipes`) or your own YAML file.",
    )
    p.add_argument("recipe", nargs="?", metavar="RECIPE_OR_YAML", help="recipe name or YAML path")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set trainer.max_steps=400 (repeatable)",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/RECIPE-TIME)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped run, as its config.yaml says (with a RECIPE too: only if the "
        "run was trained from it); a repeated training's RUN_DIR (--seeds, --folds, --splits) "
        "continues as it began: finished runs are kept, the stopped one resumes",
    )
    p.add_argument("--seed", type=int, help="same as --set trainer.seed=N")
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train N times (seeds SEED..SEED+N-1) and aggregate; where data.split_seed is "
        "null (the molecule recipes), each seed also draws its own split, as chemprop's --seed",
    )
    p.add_argument(
        "--folds", type=int, metavar="N", help="N-fold cross-validation (tasks with folds)"
    )
    p.add_argument(
        "--splits",
        type=int,
        metavar="N",
        help="train on N data splits (data.split_seed S..S+N-1, S the recipe's, or its seed "
        "where that is null) with one training seed, and aggregate",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], help="same as --set trainer.device=..."
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "tune",
        help="train every setting of a grid and choose one on validation",
        description="Train a recipe once per combination of the --grid values (each as "
        "`archlab train` trains it, over --on-folds or --seeds) into RUN_DIR/SETTING, and "
        "choose the setting with the best mean validation figure of the task's metric "
        "(test figures take no part).  Prints each setting's figure (mean ± std) and the "
        "choice, and writes RUN_DIR/tune.json.  The same command with --out RUN_DIR again "
        "continues an interrupted tune: finished settings are not trained again.",
    )
    p.add_argument("recipe", metavar="RECIPE_OR_YAML", help="recipe name or YAML path")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a recipe key and the values to try, e.g. --grid trainer.lr=1e-4,2e-4 "
        "(repeatable: every combination is trained)",
    )
    p.add_argument(
        "--on-folds",
        type=int,
        nargs="+",
        metavar="K",
        help="train each setting on these folds (data.fold=K; tasks with folds) and average",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train each setting with N seeds (the recipe's trainer.seed and the next N-1) "
        "and average (default: one run)",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key"
    )
    p.add_argument(
        "--out", metavar="RUN_DIR", help="tune directory (default: runs/RECIPE-tune-TIME)"
    )
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "eval",
        help="evaluate a trained run",
        description="Print a run's metrics as one JSON object.  For repeated runs (train "
        "--seeds, --folds, --splits) every member is evaluated on its own data (a fold's test "
        "set, a split seed's split), and each metric NAME is their mean, with NAME_std and "
        "NAME_runs beside it, as in results.json.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--split",
        default="val",
        choices=["val", "test", "affine"],
        help="default: val (affine: the affine-transformed MNIST test set, for image runs)",
    )
    _add_member(p, required_for_groups=False)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "generate",
        help="generate text from a language model run",
        description="Continue a prompt with a trained language model; the text is printed "
        "as it is sampled (Ctrl-C stops it and keeps what was printed).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    _add_member(p, required_for_groups=True)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "translate",
        help="translate a sentence with a translation run",
        description="Translate TEXT with a trained sequence-to-sequence model (beam search).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: the recipe's)")
    _add_member(p, required_for_groups=True)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser(
        "predict",
        help="classify inputs (or predict a property) with a trained run",
        description="Print one tab-separated line per input: the predicted label and its "
        "probability (classifiers) or the predicted value (molecules), then the input; for a "
        "link-prediction run, the top-k completions of one query (HEAD RELATION, or RELATION "
        "TAIL with --head) with their scores, each marked with the split (train, val, test) "
        "that holds the triple, if one does.  For "
        "repeated runs (train --seeds, --folds, --splits) the members predict as an ensemble: "
        "the label of the highest mean probability, that mean and its standard deviation "
        "across members (or the mean value and its standard deviation), as chemprop reports "
        "ensembles; fold and split members were trained on different data, which an ensemble "
        "allows.  An input that cannot be predicted gets an error line on stderr, the others "
        "are still predicted, and the exit status is then 2.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="texts, image files, sound files or SMILES; for an audio-visual run, pairs of "
        "IMAGE AUDIO files; for a link-prediction run, HEAD RELATION (or RELATION TAIL "
        "with --head)",
    )
    side = p.add_mutually_exclusive_group()
    side.add_argument(
        "--tail",
        dest="side",
        action="store_const",
        const="tail",
        help="link prediction: rank the tails of (HEAD, RELATION, ?) (the default)",
    )
    side.add_argument(
        "--head",
        dest="side",
        action="store_const",
        const="head",
        help="link prediction: rank the heads of (?, RELATION, TAIL)",
    )
    p.add_argument(
        "--top-k", type=int, metavar="K", help="link prediction: how many to print (default 10)"
    )
    _add_member(p, required_for_groups=False)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "sample",
        help="draw an image grid from a GAN run",
        description="Write a PNG grid of images generated by a trained GAN "
        "(a class-conditional one draws one row per class).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="the PNG file to write")
    p.add_argument(
        "--n",
        type=int,
        default=64,
        help="images to draw, at most 2,500 (default 64; class-conditional: ceil(N/10) per "
        "class)",  # archlab.tasks.gan.MAX_SAMPLES, not imported: --help stays fast
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    _add_member(p, required_for_groups=True)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "embed",
        help="sentence embeddings from a pretrained checkpoint or a trained run",
        description="Embed each TEXT: the last hidden states of its tokens, pooled and "
        "normalised as the checkpoint's pooling config says (sentence-transformers' "
        "1_Pooling; by default the attention-masked mean, L2-normalised).  CHECKPOINT_OR_RUN "
        "is a registered checkpoint (`archlab list checkpoints`, e.g. all-MiniLM-L6-v2), a "
        "Hugging Face BERT directory, or a run whose task embeds (a BERT classifier).  "
        "Prints one line per text: its numbers, a tab, the text.",
    )
    p.add_argument("source", metavar="CHECKPOINT_OR_RUN")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="sentences, one argument each")
    p.add_argument("--out", metavar="FILE.npy", help="save the (texts, dim) float32 array instead")
    p.add_argument(
        "--similarity",
        action="store_true",
        help="print the cosine similarity matrix of the texts instead of their embeddings",
    )
    _add_member(p, required_for_groups=True)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "baseline",
        help="score a method without a trained network on a recipe's data (forecasting: naive, "
        "ARIMA; sentences: a frozen pretrained encoder + logistic regression)",
        description="Score one of the task's baselines (the forecast task: seasonal_naive, "
        "arima; the classification task: frozen_logreg, which needs model.init_from) by the "
        "evaluation code that scores its networks, on the recipe's data, and write "
        "results.json into a run directory, to compare with trained runs.",
    )
    p.add_argument("recipe", metavar="RECIPE_OR_YAML", help="recipe name or YAML path")
    p.add_argument("--method", required=True, help="the baseline, e.g. seasonal_naive or arima")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key"
    )
    p.add_argument(
        "--out", metavar="RUN_DIR", help="run directory (default: runs/RECIPE-METHOD-TIME)"
    )
    p.add_argument(
        "--folds",
        type=int,
        metavar="N",
        help="score it on each of N cross-validation folds and aggregate (tasks with folds)",
    )
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser(
        "serve",
        help="serve runs over HTTP, with a playground page",
        description="Serve trained runs: an HTTP API (GET /v1/runs; POST "
        "/v1/runs/NAME/generate, translate, classify, predict, sample, embed, each where "
        "the run's task has the verb), its OpenAPI description at /openapi.json and /docs, "
        "and a playground page at /.  A run is named by its directory's name, or NAME=RUN_DIR.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        help="require Authorization: Bearer TOKEN on every API request (or set "
        "ARCHLAB_SERVE_TOKEN, which keeps it out of the process list)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])
    for name, kind, default in _limit_options():
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            metavar="N",
            help=f"default {default:,}",
        )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "bench",
        help="speed and memory against the reference implementations",
        description="Measure archlab against its references in one run and print the ratios.",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run, or all (the default: {', '.join(BENCHMARKS)}); "
        "kge-reference (PyKEEN's own test figures, issue 16's protocol) runs only by name",
    )
    p.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke test")
    p.add_argument("--out", metavar="FILE", help="also write the measurements as JSON here")
    p.add_argument(
        "--dataset", metavar="NAME", help="kge-reference: nations, umls or kinship (default)"
    )
    p.add_argument(
        "--models",
        metavar="LIST",
        help="kge-reference: comma-separated, of transe,distmult,complex,rotate (default: all)",
    )
    p.add_argument(
        "--cases",
        metavar="LIST",
        help="kge: comma-separated, of transe-umls,rotate-umls,complex-umls,transe-wn18rr,"
        "rotate-wn18rr (default: all)",
    )
    p.add_argument("--epochs", type=int, metavar="N", help="kge-reference: default 300")
    p.add_argument("--seeds", type=int, metavar="N", help="kge-reference: seeds 0..N-1 (default 5)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "claims",
        help="the articles' six claims: their verdicts, or run their experiments",
        description="Without NAME: each claim and the verdict recorded in results/. With NAME "
        "(or all): run the claim's experiments at the budget and write its results.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a claim, or all")
    p.add_argument("--budget", choices=("small", "full"), default="small",
                   help="small: all six in about 2 h 15 min here; full: the book's")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    p.set_defaults(func=cmd_claims)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except ArchlabError as exc:
        print(f"archlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _reader_left():
            raise  # another pipe broke: a real error
        # the reader of our output left (`archlab claims | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # as a shell reports SIGPIPE


def _reader_left() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or no real stdout
        return False


if __name__ == "__main__":
    sys.exit(main())
