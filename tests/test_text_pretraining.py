"""Pretraining objectives (masked LM, left-to-right LM) against Hugging Face, and fine-tuning
a classifier from a pretraining run (claim 6: bidirectional against left-to-right context)."""

import json
import math

import pytest
import torch
import yaml

import archlab
from archlab.data.tokenizers import WordPieceTokenizer
from archlab.errors import ConfigError
from archlab.run import train
from archlab.tasks.text_pretraining import IGNORE, TextPretrainingData, TextPretrainingTask

transformers = pytest.importorskip("transformers")

TEXT = [
    "a man is riding a bicycle down the street .",
    "two dogs play in the snow .",
    "a woman is reading a book in the park .",
    "the film is a charming , funny and moving story .",
    "a boring , tedious film with nothing to say .",
] * 4


def task_with(objective: str, **data) -> TextPretrainingTask:
    """A task on TEXT, without the real corpus: the tokenizer and sentences set by hand."""
    task = TextPretrainingTask(TextPretrainingData(objective=objective, **data))
    task.tokenizer = WordPieceTokenizer.train(TEXT, 60)
    task.sentences = {"val": [task.tokenizer.encode(s, 16) for s in TEXT[:5]]}
    return task


def tiny_bert(vocab: int):
    return archlab.create_model(
        "bert", vocab_size=vocab, hidden_size=16, n_layer=2, n_head=2, d_ff=32, max_len=16,
        pooler=False, mlm_head=True,
    ).eval()  # fmt: skip


def tiny_gpt(vocab: int):
    return archlab.create_model(
        "gpt", vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=16
    ).eval()


def test_a_trained_wordpiece_vocabulary_numbers_its_pieces_in_sorted_order() -> None:
    """The trainer numbers pieces in Rust hash-map order, seeded per process, so the same
    pieces got other ids (and a model other initial embeddings) in every process."""
    tokenizer = WordPieceTokenizer.train(TEXT, 60)
    vocab = tokenizer.tokenizer.get_vocab()
    by_id = sorted(vocab, key=vocab.get)
    specials = [*WordPieceTokenizer.SPECIALS, "[MASK]"]
    assert by_id[:5] == specials
    assert by_id[5:] == sorted(by_id[5:]) and len(by_id) == 60
    assert tokenizer.encode("the film is charming .")[0] == tokenizer.cls_id == 2
    assert "##ing" in tokenizer.tokenizer.encode("charming").tokens  # pieces still longest-match


def test_mlm_chooses_words_only_and_corrupts_80_10_10() -> None:
    task = task_with("mlm", mask_prob=0.15)
    tok = task.tokenizer
    seqs = [tok.encode(s, 16) for s in TEXT] * 100
    ids, mask = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], True), None
    mask = (ids != tok.pad_id).long()
    inputs, _, targets = task.corrupt(ids, mask, torch.Generator().manual_seed(0))
    chosen = targets != IGNORE
    words = (mask == 1) & (ids != tok.cls_id) & (ids != tok.sep_id)
    assert not (chosen & ~words).any()  # never [CLS], [SEP] or padding
    assert (chosen.sum(1) >= 1).all()
    expected = (words.sum(1) * 0.15).round().clamp(min=1)
    assert torch.equal(chosen.sum(1), expected.long())
    assert torch.equal(targets[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    n = chosen.sum().item()
    masked = (inputs[chosen] == tok.mask_id).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    assert 0.77 < masked < 0.83 and 0.08 < kept < 0.14  # 80 %, 10 % (+ random hits)
    again = task.corrupt(ids, mask, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], inputs)


def test_mlm_loss_and_pseudo_perplexity_match_hugging_face(tmp_path) -> None:
    task = task_with("mlm")
    model = tiny_bert(task.tokenizer.vocab_size)
    model.to_hf(tmp_path / "bert")
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "bert").eval()
    seqs = task.sentences["val"]
    batch = task._batch(seqs, torch.Generator().manual_seed(1))
    inputs, mask, targets = batch
    with torch.no_grad():
        ours = task.loss(model, batch).item()
        theirs = hf(input_ids=inputs, attention_mask=mask, labels=targets).loss.item()
        assert ours == pytest.approx(theirs, abs=1e-5)
        # pseudo-log-likelihood, one piece masked at a time (Salazar et al. 2020)
        total, count = 0.0, 0
        for seq in seqs:
            for t in range(1, len(seq) - 1):
                masked = torch.tensor([seq])
                masked[0, t] = task.tokenizer.mask_id
                logp = hf(input_ids=masked).logits[0, t].log_softmax(-1)
                total, count = total - logp[seq[t]].item(), count + 1
        metrics = task.final_metrics(model, "val", batch_size=7)
    assert metrics["pieces"] == count
    assert metrics["pseudo_perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_clm_loss_and_perplexity_match_hugging_face(tmp_path) -> None:
    task = task_with("clm")
    model = tiny_gpt(task.tokenizer.vocab_size)
    model.to_hf(tmp_path / "gpt")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt").eval()
    seqs = task.sentences["val"]
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], True)
    labels = ids.masked_fill(ids == task.tokenizer.pad_id, -100)
    with torch.no_grad():
        ours = task.loss(model, task._batch(seqs, torch.Generator())).item()
        assert ours == pytest.approx(hf(input_ids=ids, labels=labels).loss.item(), abs=1e-5)
        # perplexity of the words (not [CLS], not [SEP]) by the chain rule, written out
        total, count = 0.0, 0
        for seq in seqs:
            logp = hf(input_ids=torch.tensor([seq])).logits[0].log_softmax(-1)
            for t in range(1, len(seq) - 1):
                total, count = total - logp[t - 1, seq[t]].item(), count + 1
        metrics = task.final_metrics(model, "val", batch_size=2)
    assert metrics["pieces"] == count
    assert metrics["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_gpt_classifier_reads_the_last_real_tokens_state(tmp_path) -> None:
    clf = archlab.create_model(
        "gpt_classifier", vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16
    ).eval()
    gpt = tiny_gpt(50)
    assert gpt.load_pretrained(clf) == []  # the trunk is the same GPT
    gpt.to_hf(tmp_path / "gpt")
    hf = transformers.GPT2Model.from_pretrained(tmp_path / "gpt").eval()
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 7:] = 0
    with torch.no_grad():
        logits = clf(ids, mask)
        for row, length in enumerate((9, 4, 7)):
            h = hf(input_ids=ids[row : row + 1, :length]).last_hidden_state[0, -1]
            assert torch.allclose(logits[row], clf.classifier(h), atol=1e-5)


