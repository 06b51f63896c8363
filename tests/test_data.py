"""The data layer: verified files, clear errors when missing or corrupted, tokenizers."""

import shutil

import pytest

from archlab.data.files import DataError, fetch
from archlab.data.tokenizers import Vocab
from archlab.errors import ArchlabError, CheckpointError


@pytest.fixture
def empty_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHLAB_OFFLINE", "1")
    return tmp_path / "data"


def test_missing_file_offline_names_dataset_folder_and_files(empty_root) -> None:
    with pytest.raises(DataError) as exc:
        fetch("shakespeare")
    message = str(exc.value)
    assert "dataset 'shakespeare' is missing shakespeare/input.txt" in message
    assert str(empty_root) in message


def test_a_file_with_the_wrong_checksum_is_refused(empty_root) -> None:
    (empty_root / "shakespeare").mkdir(parents=True)
    (empty_root / "shakespeare/input.txt").write_text("First Citizen:\nnot the real text\n")
    with pytest.raises(DataError, match="does not match its published checksum"):
        fetch("shakespeare")


def test_verified_file_from_a_read_only_root(shakespeare, tmp_path, monkeypatch) -> None:
    root = tmp_path / "ro"
    (root / "shakespeare").mkdir(parents=True)
    shutil.copy(shakespeare / "shakespeare/input.txt", root / "shakespeare/input.txt")
    root.joinpath("shakespeare").chmod(0o555)
    monkeypatch.setenv("ARCHLAB_DATA", str(root))
    assert fetch("shakespeare")["shakespeare/input.txt"] == root / "shakespeare/input.txt"


def test_unknown_dataset_suggests_names() -> None:
    with pytest.raises(
        ArchlabError, match="unknown dataset 'shakespear'; did you mean shakespeare"
    ):
        fetch("shakespear")


def test_char_vocab_round_trip_and_unknown_characters(tmp_path) -> None:
    tok = Vocab.of_chars("hello world")
    assert tok.decode(tok.encode("low")) == "low"
    tok.save(tmp_path / "tok.json")
    again = Vocab.load(tmp_path / "tok.json")
    assert again.symbols == tok.symbols and again.vocab_size == 8
    with pytest.raises(ArchlabError, match="outside the model's vocabulary: 'X', 'z'"):
        tok.encode("Xz")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read the vocabulary"):
        Vocab.load(tmp_path / "bad.json")


def test_word_vocab_orders_by_frequency_and_maps_unknown_words() -> None:
    vocab = Vocab.of_words(["a good film .", "a bad film ."])
    assert vocab.symbols[:5] == ["<pad>", "<unk>", "<cls>", ".", "a"]
    assert vocab.encode("a great film") == [4, 1, vocab.index["film"]]
    assert vocab.decode(vocab.encode("a great film")) == "a film"
