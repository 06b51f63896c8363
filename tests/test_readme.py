"""The README's results table and the results book are built from results/*.json and must
match them; the recipes open with a short header and keep their history in docs/recipes.md."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "src/archlab/recipes").glob("*.yaml"))


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts/results.py"), "build", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )


def results_table() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- results:start -->", 1)[1].split("<!-- results:end -->", 1)[0]
    return [line for line in table.strip().splitlines()[2:] if line.startswith("|")]


def test_readme_and_book_match_the_results_files() -> None:
    proc = check(ROOT)
    assert proc.returncode == 0, proc.stderr


def test_a_changed_results_file_makes_the_check_fail(tmp_path: Path) -> None:
    for part in ("scripts", "results", "docs", "src/archlab/recipes"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    assert check(tmp_path).returncode == 0
    path = tmp_path / "results/gat-cora.json"
    entry = json.loads(path.read_text(encoding="utf-8"))
    entry["results"]["test"]["accuracy"] += 0.01
    path.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    proc = check(tmp_path)
    assert proc.returncode != 0
    assert "README.md and docs/results.md" in proc.stderr


def test_readme_names_the_two_set_up_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text


def test_readme_has_one_short_results_row_per_recipe() -> None:
    rows = results_table()
    named = [re.match(r"\| \[([\w-]+)\]", row).group(1) for row in rows]
    assert len(named) == len(set(named)) and sorted(named) == sorted(p.stem for p in RECIPES)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert len(cells) == 6, row
        assert max(len(cell) for cell in cells) <= 120, row


def test_readme_gives_each_claim_its_short_verdict_and_a_link_that_exists() -> None:
    from archlab import claims

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- generated:claim-verdicts -->\n", 1)[1].split("<!-- generated:end", 1)
    lines = block[0].strip().splitlines()
    assert len(lines) == len(claims.CLAIMS)
    anchors = _results_script().anchors((ROOT / "docs/results.md").read_text(encoding="utf-8"))
    for line, (name, claim) in zip(lines, claims.CLAIMS.items(), strict=True):
        link = re.match(rf"{claim.number}\. \[{name}\]\(docs/results\.md#([\w-]+)\)", line)
        assert link and link[1] in anchors, line
        short = claims.verdict(claim, ROOT / "results", short=True)
        assert line.endswith(f" — {short}."), line
        assert "judged in the results book" not in line
    assert "claim-gat-vs-gcn" in anchors and "audio-visual-digits-fusion" in anchors


def test_a_stale_claims_block_or_a_missing_section_fails_the_build(tmp_path, monkeypatch) -> None:
    for part in ("scripts", "results", "docs", "src/archlab/recipes"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("*.png"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    mark = "<!-- generated:claim-verdicts -->\n"
    stale = readme.replace(mark, mark + "4. [fusion](docs/results.md#claims) — not measured yet.\n")
    (tmp_path / "README.md").write_text(stale, encoding="utf-8")
    proc = check(tmp_path)
    assert proc.returncode != 0 and "README.md disagree" in proc.stderr
    results = _results_script()
    monkeypatch.setattr(results, "RESULTS", ROOT / "results")
    book = (ROOT / "docs/results.md").read_text(encoding="utf-8")
    assert "#image-generation-mnist)" in results.render_claims_block(book)
    with pytest.raises(SystemExit, match="no section #image-generation-mnist for the claim sagan"):
        results.render_claims_block(book.replace("## Image generation (MNIST)", "## GANs"))


def test_readme_lists_every_command_with_options_the_command_line_has() -> None:
    """The README's command block names every subcommand of `archlab`, and every option a
    line gives is one its subcommand takes (details live in docs/cli.md)."""
    import argparse

    from archlab.cli import build_parser

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Command line", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = set()
    for line in block.splitlines():
        words = line.split("#", 1)[0].split()
        assert words[0] == "archlab" and words[1] in sub.choices, line
        listed.add(words[1])
        options = sub.choices[words[1]]._option_string_actions
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", " ".join(words)):
            assert option in options, f"{line}: archlab {words[1]} has no {option}"
    assert listed == set(sub.choices)
    assert (ROOT / "docs/cli.md").is_file() and "(docs/cli.md)" in text
    assert "(docs/serve.md)" in text


def test_pictures_named_in_the_docs_exist() -> None:
    for doc in (ROOT / "README.md", ROOT / "docs/results.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).is_file(), f"{doc.name} shows {target}, which is missing"


def test_recipes_open_with_a_short_header_and_have_a_history_section() -> None:
    history = (ROOT / "docs/recipes.md").read_text(encoding="utf-8")
    for path in RECIPES:
        head = path.read_text(encoding="utf-8").split("\ntask:", 1)[0].splitlines()
        assert all(line.startswith("#") for line in head), path.name
        assert 1 <= len(head) <= 5, f"{path.name}: a header of at most five lines"
        first = head[0].lstrip("# ")
        assert len(first) <= 90 and first.endswith("."), f"{path.name}: {first!r}"
        assert f"\n### {path.stem}\n" in history, f"docs/recipes.md lacks ### {path.stem}"


def _results_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts/results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fusion_claim_says_when_its_verdict_rests_on_one_run() -> None:
    def test(acc: float, runs: int = 1) -> dict:
        out = {"accuracy": acc, "accuracy_image_missing": 0.5, "accuracy_audio_missing": 0.5}
        return out | ({"accuracy_runs": [acc] * runs} if runs > 1 else {})

    claims = _results_script()._avdigits_claims
    tests = {"image-avdigits": test(0.6, 3), "audio-avdigits": test(0.9, 3)}
    one_run = claims(tests | {"central-avdigits": test(0.951), "gmu-avdigits": test(0.948, 3)})[0]
    assert "+5.10 points, so the goal is met" in one_run
    assert "That is one run" in one_run and "gmu-avdigits, reaches 94.80 %" in one_run
    assert "-0.20 points, short of the goal" not in one_run and "+4.80 points, short" in one_run
    seeded = claims(tests | {"central-avdigits": test(0.93, 3), "gmu-avdigits": test(0.948, 3)})[0]
    assert "gmu-avdigits, reaches 94.80 % (mean of 3 seeds)" in seeded
    assert "+4.80 points, so the goal is not met" in seeded and "one run" not in seeded


def test_every_benchmark_has_rows_in_the_books_summary_table() -> None:
    from archlab.bench import BENCHMARKS

    results = _results_script()
    assert set(BENCHMARKS) <= set(results.SUMMARY_ROWS)
    table = results.render_benchmark_summary(results.load_entries()).splitlines()
    for path in sorted((ROOT / "results").glob("bench-*.json")):
        for name, bench in json.loads(path.read_text())["benchmarks"].items():
            if name in BENCHMARKS:
                assert results.SUMMARY_ROWS[name](bench), f"{path.name} gives no row"
    speeds = [float(row.split("|")[7].strip().rstrip("x")) for row in table[2:]]
    assert speeds and all(s > 0 for s in speeds)
    gpt = next(row for row in table if "| GPT | training step |" in row)
    bench = json.loads((ROOT / "results/bench-gpt.json").read_text())["benchmarks"]["gpt"]
    assert f"{bench['train_ratio']:.2f}x" in gpt  # the same ratio the benchmark printed


def test_a_benchmarks_note_on_its_conditions_is_in_the_book() -> None:
    book = (ROOT / "docs/results.md").read_text(encoding="utf-8")
    notes = [
        bench["note"]
        for path in sorted((ROOT / "results").glob("*.json"))
        for bench in json.loads(path.read_text(encoding="utf-8")).get("benchmarks", {}).values()
        if bench.get("note")
    ]
    assert notes  # bench seq and bench demo say what they ran beside
    for note in notes:
        assert f"- Note: {note.rstrip('.')}." in book


def test_a_recorded_tune_shows_its_settings_validation_figures_and_the_choice() -> None:
    results = _results_script()
    recipe = json.loads((ROOT / "results/minilm-mr.json").read_text(encoding="utf-8"))
    setting = {"status": "done", "train_seconds": 600.0}
    tune = {
        "recipe": "minilm-mr",
        "metric": "accuracy",
        "better": "higher",
        "repeats": {"key": "data.fold", "values": [0, 1]},
        "settings": [
            {**setting, "name": "trainer.lr=1e-4", "set": ["trainer.lr=1e-4"],
             "val": {"accuracy": 0.85, "accuracy_std": 0.01, "accuracy_runs": [0.84, 0.86]}},
            {**setting, "name": "trainer.lr=2e-4", "set": ["trainer.lr=2e-4"],
             "val": {"accuracy": 0.80, "accuracy_std": 0.0, "accuracy_runs": [0.80, 0.80]}},
            {"name": "trainer.lr=4e-4", "status": "failed", "error": "the loss became nan"},
        ],
        "choice": {"name": "trainer.lr=1e-4", "set": ["trainer.lr=1e-4"]},
        "wall_seconds": 1300.0,
    }  # fmt: skip
    entry = {"name": "minilm-mr-lr", "kind": "tune", "recipe": "minilm-mr", "tune": tune,
             "command": "archlab tune minilm-mr ...", "date": "2026-12-03",
             "machine": recipe["machine"], "variant": "lr on folds 0-1"}  # fmt: skip
    lines = results.render_tunes("minilm-mr", [recipe, entry])
    assert "| setting | val accuracy (folds 0, 1) | per run | time |" in lines
    assert "| **trainer.lr=1e-4** (chosen) | 85.00 ± 1.00 % | 84.00, 86.00 | 10 min |" in lines
    assert "| trainer.lr=2e-4 | 80.00 ± 0.00 % | 80.00, 80.00 | 10 min |" in lines
    assert "| trainer.lr=4e-4 | stopped: the loss became nan | — | — |" in lines
    assert any("Chosen: trainer.lr=1e-4" in line for line in lines)
    assert results.render_tunes("cnn-mr", [recipe, entry]) == []
    section = results.render_recipe_section("minilm-mr", [recipe, entry])
    assert "| **trainer.lr=1e-4** (chosen) | 85.00 ± 1.00 % | 84.00, 86.00 | 10 min |" in section


def test_record_takes_a_finished_tune_directory(tmp_path: Path) -> None:
    for part in ("scripts", "results", "docs", "src/archlab/recipes"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    tune_dir = tmp_path / "tune"
    tune_dir.mkdir()
    val = {"accuracy": 0.85, "accuracy_std": 0.01, "accuracy_runs": [0.84, 0.86]}
    tune = {
        "recipe": "minilm-mr", "set": [], "repeats": {"key": "data.fold", "values": [0, 1]},
        "grid": {"trainer.lr": ["1e-4"]}, "metric": "accuracy", "split": "val",
        "better": "higher", "finished": False, "wall_seconds": 60.0,
        "settings": [{"name": "trainer.lr=1e-4", "set": ["trainer.lr=1e-4"], "status": "done",
                      "val": val, "train_seconds": 50.0}],
        "choice": {"name": "trainer.lr=1e-4", "set": ["trainer.lr=1e-4"]},
        "command": "archlab tune minilm-mr --grid trainer.lr=1e-4 --on-folds 0 1 --out tune",
    }  # fmt: skip
    (tune_dir / "tune.json").write_text(json.dumps(tune), encoding="utf-8")
    record = [sys.executable, str(tmp_path / "scripts/results.py"), "record", str(tune_dir),
              "--name", "minilm-mr-lr", "--variant", "lr on folds 0-1"]  # fmt: skip
    proc = subprocess.run(record, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "the tune has not finished" in proc.stderr
    tune["finished"] = True
    (tune_dir / "tune.json").write_text(json.dumps(tune), encoding="utf-8")
    proc = subprocess.run(record, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads((tmp_path / "results/minilm-mr-lr.json").read_text(encoding="utf-8"))
    assert entry["kind"] == "tune" and entry["recipe"] == "minilm-mr"
    assert entry["command"] == tune["command"] and "results" not in entry
    assert check(tmp_path).returncode != 0  # the book does not show it yet
    build = [sys.executable, str(tmp_path / "scripts/results.py"), "build", "--no-plots"]
    subprocess.run(build, capture_output=True, text=True, check=True)
    assert check(tmp_path).returncode == 0
    book = (tmp_path / "docs/results.md").read_text(encoding="utf-8")
    assert "| **trainer.lr=1e-4** (chosen) | 85.00 ± 1.00 % | 84.00, 86.00 | 50 s |" in book


def test_record_keeps_a_tune_and_a_run_apart(tmp_path: Path) -> None:
    """A tune recorded under its recipe's name would replace the recipe's own figure; a run
    recorded over a tune's file would be taken for a tune.  Both are refused."""
    for part in ("scripts", "results", "src/archlab/recipes"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("*.png"))
    tune_dir = tmp_path / "tune"
    tune_dir.mkdir()
    tune = {"recipe": "minilm-mr", "finished": True, "command": "archlab tune minilm-mr"}
    (tune_dir / "tune.json").write_text(json.dumps(tune))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"val": {"accuracy": 0.8}}))
    script = [sys.executable, str(tmp_path / "scripts/results.py"), "record"]
    before = {p.name: p.read_text() for p in (tmp_path / "results").glob("*.json")}
    for args, message in [
        ([str(tune_dir), "--name", "minilm-mr"], "minilm-mr is a recipe's name"),
        ([str(run_dir), "--name", "minilm-mr-lr", "--command", "archlab train minilm-mr"],
         "results/minilm-mr-lr.json holds a tune"),
    ]:  # fmt: skip
        proc = subprocess.run([*script, *args], capture_output=True, text=True, check=False)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    after = {p.name: p.read_text() for p in (tmp_path / "results").glob("*.json")}
    assert after == before


