"""`archlab bench seq`: TCN against the authors' form, seq_lstm against torch.nn.LSTM."""

import json

from archlab.cli import main


def test_bench_seq_quick_writes_rates_and_ratios(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "seq", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TCN step vs recompute" in printed and "LSTM train steps/s" in printed
    seq = json.loads(out.read_text())["benchmarks"]["seq"]
    assert set(seq["train_steps_per_s"]) == {"tcn", "tcn_authors", "seq_lstm", "torch_lstm"}
    assert set(seq["inference_steps_per_s"]) == {
        "tcn_step",
        "tcn_recompute",
        "tcn_authors_recompute",
        "seq_lstm_step",
        "torch_lstm_step",
    }
    rates = [*seq["train_steps_per_s"].values(), *seq["inference_steps_per_s"].values()]
    assert all(rate > 0 for rate in rates)
    assert set(seq["ratios"]) >= {"tcn_train", "lstm_train", "tcn_step_vs_recompute"}
    assert seq["step_equals_recompute"] is True  # the same weights give the same output
    assert seq["config"]["tcn_parameters"] > 0 and seq["summary"].startswith("training at T")
