"""archlab claims: the six claims, their recorded verdicts, and steps that can run."""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from archlab import claims
from archlab.cli import build_parser, repeat_plan, train_overrides
from archlab.config import apply_overrides, is_override, read_recipe, yaml_text
from archlab.errors import ArchlabError
from archlab.run import resolve
from tests.conftest import cli


def test_every_claim_of_the_mission_is_wired_at_both_budgets() -> None:
    assert sorted(c.number for c in claims.CLAIMS.values()) == [1, 2, 3, 4, 5, 6]
    for claim in claims.CLAIMS.values():
        assert set(claim.steps) == set(claims.BUDGETS) and all(claim.steps.values())
    assert sum(c.minutes["small"] for c in claims.CLAIMS.values()) <= 135  # "about 2 hours"


def began_single(run_dir, recipe, overrides, **changed) -> None:
    """Write config.yaml as a single run of ``recipe`` with ``overrides`` writes it, every
    value typed; ``changed`` (section_key=value) edits the recipe first."""
    raw = read_recipe(recipe)
    for name, value in changed.items():
        section, key = name.split("_", 1)
        raw[section][key] = value
    raw = apply_overrides(raw, overrides)
    typed = {s: {k: yaml.safe_load(v) if is_override(v) else v for k, v in vs.items()}
             for s, vs in raw.items()}  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml_text(typed))


def began_repeated(run_dir, argv: str) -> None:
    """Write repeats.json and recipe.yaml as ``archlab ARGV`` (a repeated train) writes them."""
    args = build_parser().parse_args(shlex.split(argv))
    key, label, values, sets = repeat_plan(args, train_overrides(args))
    spec = {"recipe": args.recipe, "overrides": sets, "label": label, "key": key, "values": values}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml_text(read_recipe(args.recipe)))
    (run_dir / "repeats.json").write_text(json.dumps(spec))


@pytest.mark.parametrize("budget", claims.BUDGETS)
def test_every_training_step_is_a_valid_command_and_recipe(budget, tmp_path, monkeypatch) -> None:
    """... and one it began, interrupted, resumes (its settings are read back as given)."""
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    parser = build_parser()
    for claim in claims.CLAIMS.values():
        for step in claim.steps[budget]:
            words = shlex.split(step)
            if words[0] != "archlab":
                continue
            args = parser.parse_args(words[1:])
            assert args.func.__name__ == "cmd_train", step
            raw = apply_overrides(read_recipe(args.recipe), args.set or [])
            resolve(raw)  # every --set key exists and every value is allowed
            began = tmp_path / args.out
            if args.seeds:
                began_repeated(began, shlex.join(words[1:]))
            else:
                began_single(began, args.recipe, train_overrides(args))
            assert claims.continued(step)[1] == f"resumes {args.out}", step
            shutil.rmtree(began)


def test_every_script_step_names_a_subcommand_and_options_it_has() -> None:
    seen = {}
    for claim in claims.CLAIMS.values():
        for budget in claims.BUDGETS:
            for step in claim.steps[budget]:
                words = shlex.split(step)
                if words[0] != "script":
                    continue
                script = claims.ROOT / "scripts" / words[1]
                assert script.is_file(), step
                sub = [w for w in words[2:3] if not w.startswith("-") and "/" not in w]
                key = (words[1], *sub)
                if key not in seen:
                    help_text = subprocess.run(
                        [sys.executable, str(script), *sub, "--help"],
                        capture_output=True, text=True, check=True,
                    ).stdout  # fmt: skip
                    seen[key] = help_text
                for option in (w for w in words if w.startswith("--")):
                    assert option in seen[key], f"{step}: {option}"


def test_every_paired_comparison_records_the_figure_it_is_set_against() -> None:
    """A paired.py step without --reference writes a results file whose book entry has no
    reference: each names Sabour et al.'s affNIST figures and what archlab's setting is."""
    steps = [s for c in claims.CLAIMS.values() for b in claims.BUDGETS for s in c.steps[b]]
    paired = [shlex.split(s) for s in steps if s.startswith("script paired.py")]
    assert len(paired) == 2
    for words in paired:
        reference = words[words.index("--reference") + 1]
        assert reference.startswith("Sabour et al. (2017) on affNIST"), words
        assert "40x40" in reference and "epochs" in reference, words