def test_pretraining_refuses_a_model_of_the_other_objective() -> None:
    from archlab.config import read_recipe
    from archlab.run import resolve

    recipe = read_recipe("gpt-clm-mr")
    recipe["data"]["objective"] = "mlm"
    task = resolve(recipe).task
    with pytest.raises(ConfigError, match="objective mlm trains a model of role Encoder, not GPT"):
        task.use_model(tiny_gpt(50))


@pytest.mark.parametrize(
    ("pretrain", "finetune", "sets"),
    [
        ("bert-mlm-mr", "bert-mr", ["model.hidden_size=32", "model.pooling=mean"]),
        ("gpt-clm-mr", "gpt-mr", ["model.n_embd=32"]),
    ],
)
def test_pretraining_learns_and_a_classifier_starts_from_the_run(
    mr, multi30k, tmp_path, pretrain: str, finetune: str, sets: list[str]
) -> None:
    tiny = [*sets, "model.n_layer=1", "model.n_head=2", "model.d_ff=64", "data.vocab_size=600"]
    tiny += ["trainer.max_steps=60", "trainer.eval_every=30", "trainer.warmup_steps=5"]
    tiny += ["trainer.lr=3e-3"]
    run_dir, results = train(pretrain, tiny, out=str(tmp_path / "pre"), progress=False)
    vocab = json.loads((run_dir / "model.json").read_text())["config"]["vocab_size"]
    assert results["val"]["loss"] < math.log(vocab) - 0.5  # well below a uniform guess
    key = "pseudo_perplexity" if pretrain.startswith("bert") else "perplexity"
    assert 1 < results["val"][key] < 600
    fine = [f"model.init_from={run_dir}", "trainer.max_epochs=3", "trainer.warmup_steps=5"]
    fine += ["trainer.lr=3e-3"]  # 1 epoch left 3 of 4 seeds of the 1-layer BERT at chance
    fine_dir, fine_results = train(finetune, fine, out=str(tmp_path / "fine"), progress=False)
    config = yaml.safe_load((fine_dir / "config.yaml").read_text())
    assert config["model"]["init_from"] == str(run_dir)
    assert len(config["model"]["init_sha256"]) == 64
    assert config["model"]["vocab_size"] == vocab
    assert fine_results["test"]["accuracy"] > 0.60  # chance is 0.5; seeds 0-3 gave 0.65-0.66
    other = "gpt-mr" if finetune == "bert-mr" else "bert-mr"
    with pytest.raises(ConfigError, match="cannot start a (gpt|bert)_classifier"):
        train(other, [f"model.init_from={run_dir}"], out=str(tmp_path / "x"), progress=False)


def test_init_from_a_repeated_run_is_refused(tmp_path) -> None:
    group = tmp_path / "group"
    (group / "seed-0").mkdir(parents=True)
    (group / "config.yaml").write_text("x: 1\n")
    with pytest.raises((ConfigError, archlab.ArchlabError)):
        train("gpt-mr", [f"model.init_from={group}"], out=str(tmp_path / "run"), progress=False)
