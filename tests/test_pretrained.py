"""Pretrained checkpoints as data: the registry, verified files, ``model.init_from=NAME``,
sentence embeddings against Hugging Face's ``BertModel``, and the frozen-encoder baseline.

Only the tests named ``*minilm*`` read the real all-MiniLM-L6-v2; they skip without it.
"""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from archlab.cli import main
from archlab.config import read_recipe
from archlab.data.pretrained import MINILM, get_checkpoint, list_checkpoints
from archlab.errors import CheckpointError
from archlab.interop.sentence_transformers import SentenceEncoder, read_pooling
from archlab.nn.linear_probe import fit_logistic_regression
from archlab.nn.pooling import SentencePooling
from archlab.run import resolve
from archlab.tasks.classification import PROBE_C
from tests.conftest import data_root, require_data
from tests.test_bert import mr_checkpoint, tiny_hf_config, write_vocab  # noqa: F401  (a fixture)

transformers = pytest.importorskip("transformers", reason="transformers is a test extra")

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, witty and beautifully shot!",
    "dull",
]


@pytest.fixture
def minilm():
    return require_data(MINILM.weights.path) / MINILM.folder


def reference_embeddings(folder, texts, mode="mean", normalize=True) -> torch.Tensor:
    """The pooling formula applied to transformers.BertModel's last hidden states."""
    tokenizer = transformers.BertTokenizer.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    e = {"mean": (h * m).sum(1) / m.sum(1).clamp(min=1e-9), "cls": h[:, 0]}[mode]
    return F.normalize(e, dim=-1) if normalize else e


# ----- the registry


def test_list_checkpoints_names_minilm_and_its_page(capsys) -> None:
    assert main(["list", "checkpoints"]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in out and MINILM.page in out and "Apache-2.0" in out
    assert list_checkpoints() == ["all-MiniLM-L6-v2"]


def test_checkpoint_files_have_sha256_and_public_urls() -> None:
    checkpoint = get_checkpoint("all-MiniLM-L6-v2")
    assert checkpoint.weights.path == "pretrained/all-MiniLM-L6-v2/model.safetensors"
    for file in checkpoint.files:
        assert re.fullmatch(r"[0-9a-f]{64}", file.sha256), file.path
        inside = file.path.removeprefix(checkpoint.folder + "/")
        assert file.url == f"{checkpoint.page}/resolve/main/{inside}"
    root = data_root()
    if root is None or not (root / "SHA256SUMS").is_file():
        pytest.skip("real data: set ARCHLAB_DATA to a folder with SHA256SUMS")
    sums = dict(
        reversed(line.split(maxsplit=1)) for line in (root / "SHA256SUMS").read_text().splitlines()
    )
    assert {f.path: f.sha256 for f in checkpoint.files} == {
        f.path: sums[f.path] for f in checkpoint.files
    }


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_missing_or_altered_checkpoint_file_is_one_sentence(
    tmp_path, monkeypatch, capsys, damage
) -> None:
    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHLAB_OFFLINE", "1")
    expected = r"checkpoint 'all-MiniLM-L6-v2' is missing .*config\.json"
    if damage == "altered":
        folder = tmp_path / "data" / MINILM.folder
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")  # the first file checked
        expected = (
            r"config\.json does not match its published checksum .*from https://huggingface\.co/"
        )
    out = tmp_path / "run"
    for args in (["embed", "all-MiniLM-L6-v2", "a sentence"], ["train", "minilm-mr"]):
        assert main([*args, "--out", str(out)] if args[0] == "train" else args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("archlab: error:") and "\n" not in err, err
        assert re.search(expected, err), err
    assert not out.exists()


# ----- pooling


def test_pooling_modes_follow_their_formulas() -> None:
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    for row, n in enumerate((5, 3, 1)):
        tokens = h[row, :n]
        expected = {
            "mean": tokens.mean(0),
            "cls": tokens[0],
            "max": tokens.max(0).values,
            "mean_sqrt_len": tokens.sum(0) / n**0.5,
        }
        for mode, e in expected.items():
            torch.testing.assert_close(SentencePooling(mode, False)(h, mask)[row], e)
            torch.testing.assert_close(SentencePooling(mode, True)(h, mask)[row], e / e.norm())


def write_st_pooling(folder, normalize=True, **flags) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})  # fmt: skip
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    config = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
              "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
              "pooling_mode_mean_sqrt_len_tokens": False}  # fmt: skip
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**config, **flags}))


def test_read_pooling_follows_modules_json_and_the_pooling_config(tmp_path) -> None:
    assert read_pooling(tmp_path) is None  # a plain Hugging Face directory
    write_st_pooling(tmp_path, pooling_mode_mean_tokens=True)
    assert read_pooling(tmp_path) == SentencePooling("mean", normalize=True)
    write_st_pooling(tmp_path, normalize=False, pooling_mode_cls_token=True)
    assert read_pooling(tmp_path) == SentencePooling("cls", normalize=False)
    write_st_pooling(tmp_path, pooling_mode_cls_token=True, pooling_mode_max_tokens=True)
    with pytest.raises(CheckpointError, match="pools by exactly one of"):
        read_pooling(tmp_path)