def test_the_list_gives_each_verdict_or_says_none_is_measured(tmp_path, capsys) -> None:
    claims.list_claims(results=tmp_path)
    out = capsys.readouterr().out
    assert out.count("not measured yet") == 6
    assert re.search(r"^2\. gat-vs-gcn: GAT handles", out, re.M)
    (tmp_path / "claim-gat-vs-gcn.json").write_text(
        '{"kind": "claim", "date": "2026-12-03", "benchmarks": {"claim-gat-vs-gcn": '
        '{"summary": "supported: of 28 settings"}}}'
    )
    claims.list_claims(results=tmp_path)
    out = capsys.readouterr().out
    assert "supported: of 28 settings (claim-gat-vs-gcn.json, 2026-12-03)" in out


def test_command_line_lists_plans_and_refuses_unknown_claims() -> None:
    done = cli("claims", "all", "--dry-run")
    assert done.returncode == 0
    assert "about" in done.stdout and "[bert-vs-gpt] script bert_vs_gpt.py run" in done.stdout
    # it warns that the repository's figures get rewritten, and how to restore them
    assert "may rewrite the repository's results files claim-long-range.json" in done.stdout
    assert "`git checkout -- results/FILE` restores one" in done.stdout
    bad = cli("claims", "gat")
    assert bad.returncode == 2 and "unknown claim 'gat'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_plan_gives_its_time_in_hours_once_it_takes_an_hour(capsys) -> None:
    assert [claims.duration(m) for m in (26, 60, 370, 1216)] == [
        "26 minutes", "1 h", "6 h 10 min", "20 h 16 min"
    ]  # fmt: skip
    assert claims.run_claims("capsnet-vs-cnn", "full", dry_run=True) == 0
    assert "at the full budget: about 6 h 10 min here" in capsys.readouterr().out


def test_a_failing_step_stops_the_run_with_its_exit_code(monkeypatch, capsys) -> None:
    fake = claims.Claim(9, "x", (), {"small": ("archlab train no-such-recipe", "script x.py")},
                        {"small": 1})  # fmt: skip
    monkeypatch.setattr(claims, "CLAIMS", {"fake": fake})
    assert claims.run_claims("fake", "small") == 2
    assert "script x.py" not in capsys.readouterr().out  # the second step never ran


def _write(results, name: str, test: dict, date: str = "2026-12-01") -> None:
    entry = {"name": name, "kind": "recipe", "date": date, "results": {"test": test}}
    (results / f"{name}.json").write_text(json.dumps(entry))


def _av(acc: float, image_missing: float, audio_missing: float, runs: int = 3) -> dict:
    missing = {"accuracy_image_missing": image_missing, "accuracy_audio_missing": audio_missing}
    return {"accuracy": acc, "accuracy_runs": [acc] * runs, **missing}


def test_the_fusion_claim_is_judged_from_the_recipes_figures(tmp_path) -> None:
    fusion = claims.CLAIMS["fusion"]
    _write(tmp_path, "image-avdigits", _av(0.60, 0.10, 0.60))
    assert claims.verdict(fusion, tmp_path).startswith("not measured yet (only image-avdigits")
    _write(tmp_path, "audio-avdigits", _av(0.90, 0.90, 0.10))
    _write(tmp_path, "early-avdigits", _av(0.952, 0.85, 0.59))  # 5 and 1 points short
    _write(tmp_path, "central-avdigits", _av(0.95, 0.885, 0.585), "2026-12-02")  # 1.5, 1.5
    text = claims.verdict(fusion, tmp_path)
    assert "is met: the best fusion, early-avdigits, reaches 95.20 % (mean of 3 seeds)" in text
    assert "against 90.00 % for audio-avdigits (mean of 3 seeds): +5.20 points" in text
    assert "1 of 2 fusions stay within 2 points of the other modality's own model " \
        "(central-avdigits)" in text  # fmt: skip
    assert text.endswith(
        "(image-avdigits.json, audio-avdigits.json, early-avdigits.json, 2026-12-01; "
        "central-avdigits.json, 2026-12-02)"
    )
    short = claims.verdict(fusion, tmp_path, short=True)
    assert short == (
        "goal met: early-avdigits (3 seeds) +5.20 points over audio-avdigits (≥ 5 asked); "
        "within 2 points with a modality missing: central (4 results files, 2026-12-01 to "
        "2026-12-02)"
    )
    _write(tmp_path, "early-avdigits", _av(0.948, 0.89, 0.59))  # 4.80 points; both robust
    _write(tmp_path, "central-avdigits", _av(0.945, 0.885, 0.585), "2026-12-02")
    text = claims.verdict(fusion, tmp_path)
    assert "is not met: the best fusion, early-avdigits, reaches 94.80 %" in text
    assert ": +4.80 points" in text
    assert "2 of 2 fusions stay within 2 points" in text
    assert "(early-avdigits, central-avdigits)" in text
    short = claims.verdict(fusion, tmp_path, short=True)
    assert short.startswith("goal not met: early-avdigits (3 seeds) +4.80 points")
    assert "with a modality missing: early, central (" in short
    _write(tmp_path, "central-avdigits", _av(0.95, 0.88, 0.58))  # exactly 5 and 2 points
    assert "is met: the best fusion, central-avdigits, reaches 95.00 %" in claims.verdict(
        fusion, tmp_path
    )
    assert "missing: early, central (" in claims.verdict(fusion, tmp_path, short=True)