def test_a_re_recorded_run_keeps_its_reference_unless_given_another(tmp_path: Path) -> None:
    for part in ("scripts", "results", "src/archlab/recipes"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("*.png"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"test": {"mase": 0.9}}))
    path = tmp_path / "results/tcn-sunspots.json"
    held = json.loads(path.read_text())["reference"]
    assert held.startswith("seasonal naive")
    script = [sys.executable, str(tmp_path / "scripts/results.py"), "record", str(run_dir),
              "--name", "tcn-sunspots", "--command", "archlab train tcn-sunspots"]  # fmt: skip
    subprocess.run(script, capture_output=True, text=True, check=True)
    assert json.loads(path.read_text())["reference"] == held
    subprocess.run([*script, "--reference", "x"], capture_output=True, text=True, check=True)
    assert json.loads(path.read_text())["reference"] == "x"


def test_kinships_reference_is_read_from_bench_kge_reference(tmp_path, monkeypatch) -> None:
    """The README's Kinship references: PyKEEN's MRR from bench kge-reference's file when it
    holds the model at issue 16's protocol (with the seeds it has); none without; a file of another
    protocol stops the build."""
    results = _results_script()
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    assert results.measured_pykeen("kinship", "transe") is None
    model = {"mrr": 0.61234, "seeds": [{"seed": 0}, {"seed": 1}]}
    bench = {"dataset": "kinship", "pykeen": "1.11.1", "models": {"transe": model},
             "protocol": {"epochs": 300, "num_negs_per_pos": 64, "seeds": [0, 1]}}  # fmt: skip
    entry = {"command": "archlab bench kge-reference", "date": "2026-12-04",
             "benchmarks": {"kge-reference": bench}}  # fmt: skip
    path = tmp_path / "bench-kge-reference-kinship.json"
    path.write_text(json.dumps(entry))
    assert results.measured_pykeen("kinship", "transe") == (
        ".612 — PyKEEN 1.11.1, same protocol (2 seeds, 2026-12-04)"
    )
    assert results.measured_pykeen("kinship", "rotate") is None
    model["seeds"] = [{"seed": 0}]  # a run still going: the seeds it has, said as such
    path.write_text(json.dumps(entry))
    assert results.measured_pykeen("kinship", "transe") == (
        ".612 — PyKEEN 1.11.1, same protocol (1 of 2 seeds, 2026-12-04)"
    )
    bench["protocol"]["epochs"] = 2
    path.write_text(json.dumps(entry))
    with pytest.raises(SystemExit, match="not issue 16's protocol"):
        results.measured_pykeen("kinship", "transe")


