"""scripts/long_range.py: the long-range claim's harness, on a tiny sweep."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def long_range():
    spec = importlib.util.spec_from_file_location("long_range", ROOT / "scripts/long_range.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_get_the_same_parameter_budget() -> None:
    lr = long_range()
    import archlab

    for task, spec in lr.TASKS.items():
        in_dim, out_dim = spec["dims"]
        for model, name in lr.MODELS.items():
            values = dict(lr.size_values(model, task), in_dim=in_dim, out_dim=out_dim)
            n = lr.parameters(archlab.create_model(name, **values))
            assert abs(n - spec["budget"]) < 0.08 * spec["budget"], (task, model, n)


def test_a_tiny_sweep_runs_resumes_and_collects_verdicts(tmp_path, capsys) -> None:
    lr = long_range()
    runs = ["--runs", str(tmp_path / "runs")]
    common = ["--tasks", "copy", "--T", "4", "8", "--steps", "2", *runs]
    two = ["--models", "lstm", "transformer"]
    lr.main(["run", *common, *two])
    assert len(list((tmp_path / "runs").glob("*/results.json"))) == 4
    capsys.readouterr()
    lr.main(["run", *common, *two])  # every cell is done: nothing runs again
    assert capsys.readouterr().out == ""
    out, img = tmp_path / "claim.json", tmp_path / "img"
    lr.main(["collect", *common, "--out", str(out), "--img", str(img)])
    entry = json.loads(out.read_text())
    assert entry["kind"] == "claim" and entry["name"] == "claim-long-range"
    claim = entry["benchmarks"]["claim-long-range"]
    assert set(claim["results"]["copy"]) == {"lstm", "transformer"}
    assert "copy-T4-tcn" in claim["missing"]
    cell = claim["results"]["copy"]["lstm"]["8"]
    assert cell["steps"] == 2 and cell["tokens_per_s"] > 0 and cell["error"] > 0
    assert set(claim["verdicts"]) == {"lstm", "gru", "tcn"}
    sentence = claim["verdicts"]["lstm"]
    assert any(w in sentence for w in ("holds", "does not hold", "not supported"))
    assert claim["verdicts"]["gru"] == "gru: no cells recorded"
    assert (img / "long-range-copy.png").is_file()
    # the results file names the command that made it: collect told the steps here ...
    assert entry["command"].startswith("python scripts/long_range.py run --tasks copy --T 4 8 ")
    assert entry["command"].count("--steps 2") == 2
    # ... and where it is not, run's steps are read from the runs
    lr.main(["collect", "--tasks", "copy", "--T", "4", "8", *runs, "--out", str(out),
             "--img", str(img)])  # fmt: skip
    command = json.loads(out.read_text())["command"]
    assert " run --tasks copy --T 4 8 --runs " in command and command.count("--steps 2") == 1