def _fid(value: float, runs: int = 3) -> dict:
    spread = [value - 2.0, value, value + 2.0] if runs == 3 else [value] * runs
    return {"fid": value, "fid_std": 2.0, "fid_runs": spread}


def test_welch_p_is_the_two_sided_welch_t_test_and_needs_two_runs_a_side() -> None:
    from scipy.stats import t as student

    a, b = [151.3, 153.6, 161.1], [167.5, 179.6, 167.7, 170.0]
    va, vb = (sum((x - sum(s) / len(s)) ** 2 for x in s) / (len(s) - 1) for s in (a, b))
    se2 = va / len(a) + vb / len(b)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    stat = (sum(a) / len(a) - sum(b) / len(b)) / se2**0.5
    assert claims.welch_p(a, b) == pytest.approx(2 * student.sf(abs(stat), df), rel=1e-9)
    assert claims.welch_p(a, [170.0]) is None  # one run: nothing to test with
    assert claims.welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_the_sagan_claim_tests_fid_with_and_without_attention_and_against_dcgan(
    tmp_path,
) -> None:
    sagan = claims.CLAIMS["sagan"]
    _write(tmp_path, "sagan-mnist", _fid(150.0))
    assert claims.verdict(sagan, tmp_path).startswith("not measured yet (only sagan-mnist.json")
    _write(tmp_path, "sagan-noattn-mnist", _fid(170.0))
    _write(tmp_path, "dcgan-mnist", _fid(125.0), "2026-11-30")
    text = claims.verdict(sagan, tmp_path)
    assert text.startswith(
        "test FID, lower is better, differences by Welch's t-test over the seeds (p < 0.05); "
        "at the recipes' 3,000 steps, partly supported: "
    )
    assert "attention helps (150.0 ± 2.0 with it, 170.0 ± 2.0 without; p < 0.001)" in text
    assert "SAGAN (150.0 ± 2.0) trails DCGAN (125.0 ± 2.0; p < 0.001) (3 seeds each)" in text
    assert text.endswith("(dcgan-mnist.json, 2026-11-30; sagan-mnist.json, "
                         "sagan-noattn-mnist.json, 2026-12-01)")  # fmt: skip
    assert claims.verdict(sagan, tmp_path, short=True).startswith(
        "partly supported: attention helps (150.0 with it, 170.0 without; p < 0.001), SAGAN "
        "trails DCGAN (125.0; p < 0.001); FID, 3 seeds, 3,000 steps (3 results files"
    )
    _write(tmp_path, "sagan-noattn-mnist", _fid(140.0, runs=1))  # lower, but one run
    text = claims.verdict(sagan, tmp_path)
    assert "not supported: with attention 150.0 ± 2.0, without 140.0 ± 2.0 (1 run, no test)" in text
    assert "(1/3 seeds each)" in text
    _write(tmp_path, "sagan-noattn-mnist", _fid(152.0))  # within the seeds' spread
    _write(tmp_path, "dcgan-mnist", _fid(151.0))
    text = claims.verdict(sagan, tmp_path)
    assert (
        "inconclusive at this budget: with attention 150.0 ± 2.0, without 152.0 ± 2.0 (p = " in text
    )
    assert "SAGAN (150.0 ± 2.0) against DCGAN (151.0 ± 2.0; p = 0.573)" in text
    # the longer budget: the full verdict gives both, the short one the longer
    _write(tmp_path, "sagan-mnist-9000steps", _fid(100.0))
    _write(tmp_path, "dcgan-mnist-9000steps", _fid(110.0))
    text = claims.verdict(sagan, tmp_path)
    assert "at the recipes' 3,000 steps, inconclusive at this budget" in text
    assert "; at 9,000 steps, supported: SAGAN (100.0 ± 2.0) beats DCGAN (110.0 ± 2.0; p = " in text
    assert "sagan-mnist-9000steps.json" in text
    short = claims.verdict(sagan, tmp_path, short=True)
    assert short.startswith("supported: SAGAN beats DCGAN (110.0; p = 0.00")
    assert "FID, 3 seeds, 9,000 steps (5 results files" in short
    # the small budget's 1,500 steps come first in the full verdict
    _write(tmp_path, "sagan-mnist-1500steps", _fid(160.0))
    _write(tmp_path, "sagan-noattn-mnist-1500steps", _fid(180.0))
    text = claims.verdict(sagan, tmp_path)
    assert text.split("; at ")[1].startswith("1,500 steps, supported: attention helps (160.0")
    assert "9,000 steps (7 results files" in claims.verdict(sagan, tmp_path, short=True)


