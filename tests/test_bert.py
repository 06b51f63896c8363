"""BERT against Hugging Face (BertModel, task heads, round trips, WordPiece), bad input, learning.

And fine-tuning on MR from a Hugging Face checkpoint directory (``model.init_from``).
"""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from archlab import create_model
from archlab.cli import main
from archlab.config import apply_overrides, read_recipe
from archlab.data.tokenizers import WordPieceTokenizer
from archlab.errors import CheckpointError, ConfigError, ShapeError
from archlab.models import BERT, BERTClassifier, BERTConfig
from archlab.run import load, resolve
from archlab.tasks.classification import ClassificationData, ClassificationTask

transformers = pytest.importorskip("transformers", reason="transformers is a test extra")

VOCAB, HIDDEN, MAX_LEN = 99, 32, 64


def tiny_hf_config(**overrides) -> "transformers.BertConfig":
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=MAX_LEN,
        type_vocab_size=3,
    )
    return transformers.BertConfig(**{**settings, **overrides})


def perturb(model: torch.nn.Module) -> None:
    """Random values in every tensor (biases, LayerNorms too), so a misplaced one shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)


def save_hf(model_cls, tmp_path, **overrides):
    torch.manual_seed(0)
    model = model_cls(tiny_hf_config(**overrides)).eval()
    perturb(model)
    model.save_pretrained(tmp_path)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, an attention mask whose rows carry 0, 4 and 8 padding tokens, and segment ids."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 12), generator=g)
    lengths = torch.tensor([12, 8, 4])
    attention_mask = (torch.arange(12)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(attention_mask == 0, 0)
    token_type_ids = torch.randint(0, 3, (3, 12), generator=g) * attention_mask
    return ids, attention_mask, token_type_ids


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_against_hf_bert_model(tmp_path) -> None:
    ref = save_hf(transformers.BertModel, tmp_path)
    ours = BERT.from_hf(tmp_path).eval()
    assert (ours.config.pooler, ours.config.mlm_head, ours.config.num_classes) == (True, False, 0)
    ids, attention_mask, token_type_ids = batch()
    with torch.no_grad():
        expected = ref(ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = ours(ids, attention_mask, token_type_ids)
        # padded queries too: both attend from them to the real tokens only
        assert_close(hidden, expected.last_hidden_state)
        assert_close(ours.pool(hidden), expected.pooler_output)
        # defaults: no padding, every token in segment 0
        assert_close(ours(ids), ref(ids).last_hidden_state)


@pytest.mark.parametrize("hidden_act", ["gelu", "relu", "gelu_new"])
def test_against_hf_masked_lm(tmp_path, hidden_act: str) -> None:
    ref = save_hf(transformers.BertForMaskedLM, tmp_path, hidden_act=hidden_act)
    ours = BERT.from_hf(tmp_path).eval()
    assert (ours.config.pooler, ours.config.mlm_head, ours.config.num_classes) == (False, True, 0)
    ids, attention_mask, token_type_ids = batch()
    with torch.no_grad():
        expected = ref(ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        logits = ours.mlm_logits(ours(ids, attention_mask, token_type_ids))
    assert logits.shape == (3, 12, VOCAB)
    assert_close(logits, expected)


def test_against_hf_pretraining_ignores_next_sentence_head(tmp_path) -> None:
    ref = save_hf(transformers.BertForPreTraining, tmp_path)
    assert any(
        k.startswith("cls.seq_relationship.") for k in load_file(tmp_path / "model.safetensors")
    )
    ours = BERT.from_hf(tmp_path).eval()
    assert (ours.config.pooler, ours.config.mlm_head) == (True, True)
    ids, attention_mask, token_type_ids = batch()
    with torch.no_grad():
        expected = ref(ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = ours(ids, attention_mask, token_type_ids)
        assert_close(ours.mlm_logits(hidden), expected.prediction_logits)


def test_against_hf_sequence_classification(tmp_path) -> None:
    ref = save_hf(transformers.BertForSequenceClassification, tmp_path, num_labels=3)
    ours = BERTClassifier.from_hf(tmp_path).eval()
    assert (ours.config.pooler, ours.config.mlm_head, ours.config.num_classes) == (True, False, 3)
    ids, attention_mask, token_type_ids = batch()
    with torch.no_grad():
        expected = ref(ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        assert_close(ours(ids, attention_mask, token_type_ids), expected)


def test_mean_pooled_classifier_reads_the_masked_mean_and_has_no_hf_form(tmp_path) -> None:
    """pooling=mean: logits = W_c mean_{t: m_t = 1} h_t + b_c (no pooler, no HF class)."""
    save_hf(transformers.BertModel, tmp_path)
    ours = BERTClassifier(BERTConfig(**{**BERT.from_hf(tmp_path).config.__dict__,
                          "pooler": False, "mlm_head": False, "num_classes": 3,
                          "pooling": "mean"}))  # fmt: skip
    ours.load_pretrained(BERT.from_hf(tmp_path))
    ours.eval()
    ids, attention_mask, _ = batch()
    with torch.no_grad():
        h = ours.hidden_states(ids, attention_mask)
        mean = torch.stack([h[i, attention_mask[i] == 1].mean(0) for i in range(len(ids))])
        assert_close(ours(ids, attention_mask), ours.classifier(mean))
    with pytest.raises(CheckpointError, match="BertForSequenceClassification .* cannot express"):
        ours.to_hf(tmp_path / "out")


def test_against_hf_legacy_layernorm_names(tmp_path) -> None:
    """TF-converted checkpoints (bert-base-uncased) name LayerNorm parameters gamma/beta."""
    ref = save_hf(transformers.BertModel, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    renamed = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in state.items()
    }
    assert renamed.keys() != state.keys()
    save_file(renamed, tmp_path / "model.safetensors")
    ours = BERT.from_hf(tmp_path).eval()
    ids = batch()[0]
    with torch.no_grad():
        assert_close(ours(ids), ref(ids).last_hidden_state)


ROUND_TRIPS = {
    "masked_lm": (dict(pooler=False, mlm_head=True, activation="gelu_tanh"), "BertForMaskedLM"),
    "base": (dict(pooler=True, mlm_head=False), "BertModel"),
    "classifier": (
        dict(pooler=True, mlm_head=False, num_classes=4, activation="relu"),
        "BertForSequenceClassification",
    ),
}


@pytest.mark.parametrize("kind", sorted(ROUND_TRIPS))
def test_against_hf_round_trip(tmp_path, kind: str) -> None:
    heads, hf_class = ROUND_TRIPS[kind]
    torch.manual_seed(2)
    config = BERTConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=2, n_head=4, d_ff=37, max_len=MAX_LEN, **heads
    )
    ours = BERT(config).eval()
    perturb(ours)
    ours.to_hf(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    assert not any(k.startswith("cls.predictions.decoder") for k in stored)
    ref, info = getattr(transformers, hf_class).from_pretrained(tmp_path, output_loading_info=True)
    ref.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, attention_mask, token_type_ids = batch()
    token_type_ids = token_type_ids.clamp(max=1)
    with torch.no_grad():
        out = ref(ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = ours(ids, attention_mask, token_type_ids)
        if kind == "masked_lm":
            assert_close(ours.mlm_logits(hidden), out.logits)
        elif kind == "base":
            assert_close(hidden, out.last_hidden_state)
            assert_close(ours.pool(hidden), out.pooler_output)
        else:
            classifier = BERTClassifier.from_hf(tmp_path).eval()
            assert_close(classifier(ids, attention_mask, token_type_ids), out.logits)
    again = BERT.from_hf(tmp_path)
    assert again.config == ours.config
    for name, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_missing_weights_file_is_a_checkpoint_error(tmp_path) -> None:
    save_hf(transformers.BertModel, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks model.safetensors"):
        BERT.from_hf(tmp_path)


def edit_config(tmp_path, **changes) -> None:
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_wrong_model_type_is_a_checkpoint_error(tmp_path) -> None:
    save_hf(transformers.BertModel, tmp_path)
    edit_config(tmp_path, model_type="gpt2")
    with pytest.raises(CheckpointError, match="model_type 'gpt2', expected 'bert'"):
        BERT.from_hf(tmp_path)


def test_wrong_tensor_shape_names_tensor_and_shapes(tmp_path) -> None:
    save_hf(transformers.BertForMaskedLM, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    name = "bert.encoder.layer.1.attention.self.value.weight"
    state[name] = torch.zeros(HIDDEN, 16)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"'{name}' has shape \(32, 16\).*\(32, 32\)"):
        BERT.from_hf(tmp_path)


def test_missing_tensor_is_a_checkpoint_error(tmp_path) -> None:
    save_hf(transformers.BertForMaskedLM, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["cls.predictions.transform.LayerNorm.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match="lacks tensor 'cls.predictions.transform.LayerNorm.bias'"
    ):
        BERT.from_hf(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(position_embedding_type="relative_key"), "position_embedding_type"),
        (dict(hidden_act="silu"), "hidden_act 'silu'"),
        (dict(is_decoder=True), "is_decoder"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings"),
    ],
)
def test_unsupported_config_is_a_checkpoint_error(tmp_path, change: dict, message: str) -> None:
    save_hf(transformers.BertForMaskedLM, tmp_path)
    edit_config(tmp_path, **change)
    with pytest.raises(CheckpointError, match=message):
        BERT.from_hf(tmp_path)


@pytest.mark.parametrize(
    ("hf_class", "message"),
    [
        ("BertForQuestionAnswering", "does not model: qa_outputs.bias, qa_outputs.weight"),
        ("BertForTokenClassification", "classifier but no pooler"),
    ],
)
def test_other_task_heads_are_refused(tmp_path, hf_class: str, message: str) -> None:
    save_hf(getattr(transformers, hf_class), tmp_path)
    with pytest.raises(CheckpointError, match=message):
        BERT.from_hf(tmp_path)


def small_bert(**overrides) -> BERT:
    torch.manual_seed(0)
    config = dict(vocab_size=20, hidden_size=32, n_layer=2, n_head=4, d_ff=64, max_len=16)
    return BERT(BERTConfig(**{**config, **overrides})).eval()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(torch.rand(2, 5)), "integer tensor of shape"),
        (lambda m: m(torch.ones(5, dtype=torch.long)), "integer tensor of shape"),
        (lambda m: m(torch.full((2, 5), 20)), r"\[0, 20\).*found 20"),
        (lambda m: m(torch.ones(2, 17, dtype=torch.long)), "17 tokens exceeds the 16 positions"),
        (
            lambda m: m(
                torch.ones(2, 5, dtype=torch.long), token_type_ids=torch.zeros(2, 4).long()
            ),
            "token_type_ids must have the shape",
        ),
        (
            lambda m: m(torch.ones(2, 5, dtype=torch.long), token_type_ids=torch.full((2, 5), 2)),
            r"token_type_ids must lie in \[0, 2\)",
        ),
        (
            lambda m: m(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 6)),
            "attention_mask must have the shape",
        ),
        (
            lambda m: m(
                torch.ones(2, 5, dtype=torch.long), attention_mask=torch.full((2, 5), -1e4)
            ),
            "only 1",
        ),
        (
            lambda m: m(
                torch.ones(2, 5, dtype=torch.long),
                attention_mask=torch.tensor([[1, 1, 0, 0, 0], [0] * 5]),
            ),
            "hides every token",
        ),
        (lambda m: m.mlm_logits(torch.zeros(2, 5, 31)), r"shape \(batch, time, 32\)"),
    ],
)
def test_bad_input_is_a_shape_error(call, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        call(small_bert())


def test_missing_heads_are_config_errors() -> None:
    model = small_bert(pooler=False, mlm_head=False)
    ids = torch.ones(1, 3, dtype=torch.long)
    hidden = model(ids)
    assert hidden.shape == (1, 3, 32)
    for call, message in (
        (lambda: model.pool(hidden), "no pooler"),
        (lambda: model.mlm_logits(hidden), "no masked-LM head"),
        (lambda: BERTClassifier(model.config)(ids), "no classification head"),
    ):
        with pytest.raises(ConfigError, match=message):
            call()
    with pytest.raises(ConfigError, match="needs pooler"):
        BERTConfig(pooler=False, num_classes=2)


def test_padding_does_not_change_the_real_tokens() -> None:
    model = small_bert()
    ids = torch.randint(1, 20, (1, 6))
    padded = torch.cat((ids, torch.zeros(1, 4, dtype=torch.long)), dim=1)
    mask = torch.cat((torch.ones(1, 6), torch.zeros(1, 4)), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask)[:, :6], model(ids), atol=1e-5, rtol=1e-5)


def test_registered_and_initialised_like_hf() -> None:
    model = create_model("bert", vocab_size=30, hidden_size=16, n_layer=1, n_head=2, d_ff=32)
    assert isinstance(model, BERT) and model.config.mlm_head
    assert torch.all(model.token_emb.weight[0] == 0)  # [PAD]
    assert abs(float(model.blocks[0].ff.W_1.weight.detach().std()) - 0.02) < 0.005
    assert torch.all(model.blocks[0].ff.W_1.bias == 0) and torch.all(model.mlm.bias == 0)


def test_masked_lm_training_lowers_the_loss() -> None:
    """A few AdamW steps on a repeated pattern: the MLM loss falls to under a third."""
    torch.manual_seed(0)
    model = BERT(
        BERTConfig(
            vocab_size=12,
            hidden_size=32,
            n_layer=2,
            n_head=4,
            d_ff=64,
            max_len=24,
            dropout=0.0,
            attn_dropout=0.0,
            pooler=False,
        )
    )
    mask_id, pattern = 1, torch.tensor([2, 3, 4, 5, 6, 7])
    ids = pattern.repeat(16, 4)  # (16, 24)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        masked = torch.rand(ids.shape) < 0.15
        logits = model.mlm_logits(model(ids.masked_fill(masked, mask_id)))
        loss = F.cross_entropy(logits[masked], ids[masked])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)


# ----- fine-tuning from a Hugging Face checkpoint: archlab train bert-mr --set model.init_from=DIR


def write_vocab(path, words) -> list[str]:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return vocab


@pytest.mark.parametrize("lower_case", [True, False])
def test_wordpiece_tokenizes_as_hf_bert_tokenizer(tmp_path, lower_case: bool) -> None:
    write_vocab(tmp_path, ["dull", "Dull", "film", "##s", ","])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower_case}))
    ours = WordPieceTokenizer.from_checkpoint(tmp_path)
    ref = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=lower_case)
    text = "Dull films, DULL"
    expected = ref(text)["input_ids"]
    assert ours.encode(text) == expected
    word, shouted = ("dull", "dull") if lower_case else ("Dull", "[UNK]")
    tokens = ["[CLS]", word, "film", "##s", ",", shouted, "[SEP]"]
    assert ref.convert_ids_to_tokens(expected) == tokens
    assert ours.encode(text, 4) == ref(text, truncation=True, max_length=4)["input_ids"]
    ours.save(tmp_path / "tokenizer.json")
    assert WordPieceTokenizer.load(tmp_path / "tokenizer.json").encode(text) == expected


@pytest.fixture
def mr_checkpoint(mr, tmp_path):
    """A random tiny BertForPreTraining with a vocab.txt of MR training words, as HF saves them."""
    task = ClassificationTask(ClassificationData())
    task.setup()  # its word vocabulary: the training split's words by frequency
    words = [w for w in task.tokenizer.symbols if re.fullmatch(r"[a-z0-9]+|[^\w\s<>]", w)]
    path = tmp_path / "hf-bert"
    path.mkdir()
    vocab = write_vocab(path, words[:3000])
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    torch.manual_seed(0)
    config = tiny_hf_config(vocab_size=len(vocab), intermediate_size=64, type_vocab_size=2)
    transformers.BertForPreTraining(config).save_pretrained(path)
    return path


def test_init_from_loads_the_hf_encoder_and_tokenizer(mr_checkpoint, capsys) -> None:
    recipe = resolve(apply_overrides(read_recipe("bert-mr"), [f"model.init_from={mr_checkpoint}"]))
    pretrained = recipe.pretrained_model()
    recipe.task.setup()
    model, config = recipe.build_model(pretrained)
    # the checkpoint's architecture, the task's classes, the recipe's heads
    assert (config["hidden_size"], config["n_layer"], config["d_ff"]) == (HIDDEN, 2, 64)
    assert (config["num_classes"], config["pooler"], config["mlm_head"]) == (2, True, False)
    note = capsys.readouterr().err
    assert "hidden_size 256 -> 32, n_layer 4 -> 2, d_ff 1024 -> 64" in note
    assert "new: classifier.bias, classifier.weight" in note
    # the text is tokenized as Hugging Face's BertTokenizer does it: [CLS] pieces [SEP]
    texts = ['the rock is destined to be the 21st century\'s new " conan "', "Dull AND tedious"]
    reference = transformers.BertTokenizer(str(mr_checkpoint / "vocab.txt"), do_lower_case=True)
    expected_ids = reference(texts, truncation=True, max_length=64)["input_ids"]
    assert [recipe.task._encode(t) for t in texts] == expected_ids
    # and the encoder computes what Hugging Face's computes, on real MR sentences
    ids, mask = recipe.task._pad(recipe.task.examples["val"][0][:16])
    assert bool((mask == 0).any())  # padded rows too
    ref = transformers.BertModel.from_pretrained(mr_checkpoint).eval()
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask)
        hidden = model.eval().hidden_states(ids, mask)
        assert_close(hidden, expected.last_hidden_state)
        assert_close(model.pool(hidden), expected.pooler_output)


def test_fine_tuning_from_hf_learns_then_predicts_without_the_checkpoint(
    mr_checkpoint, tmp_path, capsys
) -> None:
    run_dir = tmp_path / "run"
    settings = [
        f"model.init_from={mr_checkpoint}",
        "model.dropout=0",
        "model.attn_dropout=0",
        "trainer.max_steps=100",  # a random BERT sits near ln 2 for ~80 steps, then learns
        "trainer.schedule=constant",
        "trainer.warmup_steps=0",
        "trainer.lr=1e-3",
        "trainer.eval_every=100",
        "trainer.log_every=1",
    ]
    args = ["train", "bert-mr", *[f"--set={s}" for s in settings], "--out", str(run_dir)]
    assert main(args) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.05, losses
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test"]["accuracy"] > 0.6  # chance is 0.5
    assert (run_dir / "tokenizer.json").is_file() and not (run_dir / "vocab.json").exists()

    mr_checkpoint.rename(tmp_path / "moved")  # the run directory holds all inference needs
    assert main(["eval", str(run_dir), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(results["test"], abs=1e-6)
    texts = ["a gorgeous , witty , seductive movie .", "dull , lifeless and tedious ."]
    assert main(["predict", str(run_dir), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["positive", "negative"]
    assert all(0.5 <= float(line.split("\t")[1]) <= 1 for line in lines)

    # the run embeds: the masked mean of its fine-tuned last hidden states, L2-normalised
    run = load(run_dir)
    assert run.verbs == {"predict", "embed"}
    assert main(["embed", str(run_dir), *texts, "--out", str(tmp_path / "e.npy")]) == 0
    ids, mask = run.task._pad([run.task._encode(t) for t in texts])
    with torch.no_grad():
        h = run.model.hidden_states(ids, mask)
    m = mask.unsqueeze(-1).float()
    expected = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert_close(torch.from_numpy(np.load(tmp_path / "e.npy")), expected)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A tiny BertForPreTraining checkpoint with a vocab.txt of its 99 tokens."""
    save_hf(transformers.BertForPreTraining, tmp_path)
    write_vocab(tmp_path, [f"w{i}" for i in range(VOCAB - 5)])
    return tmp_path


