"""What a user does with trained runs: predict, eval and the other verbs on repeated runs,
per-input errors, streamed generation, capped sample grids, file modes, recipe listing."""

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from archlab.cli import _recipe_summary, main
from archlab.config import RECIPE_DIR, list_recipes
from archlab.errors import ArchlabError
from archlab.io import atomic_write, atomic_write_text
from archlab.run import LoadedRun, RunGroup, load, train
from archlab.tasks import describe_predictions
from archlab.tasks.char_lm import decode_stream
from tests.conftest import TINY_GPT, cli, require_data

TINY_MPNN = [
    "model.dropout=0",
    "model.hidden=16",
    "model.ffn_hidden=16",
    "model.depth=1",
    "trainer.max_epochs=1",
    "trainer.batch_size=50",
    "trainer.warmup_steps=2",
]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    require_data("shakespeare/input.txt")
    out = tmp_path_factory.mktemp("verbs") / "gpt"
    run_dir, _ = train(
        "gpt-shakespeare-char", [*TINY_GPT, "trainer.max_steps=2"], out=str(out), progress=False
    )
    return run_dir


@pytest.fixture(scope="module")
def esol_seeds(tmp_path_factory) -> Path:
    """``train gnn-esol --seeds 2`` (with the recipe's RDKit 2-D descriptors), tiny."""
    pytest.importorskip("rdkit")
    require_data("molecules/delaney-processed.csv")
    out = tmp_path_factory.mktemp("verbs") / "esol"
    sets = [f"--set={s}" for s in TINY_MPNN]
    assert main(["train", "gnn-esol", *sets, "--seeds", "2", "--out", str(out)]) == 0
    return out


def same_metrics(a: dict, b: dict) -> bool:
    """Equal keys and values equal to 1e-5 (relative), lists (NAME_runs) included."""
    flat = [(k, v if isinstance(v, list) else [v]) for k, v in sorted(a.items())]
    other = [(k, v if isinstance(v, list) else [v]) for k, v in sorted(b.items())]
    return [k for k, _ in flat] == [k for k, _ in other] and all(
        x == pytest.approx(y, rel=1e-5) for (_, x), (_, y) in zip(flat, other, strict=True)
    )


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----- 5. repeated runs are runs -----


def test_a_repeated_run_loads_as_a_group_of_its_members(esol_seeds) -> None:
    group = load(esol_seeds)
    assert isinstance(group, RunGroup) and len(group) == 2
    assert (group.key, group.label, group.values) == ("trainer.seed", "seed", [0, 1])
    assert [run.run_dir.name for run in group.members] == ["seed-0", "seed-1"]
    assert all(isinstance(run, LoadedRun) for run in group.members)
    assert group.member(1) is group.member("seed-1") is group.members[1]
    with pytest.raises(ArchlabError, match=r"has no member '7'; its runs are seed 0, 1"):
        group.member(7)
    # each member evaluates on its own split, and the group aggregates as results.json did
    results = json.loads((esol_seeds / "results.json").read_text())
    assert same_metrics(group.evaluate("test"), results["test"])


