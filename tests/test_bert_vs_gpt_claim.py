"""scripts/bert_vs_gpt.py: BERT and GPT pretrained alike, then fine-tuned on MR, tiny."""

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bert_vs_gpt():
    spec = importlib.util.spec_from_file_location("bert_vs_gpt", ROOT / "scripts/bert_vs_gpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_reads_the_paired_folds() -> None:
    bg = bert_vs_gpt()

    def arm(mean: float, runs: list[float]) -> dict:
        return {"mean": mean, "std": 0.01, "folds": len(runs), "runs": runs}

    bert = [0.80, 0.81, 0.79, 0.82, 0.80, 0.81]
    gpt = [0.75, 0.77, 0.74, 0.76, 0.75, 0.78]
    accuracy = {"bert-mlm": arm(0.805, bert), "gpt-clm": arm(0.758, gpt)}
    accuracy |= {"bert-scratch": arm(0.7, bert), "gpt-scratch": arm(0.7, gpt)}
    sets = {"set": [], "set_bert": [], "set_gpt": [], "set_pretrain": []}
    table = {"accuracy": accuracy, "settings": sets}
    # led by the budget: the recipes' 3,000 pretraining steps, no override given
    assert bg.verdict(table).startswith("supported (3,000 pretraining steps, 6 folds, paired")
    assert "pretrained alike, BERT (masked LM) fine-tunes to 80.50 %" in bg.verdict(table)
    table["accuracy"]["gpt-clm"] = arm(0.805, bert)
    assert bg.verdict(table).startswith("inconclusive at this budget (3,000 pretraining")
    table["accuracy"]["gpt-clm"] = arm(0.85, [b + 0.05 for b in bert])
    assert bg.verdict(table).startswith("not supported")
    few = {name: arm(a["mean"], a["runs"][:1]) for name, a in accuracy.items()}
    one = bg.verdict({"accuracy": few, "settings": sets})
    assert one.startswith("inconclusive at this budget") and "1 fold, too few for a paired" in one


def test_the_budget_is_the_overrides_last_word_on_pretraining_steps() -> None:
    bg = bert_vs_gpt()
    sets = {"set": [], "set_bert": [], "set_gpt": [], "set_pretrain": []}
    assert bg.pretraining_steps(sets) == "3,000 pretraining steps"  # the recipes' own
    small = sets | {"set_pretrain": ["trainer.max_steps=750"]}
    assert bg.pretraining_steps(small) == "750 pretraining steps"
    # --set applies first, then --set-bert / --set-gpt, then --set-pretrain
    mixed = sets | {"set": ["trainer.max_steps=15"], "set_gpt": ["trainer.max_steps=20"]}
    assert bg.pretraining_steps(mixed) == "pretraining steps: BERT 15, GPT 20"
    assert bg.pretraining_steps(mixed | small) == "750 pretraining steps"


def test_a_tiny_comparison_runs_and_collects(mr, multi30k, tmp_path) -> None:
    bg = bert_vs_gpt()
    common = ["--folds", "3", "--runs", str(tmp_path / "runs")]
    common += ["--set-pretrain", "data.vocab_size=400", "--set", "trainer.max_steps=15"]
    common += ["--set", "model.n_layer=1", "--set", "model.n_head=2", "--set", "model.d_ff=64"]
    common += ["--set-bert", "model.hidden_size=32", "--set-gpt", "model.n_embd=32"]
    bg.main(["run", *common])
    out, img = tmp_path / "claim.json", tmp_path / "img"
    bg.main(["collect", *common, "--out", str(out), "--img", str(img)])
    entry = json.loads(out.read_text())
    assert entry["command"].startswith(f"python scripts/bert_vs_gpt.py run {common[0]}")
    assert entry["command"].count("--set-bert model.hidden_size=32") == 2  # run and collect
    claim = entry["benchmarks"]["claim"]  # named by the file
    assert claim["summary"].split("(", 1)[1].startswith("15 pretraining steps, 1 fold")
    table = claim["results"]
    assert set(bg.CLASSIFIERS) <= set(table["accuracy"])
    for name in bg.CLASSIFIERS:
        assert table["accuracy"][name]["folds"] == 1
        assert 0 <= table["accuracy"][name]["mean"] <= 1
    bert, gpt = table["pretraining"]["bert"], table["pretraining"]["gpt"]
    assert bert["objective"] == "masked LM" and gpt["objective"] == "causal LM"
    assert bert["held_out_pseudo_perplexity"] > 1 and gpt["held_out_perplexity"] > 1
    assert bert["tokens_per_s"] > 0 and abs(bert["parameters"] / gpt["parameters"] - 1) < 0.2
    # the fine-tuned classifiers started from their own pretraining run
    config = (tmp_path / "runs/fold3-gpt-clm/config.yaml").read_text()
    assert str(tmp_path / "runs/fold3-gpt-pretrain") in config
    assert claim["missing"] == [] and "folds 3" in claim["reference"]
    assert (img / "claim.png").is_file() and claim["images"] == ["docs/img/claim.png"]

    # with --keep-recorded, the folds the file holds pool with the runs on disk (none here)
    fold = table["folds"]["3"]
    assert fold["accuracy"]["gpt-clm"] == table["accuracy"]["gpt-clm"]["runs"][0]
    assert set(fold["pretraining"]) == {"bert", "gpt"} and fold["date"] <= entry["date"]
    # runs trained otherwise (another budget's pretraining steps) are not read as these
    other = ["--out", str(tmp_path / "other.json"), "--img", str(img)]
    with pytest.raises(SystemExit, match="fold3-bert-pretrain was trained with other settings"):
        bg.main(["collect", *common, "--set-pretrain", "trainer.max_steps=20", *other])
    with pytest.raises(SystemExit, match="fold3-bert-mlm was trained with other settings"):
        bg.main(["collect", *common, "--set-bert", "model.pooling=cls", *other])
    without_steps = [w for w in common if w != "trainer.max_steps=15"]  # the recipes' steps
    without_steps.remove("--set")  # its flag: the first --set, which gave it
    with pytest.raises(SystemExit, match="fold3-bert-pretrain was trained with other settings"):
        bg.main(["collect", *without_steps, *other])
    assert not (tmp_path / "other.json").exists()
    # moved, the runs still collect (a fine-tune names its start by the weights' SHA-256)
    moved = [w if w != str(tmp_path / "runs") else str(tmp_path / "moved") for w in common]
    shutil.move(tmp_path / "runs", tmp_path / "moved")
    bg.main(["collect", *moved, *other])
    assert json.loads((tmp_path / "other.json").read_text())["benchmarks"]["other"]["results"][
        "accuracy"] == table["accuracy"]  # fmt: skip
    # a pretraining run redone (other weights) no longer fits the fine-tune kept from before
    pretrained = tmp_path / "moved/fold3-gpt-pretrain/model.safetensors"
    pretrained.write_bytes(pretrained.read_bytes() + b" ")
    with pytest.raises(SystemExit, match="fold3-gpt-clm was trained with other weights"):
        bg.main(["collect", *moved, *other])
    shutil.rmtree(tmp_path / "moved")
    with pytest.raises(SystemExit, match="no fold has all its runs"):
        bg.main(["collect", *common, "--out", str(tmp_path / "other.json"), "--img", str(img)])
    bg.main(["collect", *common, "--out", str(out), "--img", str(img), "--keep-recorded"])
    kept = json.loads(out.read_text())
    assert kept["benchmarks"]["claim"]["results"]["folds"] == table["folds"]
    assert kept["benchmarks"]["claim"]["results"]["accuracy"] == table["accuracy"]
    assert kept["benchmarks"]["claim"]["missing"] == []
    assert "--keep-recorded" not in kept["command"]
    # folds recorded under other overrides are another budget: they do not pool
    with pytest.raises(SystemExit, match="other settings"):
        bg.main(["collect", *common, "--set", "trainer.lr=0.001", "--out", str(out),
                 "--img", str(img), "--keep-recorded"])  # fmt: skip


def test_recorded_folds_pool_only_when_they_belong(tmp_path, capsys) -> None:
    bg = bert_vs_gpt()
    out = tmp_path / "claim.json"

    def args(folds: list[int], pretrain: str = "trainer.max_steps=750") -> argparse.Namespace:
        return argparse.Namespace(folds=folds, keep_recorded=True, out=out, set=[],
                                  set_bert=[], set_gpt=[], set_pretrain=[pretrain])  # fmt: skip

    def row(acc: float) -> dict:
        return {"accuracy": dict.fromkeys(bg.CLASSIFIERS, acc), "date": "2026-12-04"}

    figures = {"tokens_per_s": 2000.0, "loss": 4.5, "parameters": 5}
    pretraining = {"bert": figures | {"pseudo_perplexity": 100.0},
                   "gpt": figures | {"perplexity": 50.0}}  # fmt: skip
    rows = {0: row(0.75), 2: row(0.77), 5: row(0.76) | {"pretraining": pretraining}}
    table = bg.aggregate({5: rows[5], 0: rows[0], 2: rows[2]})  # in any order: by fold
    assert table["accuracy"]["gpt-clm"]["runs"] == [0.75, 0.77, 0.76]
    assert list(table["folds"]) == ["0", "2", "5"]
    bert = table["pretraining"]["bert"]  # over the one fold that recorded it
    assert bert["folds"] == 1 and bert["held_out_pseudo_perplexity"] == 100.0
    assert table["pretraining"]["gpt"]["held_out_perplexity"] == 50.0

    assert bg.recorded(args([0])) == ({}, "")  # no file yet: nothing to keep, and it says so
    assert "does not exist yet" in capsys.readouterr().out
    out.write_text("{not json")
    with pytest.raises(SystemExit, match="not a results file of this claim"):
        bg.recorded(args([0]))
    older = {"benchmarks": {"claim-bert-vs-gpt": {"results": {"accuracy": {"bert-mlm": {}}}}}}
    out.write_text(json.dumps(older))
    with pytest.raises(SystemExit, match="holds no per-fold figures"):
        bg.recorded(args([0]))
    other = {"benchmarks": {"claim-gat-vs-gcn": {"results": {"settings": {}}}}}
    out.write_text(json.dumps(other))  # another claim's file
    with pytest.raises(SystemExit, match="not a results file of this claim"):
        bg.recorded(args([0]))
    two = {"benchmarks": {"claim-bert-vs-gpt": {"results": {}}, "other": {"results": {}}}}
    out.write_text(json.dumps(two))  # a claim file holds one entry
    with pytest.raises(SystemExit, match="not a results file of this claim"):
        bg.recorded(args([0]))
    body = {"results": table | {"settings": bg.settings(args([]))}, "note": "fold 5 elsewhere"}
    out.write_text(json.dumps({"benchmarks": {"claim-bert-vs-gpt": body}}))
    assert bg.recorded(args([0, 2, 5, 7])) == (rows, "fold 5 elsewhere")
    with pytest.raises(SystemExit, match=r"settings \(--set-pretrain trainer.max_steps=750\)"):
        bg.recorded(args([0, 2, 5], pretrain="trainer.max_steps=3000"))
    with pytest.raises(SystemExit, match="not a results file of this claim"):
        bg.recorded(argparse.Namespace(**vars(args([0])) | {"out": tmp_path}))  # a directory
    with pytest.raises(SystemExit, match="holds folds 5, which --folds leaves out"):
        bg.recorded(args([0, 2]))
    with pytest.raises(SystemExit):  # no abbreviation, which the recorded command would keep
        bg.main(["collect", "--keep", "--out", str(out)])