def test_the_rewrite_warning_names_the_files_a_budget_writes() -> None:
    rewrites = claims.rewrites
    sagan, bert = claims.CLAIMS["sagan"], claims.CLAIMS["bert-vs-gpt"]
    # the recipes' own 3,000-step files are named as the recipe to train, not rewritten
    assert rewrites(sagan, "small") == [
        "sagan-mnist-1500steps.json", "sagan-noattn-mnist-1500steps.json"]  # fmt: skip
    assert rewrites(sagan, "full") == [f"{g}-9000steps.json" for g in claims.GANS]
    assert rewrites(bert, "small") == ["claim-bert-vs-gpt.json"]
    assert rewrites(bert, "full") == ["claim-bert-vs-gpt-full.json"]
    # a script that writes its own files without naming them: all the claim's files
    assert rewrites(claims.CLAIMS["long-range"], "small") == [
        "claim-long-range.json", "claim-char-lm.json"]  # fmt: skip


def test_the_short_verdicts_of_the_recorded_results_fit_a_readme_line() -> None:
    for name, claim in claims.CLAIMS.items():
        parts = claims.judge(claim, claims.ROOT / "results", short=True)
        assert sum(len(text) for text, _ in parts) <= claims.SHORT, name
        full = claims.verdict(claim, claims.ROOT / "results")
        assert "judged in the results book" not in full
        if parts:  # every measured claim names its files and their dates
            assert re.search(r"\.json, \d{4}-\d\d-\d\d\)$", full), full


def test_a_claim_built_over_budgets_gives_the_readme_its_fullest_one(tmp_path) -> None:
    """Claim 6's small and full budgets each have a file: the README line (short) gives the
    full budget's verdict, `archlab claims` and the book both."""

    def claim_file(name: str, verdict: str, date: str) -> None:
        body = {"summary": verdict, "verdict": verdict}
        entry = {"name": name, "kind": "claim", "date": date, "benchmarks": {name: body}}
        (tmp_path / f"{name}.json").write_text(json.dumps(entry))

    bert = claims.CLAIMS["bert-vs-gpt"]
    claim_file("claim-bert-vs-gpt", "inconclusive at this budget (750 steps); small", "2026-12-04")
    assert claims.verdict(bert, tmp_path, short=True).startswith("inconclusive at this budget (750")
    claim_file("claim-bert-vs-gpt-full", "not supported (3,000 steps); full", "2026-12-05")
    short = claims.verdict(bert, tmp_path, short=True)
    assert short == "not supported (3,000 steps) (claim-bert-vs-gpt-full.json, 2026-12-05)"
    both = claims.verdict(bert, tmp_path)
    assert "750 steps" in both and "3,000 steps" in both


def test_a_paired_comparison_reads_as_its_outcome() -> None:
    """scripts/paired.py's file: run b is the one the claim favours, McNemar's p decides."""
    summary = "affine set: cnn-x 64.39%, caps-x 67.41%; only cnn-x right on 747 images, ..."
    body = {"summary": summary, "accuracy_a": 0.6439, "accuracy_b": 0.6741, "p_value": 1e-12}
    assert claims._short_claim(body) == (
        "supported: caps-x 67.41 % vs cnn-x 64.39 % on the affine set (McNemar p < 0.001)"
    )
    body["p_value"] = 0.104
    assert claims._short_claim(body).startswith("the claim's direction, not significant")
    assert claims._short_claim(body).endswith("(McNemar p = 0.104)")
    body["accuracy_b"] = 0.60
    assert claims._short_claim(body).startswith("not supported: caps-x 60.00 %")