def test_eval_and_predict_on_a_repeated_run_use_every_member(esol_seeds, capsys) -> None:
    results = json.loads((esol_seeds / "results.json").read_text())
    assert main(["eval", str(esol_seeds), "--split", "test"]) == 0
    assert same_metrics(json.loads(capsys.readouterr().out), results["test"])
    assert main(["eval", str(esol_seeds), "--split", "test", "--member", "1"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["rmse"] == pytest.approx(results["test"]["rmse_runs"][1], rel=1e-5)

    group = load(esol_seeds)
    values = [run.predict(["CCO"])[0]["value"] for run in group.members]
    (ensemble,) = group.predict(["CCO"])
    assert ensemble["value"] == pytest.approx(sum(values) / 2)
    assert ensemble["value_std"] == pytest.approx(torch.tensor(values).std().item())

    proc = cli("predict", str(esol_seeds), "CCO")
    assert proc.returncode == 0, proc.stderr
    mean, std, smiles = proc.stdout.strip().split("\t")
    assert smiles == "CCO" and float(mean) == pytest.approx(ensemble["value"], abs=1e-4)
    assert float(std) == pytest.approx(ensemble["value_std"], abs=1e-4)
    assert main(["predict", str(esol_seeds), "CCO", "--member", "seed-1"]) == 0
    value, _ = capsys.readouterr().out.strip().split("\t")
    assert float(value) == pytest.approx(values[1], abs=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "RUN", "CCO", "--member", "5"], "has no member '5'; its runs are seed 0, 1"),
        (["eval", "RUN/seed-0", "--member", "0"], "is a single run; leave --member out"),
        (["sample", "RUN", "--out", "x.png"], "cannot sample (it can: predict)"),
    ],
)
def test_member_mistakes_are_one_sentence(esol_seeds, args, message) -> None:
    proc = cli(*(a.replace("RUN", str(esol_seeds)) for a in args))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_other_verbs_on_a_repeated_run_need_a_member(gpt_run, tmp_path) -> None:
    group = tmp_path / "seeds"
    group.mkdir()
    for seed in (3, 4):
        (group / f"seed-{seed}").symlink_to(gpt_run, target_is_directory=True)
    repeats = {"key": "trainer.seed", "values": [3, 4]}
    (group / "results.json").write_text(json.dumps({"val": {}, "repeats": repeats}))
    proc = cli("generate", str(group), "--prompt", "KING", "--max-new-tokens", "3")
    assert proc.returncode == 2, proc.stderr
    assert "holds 2 runs (seed 3, 4); choose one with --member, e.g. --member 3" in proc.stderr
    proc = cli("generate", str(group), "--prompt", "KING", "--max-new-tokens", "3", "--member", "4")
    assert proc.returncode == 0 and proc.stdout.startswith("KING"), proc.stderr


def test_an_unfinished_repeated_run_names_its_members(gpt_run, tmp_path) -> None:
    (tmp_path / "seed-0").symlink_to(gpt_run, target_is_directory=True)
    with pytest.raises(ArchlabError, match="runs seed-0 of a repeated training that did not"):
        load(tmp_path)


def test_an_ensemble_of_classifiers_averages_each_class() -> None:
    members = [
        [torch.tensor([0.9, 0.1]), "the text is empty", torch.tensor([0.4, 0.6])],
        [torch.tensor([0.5, 0.5]), "the text is empty", torch.tensor([0.8, 0.2])],
    ]
    first, bad, third = describe_predictions(["negative", "positive"], members)
    assert first["label"] == "negative" and first["probability"] == pytest.approx(0.7)
    assert first["probability_std"] == pytest.approx(torch.tensor([0.9, 0.5]).std().item())
    assert bad == {"error": "the text is empty"}
    assert third["label"] == "negative" and third["probability"] == pytest.approx(0.6)
    # one model: no spread
    (single,) = describe_predictions(None, [[torch.tensor([-1.5])]])
    assert single == {"value": -1.5}


# ----- 7. molecules with no bonds; one bad input among several -----


def test_molecules_without_bonds_or_heavy_atoms_are_predicted(esol_seeds) -> None:
    from archlab.data.molecules import parse_smiles, rdkit2d

    for smiles in ("[H][H]", "[H+]", "[Na+]", "C"):
        values = rdkit2d(parse_smiles(smiles))  # SPS divides by the heavy atoms: 0 for H2
        assert all(v == v and abs(v) != float("inf") for v in values)
    run = load(esol_seeds).member(0)
    predictions = run.predict(["[H][H]", "[H+]", "C", "CCO"])
    assert all(set(p) == {"value"} for p in predictions), predictions


def test_a_bad_input_gets_its_own_error_line_and_the_others_are_predicted(esol_seeds) -> None:
    run_dir = esol_seeds / "seed-0"
    proc = cli("predict", str(run_dir), "[H][H]", "C1CC", "[H+]", "", "CCO")
    assert proc.returncode == 2
    assert [line.split("\t")[-1] for line in proc.stdout.splitlines()] == ["[H][H]", "[H+]", "CCO"]
    assert proc.stderr.splitlines() == [
        "archlab: error: C1CC: RDKit cannot parse this SMILES",
        "archlab: error: '': the SMILES is empty",
    ]
    (bad,) = load(run_dir).predict(["C1CC"])
    assert bad == {"error": "RDKit cannot parse this SMILES"}


# ----- 9. smaller things -----


