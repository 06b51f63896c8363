"""The command line as a user runs it: help, listing, errors with exit code 2."""

import subprocess
import sys

import pytest

from archlab.cli import main


def test_list_models_prints_every_model_with_its_size(capsys) -> None:
    from archlab import list_models

    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert f"\n{name} " in out
    assert "124,439,808" in out  # GPT-2 small at its default config


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "archlab", "list"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "gpt" in proc.stdout


@pytest.mark.parametrize("command", [[], ["list"], ["bench"]])
def test_every_command_has_help(command, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: archlab" in capsys.readouterr().out


def test_unknown_benchmark_is_one_clear_sentence(capsys) -> None:
    assert main(["bench", "gtp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archlab: error: unknown benchmark 'gtp'; did you mean gpt?")
    assert "\n" not in err


def test_bench_gpt_quick_prints_ratios(tmp_path, capsys) -> None:
    pytest.importorskip("transformers", reason="the benchmark compares against transformers")
    out_file = tmp_path / "bench.json"
    assert main(["bench", "gpt", "--quick", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "train tokens/s" in out and "generate tokens/s" in out
    assert "greedy tokens identical to Hugging Face: True" in out
    assert out_file.exists()