def test_a_second_call_skips_finished_trainings_and_resumes_interrupted_ones(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    (tmp_path / "scripts").mkdir()
    single = "archlab train cnn-mnist --set trainer.max_epochs=3 --out runs/claims/cnn-3"
    seeds = "archlab train sagan-mnist --seeds 3 --out runs/claims/sagan"
    assert claims.continued(single) == (single, "")  # nothing on disk: as written
    assert claims.continued("script paired.py a b") == ("script paired.py a b", "")
    run = tmp_path / "runs/claims/cnn-3"
    began_single(run, "cnn-mnist", ["trainer.max_epochs=3"])
    resume = "archlab train cnn-mnist --resume runs/claims/cnn-3"  # train checks the recipe
    assert claims.continued(single) == (resume, "resumes runs/claims/cnn-3")
    twice = single.replace("--set", "--set trainer.max_epochs=2 --set")  # the last one wins
    assert claims.continued(twice) == (resume, "resumes runs/claims/cnn-3")
    # begun with other settings (here 2 epochs) or from an edited recipe: not resumed as
    # this step, started over
    again = (single, "runs/claims/cnn-3 did not finish or began otherwise: starts over")
    began_single(run, "cnn-mnist", ["trainer.max_epochs=3"], trainer_lr=0.002)
    assert claims.continued(single, clear=False) == again
    began_single(run, "cnn-mnist", ["trainer.max_epochs=2"])
    assert claims.continued(single, clear=False) == again and run.exists()
    assert claims.continued(single) == again and not run.exists()
    run.mkdir()
    group = tmp_path / "runs/claims/sagan"
    (group / "seed-0").mkdir(parents=True)
    # a seed still training (its lock's holder runs: this process) is not removed
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}
    (group / "seed-0/.lock").write_text(json.dumps(holder))
    with pytest.raises(ArchlabError, match="seed-0 is in use by process"):
        claims.continued(seeds)
    (group / "seed-0/.lock").unlink()
    step, state = claims.continued(seeds, clear=False)  # a dry run removes nothing
    assert step == seeds and state == "runs/claims/sagan " + again[1].split(" ", 1)[1]
    assert group.exists()
    assert claims.continued(seeds)[0] == seeds and not group.exists()
    # one that recorded how it began (repeats.json) resumes, keeping its finished seeds
    (group / "seed-0").mkdir(parents=True)
    began_repeated(group, "train sagan-mnist --seeds 3 --set trainer.max_steps=7")
    resume_seeds = "archlab train sagan-mnist --resume runs/claims/sagan"
    assert claims.continued(seeds + " --set trainer.max_steps=7") == (
        resume_seeds, "resumes runs/claims/sagan")  # fmt: skip
    assert (group / "seed-0").exists()
    # begun otherwise: other overrides, more seeds, other seeds, folds, an edited recipe
    for other in ("--set trainer.max_steps=9", "", "--seeds 5 --set trainer.max_steps=7",
                  "--seed 4 --set trainer.max_steps=7"):  # fmt: skip
        argv = seeds.replace("--seeds 3", "") if "--seeds" in other else seeds
        assert claims.continued(f"{argv} {other}", clear=False)[0] != resume_seeds, other
    folds = "archlab train cnn-mr --folds 3 --out runs/claims/sagan"
    assert claims.continued(folds, clear=False)[0] == folds
    began_repeated(group, "train cnn-mr --folds 3")  # --folds adds data.folds=3 to the overrides
    assert claims.continued(folds)[0] == "archlab train cnn-mr --resume runs/claims/sagan"
    assert claims.continued(folds.replace("folds 3", "seeds 3"), clear=False)[0] != folds
    began_repeated(group, "train sagan-mnist --seeds 3")
    assert claims.continued(seeds)[0] == resume_seeds
    warm = seeds + " --set trainer.warmup_steps=5"  # a key the recipe does not write
    assert claims.continued(warm, clear=False)[0] == warm
    began_repeated(group, "train sagan-mnist --seeds 3 --set trainer.warmup_steps=5")
    assert claims.continued(warm)[0] == resume_seeds
    assert claims.continued(seeds, clear=False)[0] == seeds
    began_repeated(group, "train sagan-mnist --seeds 3")
    edited = read_recipe("sagan-mnist")
    edited["trainer"]["lr"] = 3e-4
    (group / "recipe.yaml").write_text(yaml_text(edited))
    assert claims.continued(seeds, clear=False)[0] == seeds
    # a repeats.json that cannot be read is said, and nothing is removed
    (group / "repeats.json").write_text("{")
    with pytest.raises(ArchlabError, match="cannot be read as the start of a repeated"):
        claims.continued(seeds)
    assert (group / "seed-0").exists()
    shutil.rmtree(group)
    # the claim scripts' runs start over by the same rule (train_missing)
    (group / "seed-1").mkdir(parents=True)
    (group / "seed-1/.lock").write_text(json.dumps(holder))
    with pytest.raises(ArchlabError, match="seed-1 is in use by process"):
        claims.train_missing([("x", "gcn-karate", [], group)])
    assert (group / "seed-1").exists()
    # one begun with the same settings resumes, bit-identical; one begun otherwise (another
    # --steps) starts over with these
    calls = []
    monkeypatch.setattr("archlab.run.train", lambda *a, **k: calls.append((a, k)))
    (group / "seed-1/.lock").unlink()
    began_single(group / "seed-1", "gcn-karate", ["trainer.seed=1", "trainer.lr=0.01"])
    claims.train_missing([("x", "gcn-karate", ["trainer.seed=1", "trainer.lr=1e-2"],
                           group / "seed-1")])  # fmt: skip
    assert calls == [((None, []), {"resume": str(group / "seed-1"), "progress": False})]
    calls.clear()
    claims.train_missing([("x", "gcn-karate", ["trainer.seed=2"], group / "seed-1")])
    out = str(group / "seed-1")
    assert calls == [(("gcn-karate", ["trainer.seed=2"]), {"out": out, "progress": False})]
    assert not (group / "seed-1").exists()  # what it began is gone
    # a model swapped in drops the recipe's keys it does not have (a TCN's channels for an
    # LSTM), and the run still counts as begun so; an override missing from it does not
    swap, sets = tmp_path / "runs/swap", ["model.name=lstm", "model.hidden_size=8"]
    began_single(swap, "tcn-adding", sets)
    config = yaml.safe_load((swap / "config.yaml").read_text())
    del config["model"]["channels"], config["model"]["kernel_size"]
    (swap / "config.yaml").write_text(yaml_text(config))
    assert claims.begun_with(swap, "tcn-adding", sets)
    del config["model"]["hidden_size"]
    (swap / "config.yaml").write_text(yaml_text(config))
    assert not claims.begun_with(swap, "tcn-adding", sets)
    # a finished training is not run again: the whole claim is only its other steps
    (run / "results.json").write_text("{}")
    fake = claims.Claim(9, "x", (), {"small": (single,)}, {"small": 1})
    monkeypatch.setattr(claims, "CLAIMS", {"fake": fake})
    assert claims.run_claims("fake", "small") == 0
    assert "(done: runs/claims/cnn-3/results.json)" in capsys.readouterr().out


