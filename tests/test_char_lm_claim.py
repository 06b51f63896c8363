"""scripts/char_lm.py: LSTM, TCN and GPT at one parameter count and one time budget, tiny."""

import importlib.util
import json
from pathlib import Path

import archlab

ROOT = Path(__file__).resolve().parent.parent


def char_lm():
    spec = importlib.util.spec_from_file_location("char_lm", ROOT / "scripts/char_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_get_the_gpts_parameter_count() -> None:
    cl = char_lm()
    gpt = cl.recipe_gpt()
    target = cl.budget(tuple(sorted(gpt.items())))
    assert 790_000 < target < 830_000  # the recipe's 4 x 128 GPT
    for model in ("lstm", "tcn"):
        values = cl.size_values(model, gpt)
        n = cl.parameters(
            archlab.create_model(cl.MODELS[model], **values, vocab_size=65, out_dim=65)
        )
        assert abs(n - target) < 0.02 * target, (model, n)


def test_a_tiny_comparison_runs_and_collects(shakespeare, tmp_path, monkeypatch, capsys) -> None:
    cl = char_lm()
    monkeypatch.setattr(cl, "recipe_gpt", lambda: {"n_layer": 1, "n_head": 2, "n_embd": 16})
    sets = ["data.block_size=16", "data.val_fraction=0.01", "trainer.batch_size=4"]
    sets.append("trainer.precision=fp32")
    common = [f"--set={s}" for s in sets] + ["--runs", str(tmp_path / "runs")]
    timing = ["--timing-steps", "2", "--timing-rounds", "2", "--minutes", "0.01"]
    cl.main(["run", *common, *timing, "--models", "lstm", "gpt"])
    assert (tmp_path / "runs/lstm/results.json").is_file()
    out, img = tmp_path / "claim.json", tmp_path / "img"
    cl.main(["collect", *common, "--out", str(out), "--img", str(img)])
    claim = json.loads(out.read_text())["benchmarks"]["claim-char-lm"]
    assert set(claim["results"]) == {"lstm", "gpt"} and claim["missing"] == ["tcn"]
    row = claim["results"]["lstm"]
    assert row["val_loss"] > 0 and row["steps"] >= 1 and row["curve"][-1][1] > 0
    assert row["timed_steps_per_s"] > 0 and row["precision"] == "fp32"
    assert row["model"]["name"] == "seq_lstm" and row["model"]["n_layer"] == 2
    assert "validation loss at equal parameters" in claim["summary"]
    assert (
        "(0.01 min)" in claim["reference"]
        and "--minutes 0.01" in json.loads(out.read_text())["command"]
    )
    assert (img / "char-lm.png").is_file()


def test_runs_are_also_compared_at_the_shortest_runs_time() -> None:
    cl = char_lm()
    curve = [[10.0, 2.0], [20.0, 1.8], [30.0, 1.7]]
    assert cl.at_seconds(curve, 20.5) == (20.0, 1.8)
    assert cl.at_seconds(curve, 30.0) == (30.0, 1.7)
    assert cl.at_seconds(curve, 5.0) == (5.0, None)
