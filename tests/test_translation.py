"""Translation on real Multi30k: BPE on the training split, learning, BLEU, translate CLI."""

import subprocess
import sys

import pytest

from archlab.data.tokenizers import SubwordTokenizer
from archlab.errors import ArchlabError, ConfigError
from archlab.run import load, train
from tests.conftest import TINY_TRANSLATION


def test_bpe_round_trips_raw_text_and_reserves_special_ids(tmp_path) -> None:
    texts = ["Ein Mann fährt Fahrrad.", "A man rides a bike.", "Zwei Hunde spielen im Schnee."] * 20
    tok = SubwordTokenizer.train(texts, vocab_size=120)
    for text in texts[:3]:
        assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "tok.json")
    again = SubwordTokenizer.load(tmp_path / "tok.json")
    assert again.encode(texts[0]) == tok.encode(texts[0])
    assert [again.tokenizer.id_to_token(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]


def test_translation_learns_and_translates(multi30k, tmp_path) -> None:
    run_dir, results = train(
        "transformer-multi30k",
        [*TINY_TRANSLATION, "trainer.max_steps=40", "trainer.eval_every=20"],
        out=str(tmp_path / "run"),
        progress=False,
    )
    # ln(1000) = 6.9 is a uniform guess over the vocabulary
    assert results["val"]["loss"] < 5.9 and results["test"]["loss"] < 5.9
    assert 0 <= results["test"]["bleu"] <= 100
    run = load(run_dir)
    text = run.task.translate(run.model, "Ein Mann fährt Fahrrad.", beam=2)
    assert isinstance(text, str)  # 40 steps in, it may well be empty
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "archlab",
            "translate",
            str(run_dir),
            "Ein Hund läuft.",
            "--beam",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ArchlabError, match="empty"):
        run.task.translate(run.model, "   ")


def test_unsupported_language_pair_is_refused(multi30k, tmp_path) -> None:
    with pytest.raises(ConfigError, match="must be 'de' and 'en'"):
        train("transformer-multi30k", ["data.source=fr"], out=str(tmp_path / "r"), progress=False)
