"""`archlab bench demo`: the demo's wall time against the raw step loop plus its evaluations."""

import json

from archlab.cli import main


def test_bench_demo_quick_times_the_recipe_against_the_raw_loop(
    shakespeare, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    assert main(["bench", "demo", "--quick", "--out", str(out)]) == 0
    assert "overhead (target <= 1.05)" in capsys.readouterr().out
    demo = json.loads(out.read_text())["benchmarks"]["demo"]
    assert demo["precision"] in ("fp32", "bf16") and demo["evaluations"] == 2
    assert demo["wall_seconds"] > demo["train_seconds"] > 0
    assert demo["raw_tokens_per_s"] > 0 and demo["overhead"] > 0
    assert demo["command"].startswith("archlab train gpt-shakespeare-char")