def test_a_recipe_recorded_without_a_headline_takes_its_listed_task_and_reference() -> None:
    """A recipe listed in NOT_RUN and recorded since keeps the task, metric and published
    figure listed for it (as the UMLS link-prediction recipes do), not 'val loss'."""
    results = _results_script()
    entry = {"name": "complex-umls", "results": {"test": {"mrr": 0.9, "loss": 0.1}}}
    head = results.headline(entry)
    assert head["task"] == "UMLS, link prediction (filtered, both sides)"
    assert (head["split"], head["metric"]) == ("test", "mrr")
    source = "PyKEEN, same protocol (issue 16)"
    assert head["published"] == {"value": 0.897, "text": "0.897", "source": source}
    todo = {"task": "T", "metric": "test MRR", "reference": ".250 — PyKEEN 1.11.1, 3 seeds"}
    published = results.headline_of_todo(todo)["published"]
    assert results.published_text("mrr", published) == "0.250 — PyKEEN 1.11.1, 3 seeds"
    todo = {"task": "T", "metric": "test MRR", "reference": "no published figure for this"}
    assert results.headline_of_todo(todo)["published"] == {"source": todo["reference"]}
    assert results.published_text("mrr", {"source": todo["reference"]}) == todo["reference"]


def test_a_figure_too_small_for_its_decimals_is_written_in_significant_digits() -> None:
    results = _results_script()
    assert results._number("mse", 5.8e-5) == "5.8e-05"
    assert results._number("mse", 1.03e-4) == "0.000103"  # not '0.0001', under a 1e-4 goal
    assert results._number("mse", 0.159) == "0.159"
    assert results._number("mse", 0.0) == "0.000"
    assert results._number("accuracy", 1.7e-17, 0.098) == "0.00"  # a std keeps the figure's
    # the book's 'All metrics' line too
    assert results._metrics({"test": {"mse": 1.6259e-05, "loss": 0.0}}) == (
        "test mse 1.63e-05, test loss 0.0000"
    )
    assert results._fmt(0.8317) == "0.8317" and results._fmt(1234.5) == "1,234.50"
    # a spread is written as its mean is: not 'FID 91.34 ± 1.3624'
    assert results._metrics({"val": {"fid": 91.344, "fid_std": 1.3624}}) == "val fid 91.34 ± 1.36"
    assert results._metrics({"val": {"pieces": 14041}}) == "val pieces 14,041"  # a count