@pytest.mark.parametrize(("mode", "normalize"), [("mean", True), ("cls", False)])
def test_sentence_encoder_matches_hf_bert_on_random_weights(tmp_path, mode, normalize) -> None:
    vocab = write_vocab(tmp_path, ["a", "man", "is", "eating", "food", ".", "the", "movie", "!"])
    torch.manual_seed(0)
    transformers.BertModel(tiny_hf_config(vocab_size=len(vocab))).save_pretrained(tmp_path)
    write_st_pooling(
        tmp_path, normalize, **{f"pooling_mode_{mode}_token{'s' * (mode == 'mean')}": True}
    )
    ours = SentenceEncoder.from_pretrained(tmp_path).embed(TEXTS)
    torch.testing.assert_close(
        ours, reference_embeddings(tmp_path, TEXTS, mode, normalize), atol=1e-5, rtol=0
    )


# ----- the real checkpoint


def test_minilm_embeddings_match_the_formula_on_hf_bert_model(minilm, tmp_path, capsys) -> None:
    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    assert encoder.pooling == SentencePooling("mean", normalize=True) and encoder.max_len == 256
    ours = encoder.embed(TEXTS)
    expected = reference_embeddings(minilm, TEXTS)
    assert ours.shape == (4, 384)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # the command line: --out saves them, --similarity prints their cosine matrix
    out = tmp_path / "e.npy"
    assert main(["embed", "all-MiniLM-L6-v2", *TEXTS, "--out", str(out), "--similarity"]) == 0
    np.testing.assert_allclose(np.load(out), expected.numpy(), atol=1e-5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["[1]", "[2]", "[3]", "[4]"]
    printed = [[float(x) for x in line.split()[1:5]] for line in lines[1:]]
    np.testing.assert_allclose(printed, (expected @ expected.T).numpy(), atol=6e-5)
    assert lines[2].endswith("  " + TEXTS[1])
    assert main(["embed", str(minilm), "dull"]) == 0  # a directory does as well as a name
    numbers = capsys.readouterr().out.split("\t")[0].split()
    np.testing.assert_allclose([float(x) for x in numbers], expected[3].numpy(), atol=1e-5)


def test_init_from_a_registered_name_records_name_and_hash(minilm, tmp_path, capsys) -> None:
    recipe = resolve(read_recipe("minilm-mr"))
    assert recipe.init_from == "all-MiniLM-L6-v2"  # a name, not a path
    pretrained = recipe.pretrained_model()
    assert pretrained.config.hidden_size == 384
    model = recipe.resolved({})["model"]
    assert model["init_from"] == "all-MiniLM-L6-v2"
    assert model["init_sha256"] == MINILM.weights.sha256
    assert recipe.task.pooling == SentencePooling("mean", normalize=True)
    # a pinned hash that differs, and a name that is not registered: one sentence each
    pinned = ["train", "minilm-mr", f"--set=model.init_sha256={'0' * 64}"]
    unknown = ["train", "bert-mr", "--set=model.init_from=all-MiniLM"]
    for args, message in (
        (pinned, "SHA-256 53aa51172d142c89..., not the 0000000000000000... that model.init_sha"),
        (unknown, "'all-MiniLM' is neither a registered checkpoint .*all-MiniLM-L6-v2"),
    ):
        assert main([*args, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and re.search(message, err), err


# ----- the frozen-encoder baseline


def test_logistic_regression_matches_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model", reason="scikit-learn is a test extra")
    g = torch.Generator().manual_seed(0)
    for K in (2, 3):
        x = torch.randn(200, 8, generator=g, dtype=torch.float64)
        y = (x @ torch.randn(8, K, generator=g, dtype=torch.float64)).argmax(1)
        for C in (0.1, 10.0):
            ours = fit_logistic_regression(x, y, C, K)
            ref = sklearn.LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(x, y)
            torch.testing.assert_close(ours.coef, torch.tensor(ref.coef_), atol=1e-5, rtol=0)
            torch.testing.assert_close(
                ours.intercept, torch.tensor(ref.intercept_), atol=1e-5, rtol=0
            )
            probability = torch.tensor(ref.predict_proba(x))
            torch.testing.assert_close(ours.log_proba(x).exp(), probability, atol=1e-6, rtol=0)


def test_frozen_logreg_baseline_over_folds(mr, mr_checkpoint, tmp_path, capsys) -> None:  # noqa: F811
    out = tmp_path / "baseline"
    args = ["baseline", "bert-mr", "--method", "frozen_logreg", "--out", str(out)]
    assert main([*args, f"--set=model.init_from={mr_checkpoint}", "--folds", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["test"]["accuracy_runs"]) == 2 and 0.5 < results["test"]["accuracy"] < 1
    assert results["repeats"] == {"key": "data.fold", "values": [0, 1]}
    assert [fold["C"] in PROBE_C for fold in results["baseline"]["folds"]] == [True, True]
    assert re.fullmatch(r"[0-9a-f]{64}", results["baseline"]["init_sha256"])
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "other")]) == 2  # bert-mr alone has no encoder
    assert "baseline embeds sentences with a pretrained encoder: set model.init_from" in (
        capsys.readouterr().err
    )