def test_ctrl_c_lets_the_running_step_save_before_the_claims_stop(tmp_path, monkeypatch) -> None:
    """The step gets the Ctrl-C too (one process group) and saves before it exits; waiting
    for it, not killing it as subprocess.call does after 0.25 s, keeps what it saved."""
    import signal
    import threading

    monkeypatch.setattr(claims, "ROOT", tmp_path)
    go, saved = tmp_path / "go", tmp_path / "saved"
    # the step: waits until the Ctrl-C has been sent, then "saves" and exits
    step = [sys.executable, "-c", f"""import os, time
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
time.sleep(1.0)  # longer than subprocess.call gives a step after a Ctrl-C (0.25 s)
open({str(saved)!r}, "w")"""]  # fmt: skip
    waiting, wait = threading.Event(), subprocess.Popen.wait

    def waits(child, *args, **kwargs):  # the Ctrl-C comes once _call waits for its step
        waiting.set()
        return wait(child, *args, **kwargs)

    def ctrl_c() -> None:
        waiting.wait(timeout=60)
        # to the main thread: a process-directed signal may land on another thread (torch's
        # pools), leaving the main thread's wait uninterrupted until the step has ended
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        go.touch()

    monkeypatch.setattr(subprocess.Popen, "wait", waits)
    # Ctrl-C as a terminal gives it: a process started in the background of a shell
    # (nohup, `make test &`) inherits SIGINT ignored, and the signal would never arrive
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = threading.Thread(target=ctrl_c)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            claims._call(step)
    finally:
        sender.join()
        signal.signal(signal.SIGINT, previous)
    assert saved.exists()