def test_claim_6s_section_tables_accuracy_by_objective_and_the_pretraining_runs() -> None:
    results = _results_script()
    run = {"mean": 0.75, "std": 0.01, "folds": 3, "runs": [0.74, 0.75, 0.76]}
    bench = {"results": {
        "accuracy": {"bert-mlm": run, "gpt-clm": {**run, "mean": 0.7612}},
        "pretraining": {
            "bert": {"objective": "masked LM", "tokens_per_s": 2767.0, "held_out_loss": 4.43,
                     "held_out_pseudo_perplexity": 96.22, "parameters": 5298752, "folds": 3},
            "gpt": {"objective": "causal LM", "tokens_per_s": 1880.1, "held_out_loss": 3.81,
                    "held_out_perplexity": 58.87, "parameters": 5223936, "folds": 2},
        },
    }}  # fmt: skip
    lines = results._table_bert_vs_gpt(bench)
    assert "| bert-mlm | BERT | masked LM (bert-mlm-mr) | 75.00 ± 1.00 % | 3 |" in lines
    assert "| gpt-clm | GPT | causal LM (gpt-clm-mr) | 76.12 ± 1.00 % | 3 |" in lines
    assert not any(line.startswith("| bert-scratch") for line in lines)  # not in the file
    assert "| BERT | masked LM | 5.30M | 2,767 | 4.430 | 96.2 (pseudo-perplexity) | 3 |" in lines
    assert "| GPT | causal LM | 5.22M | 1,880 | 3.810 | 58.9 (perplexity) | 2 |" in lines
    assert any("chain rule" in line for line in lines)  # what each perplexity measures
    # a budget's own file ("claim-bert-vs-gpt-full") gets the claim's tables in the book
    machine = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0"}
    full = bench | {"summary": "inconclusive", "reference": "the articles"}
    entry = {"kind": "claim", "command": "c", "date": "2026-12-04", "machine": machine,
             "benchmarks": {"claim-bert-vs-gpt-full": full}}  # fmt: skip
    book = results._benchmark_items([entry], "claim")
    assert "### claim-bert-vs-gpt-full" in book and "| bert-mlm | BERT | masked LM" in book
