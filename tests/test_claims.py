"""archlab claims: the six claims, their recorded verdicts, and steps that can run."""

import re
import shlex
import subprocess
import sys

import pytest

from archlab import claims
from archlab.cli import build_parser
from archlab.config import apply_overrides, read_recipe
from archlab.run import resolve
from tests.conftest import cli


def test_every_claim_of_the_mission_is_wired_at_both_budgets() -> None:
    assert sorted(c.number for c in claims.CLAIMS.values()) == [1, 2, 3, 4, 5, 6]
    for claim in claims.CLAIMS.values():
        assert set(claim.steps) == set(claims.BUDGETS) and all(claim.steps.values())
    assert sum(c.minutes["small"] for c in claims.CLAIMS.values()) <= 130


@pytest.mark.parametrize("budget", claims.BUDGETS)
def test_every_training_step_is_a_valid_command_and_recipe(budget: str) -> None:
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
    bad = cli("claims", "gat")
    assert bad.returncode == 2 and "unknown claim 'gat'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_failing_step_stops_the_run_with_its_exit_code(monkeypatch, capsys) -> None:
    fake = claims.Claim(9, "x", (), {"small": ("archlab train no-such-recipe", "script x.py")},
                        {"small": 1})  # fmt: skip
    monkeypatch.setattr(claims, "CLAIMS", {"fake": fake})
    assert claims.run_claims("fake", "small") == 2
    assert "script x.py" not in capsys.readouterr().out  # the second step never ran