def test_generation_streams_the_same_text(gpt_run) -> None:
    run = load(gpt_run)
    kwargs = dict(max_new_tokens=40, temperature=0.9, top_k=10, seed=3)  # past block_size 32
    pieces = list(run.task.generate_stream(run.model, "KING", **kwargs))
    assert pieces[0] == "KING" and len(pieces) == 41
    assert "".join(pieces) == run.task.generate(run.model, "KING", **kwargs)
    ids = torch.tensor([run.task.tokenizer.encode("KING")])
    g = dict(temperature=0.9, top_k=10)
    whole = run.model.generate(ids, 40, generator=torch.Generator().manual_seed(3), **g)
    steps = run.model.generate_stream(ids, 40, generator=torch.Generator().manual_seed(3), **g)
    assert torch.equal(torch.cat([ids, *steps], dim=1), whole)
    with pytest.raises(ArchlabError, match="the prompt is empty"):
        run.task.generate_stream(run.model, "")  # refused at the call, before any piece


def test_decoding_is_incremental_for_words_and_split_characters() -> None:
    from archlab.data.tokenizers import Vocab

    words = Vocab([*Vocab.WORD_SPECIALS, "to", "be", "or"], "word")
    assert list(decode_stream(words, [3], iter([4, 0, 5, 3]))) == ["to", " be", " or", " to"]

    class Bytes:  # a byte-level vocabulary: one character may take several tokens
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    new = iter("é!".encode())
    assert list(decode_stream(Bytes(), list(b"caf"), new)) == ["caf", "é", "!"]


def test_generate_prints_as_it_samples_and_ctrl_c_keeps_the_text(gpt_run) -> None:
    cmd = [sys.executable, "-m", "archlab", "generate", str(gpt_run), "--prompt", "KING"]
    proc = subprocess.Popen(
        [*cmd, "--max-new-tokens", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # as from a terminal, whatever this process inherited (a background job ignores SIGINT)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        start, deadline = b"", time.monotonic() + 120  # loading takes seconds; sampling 1e6 ages
        while len(start) < 10 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1)[0]:
                start += os.read(proc.stdout.fileno(), 10 - len(start))
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert start.startswith(b"KING") and len(start) == 10, "no text before the end"
    assert proc.returncode == 130 and rest.endswith(b"\n")
    assert b"Traceback" not in err and b"interrupted" in err


def test_sample_refuses_a_grid_too_large_to_look_at() -> None:
    from archlab.tasks.gan import MAX_SAMPLES, ImageGenerationData, ImageGenerationTask

    with pytest.raises(ArchlabError, match="a grid holds at most 2,500 images, got 100,000"):
        ImageGenerationTask(ImageGenerationData()).sample(None, "x.png", n=100_000)
    assert MAX_SAMPLES == 2500  # the --n help of `archlab sample` says 2,500


def test_atomic_write_gives_files_the_mode_open_gives(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_write(tmp_path / "b.bin", lambda tmp: Path(tmp).write_bytes(b"1"))
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {0o640}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_every_file_of_a_run_directory_has_the_usual_mode(gpt_run) -> None:
    usual = 0o666 & ~umask()
    names = ("model.safetensors", "model.json", "results.json", "state.pt", "config.yaml")
    for name in names:
        assert stat.S_IMODE((gpt_run / name).stat().st_mode) == usual, name


def test_list_recipes_prints_each_description_whole(capsys) -> None:
    assert main(["list", "recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == len(list_recipes())
    for line in lines:
        assert line.rstrip().endswith((".", ".)", '."')), line


def test_a_recipe_summary_is_never_cut_mid_sentence(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "# A D-MPNN on ESOL (Yang et al. 2019), with descriptors\n"
        "# and random splits.\n"
        "# Reference: 0.555.\n"
        "task:\n  name: molecule_regression\n"
    )
    assert _recipe_summary(path) == (
        "A D-MPNN on ESOL (Yang et al. 2019), with descriptors and random splits."
    )
    path.write_text("task:\n  name: x\n")
    assert _recipe_summary(path) == ""
    for name in list_recipes():
        assert _recipe_summary(RECIPE_DIR / f"{name}.yaml").endswith(".")


def test_train_a_recipe_with_resume_when_the_run_came_from_it(gpt_run, tmp_path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(gpt_run, run_dir)
    proc = cli(
        "train", "gpt-shakespeare-char", "--resume", str(run_dir), "--set=trainer.max_steps=3"
    )
    assert proc.returncode == 0, proc.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
    assert max(steps) == 3
    proc = cli("train", "gnn-esol", "--resume", str(run_dir))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "was not trained from the recipe gnn-esol (its task.name is char_lm" in proc.stderr