@pytest.mark.parametrize(
    ("recipe", "damage", "message"),
    [
        ("bert-mr", lambda p: p / "absent", "checkpoint directory '.*absent' does not exist"),
        ("bert-mr", lambda p: (p / "config.json").unlink(), "lacks config.json"),
        ("bert-mr", lambda p: edit_config(p, model_type="gpt2"), "model_type 'gpt2', expected"),
        ("bert-mr", lambda p: (p / "vocab.txt").unlink(), "has no vocab.txt"),
        ("cnn-mr", lambda p: None, "model textcnn cannot start from a pretrained checkpoint"),
    ],
)
def test_init_from_errors_are_one_sentence(tiny_checkpoint, capsys, recipe, damage, message):
    path = damage(tiny_checkpoint) or tiny_checkpoint
    out = tiny_checkpoint / "run"
    assert main(["train", recipe, f"--set=model.init_from={path}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archlab: error:") and "\n" not in err, err
    assert re.search(message, err), err
    assert not out.exists()


def test_init_from_refuses_a_vocabulary_of_another_size(mr, tiny_checkpoint, capsys) -> None:
    write_vocab(tiny_checkpoint, ["a", "b"])
    args = ["train", "bert-mr", f"--set=model.init_from={tiny_checkpoint}"]
    assert main([*args, "--out", str(tiny_checkpoint / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "the task needs model.vocab_size=7, but the checkpoint" in err
    assert "has vocab_size=99" in err and "\n" not in err
