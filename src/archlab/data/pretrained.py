"""Pretrained checkpoints, declared like datasets: their files, SHA-256 and public URLs.

A checkpoint is a Hugging Face model directory kept under ``pretrained/NAME/`` in the
data root (``$ARCHLAB_DATA``).  Before it is loaded every declared file is checked
against its SHA-256; a missing file is downloaded from the model's Hugging Face page
when the network allows (:func:`archlab.data.files.fetch_files`), and a file that does
not match is refused.  A registered name goes wherever a checkpoint directory does:
``--set model.init_from=all-MiniLM-L6-v2``, ``archlab embed all-MiniLM-L6-v2 TEXT``.
The run records the name and the SHA-256 of the weights (``model.init_sha256``), which
is also the digest Hugging Face shows for the file.

``archlab list checkpoints`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from archlab.data.files import DataError, DataFile, fetch_files, sha256_of
from archlab.errors import ConfigError
from archlab.registry import unknown_name_message

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class Checkpoint:
    name: str
    description: str
    family: str  # the archlab model family that reads it (its from_hf): "bert"
    page: str  # the public page the files come from
    files: tuple[DataFile, ...]  # paths relative to the data root, under pretrained/NAME/
    licence: str = ""

    @property
    def folder(self) -> str:
        return f"pretrained/{self.name}"

    @property
    def weights(self) -> DataFile:
        return next(f for f in self.files if f.path == f"{self.folder}/{WEIGHTS_FILE}")


_CHECKPOINTS: dict[str, Checkpoint] = {}


def register_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    assert any(f.path == f"{checkpoint.folder}/{WEIGHTS_FILE}" for f in checkpoint.files)
    assert all(f.path.startswith(checkpoint.folder + "/") for f in checkpoint.files)
    _CHECKPOINTS[checkpoint.name] = checkpoint
    return checkpoint


def list_checkpoints() -> list[str]:
    return sorted(_CHECKPOINTS)


def is_checkpoint(name: str) -> bool:
    """Whether ``name`` is a registered checkpoint's name (not a path)."""
    return name in _CHECKPOINTS


def get_checkpoint(name: str) -> Checkpoint:
    if name not in _CHECKPOINTS:
        raise ConfigError(unknown_name_message("checkpoint", name, list(_CHECKPOINTS)))
    return _CHECKPOINTS[name]


def checkpoint_dir(name: str) -> Path:
    """The directory of checkpoint ``name``, every file verified (downloaded if missing)."""
    checkpoint = get_checkpoint(name)
    paths = fetch_files(f"checkpoint {name!r}", checkpoint.files)
    folders = {
        Path(str(path)[: -len(relative)]) / checkpoint.folder for relative, path in paths.items()
    }
    if len(folders) > 1:
        shown = " and ".join(sorted(map(str, folders)))
        raise DataError(
            f"checkpoint {name!r} has its files split between {shown}; put them all in one "
            f"of these folders"
        )
    return folders.pop()


def weights_sha256(directory: str | Path) -> str:
    """The SHA-256 of a checkpoint directory's weights (model.safetensors)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(f"checkpoint directory {str(directory)!r} has no {WEIGHTS_FILE}")
    return sha256_of(path)


HF = "https://huggingface.co/"

MINILM_PAGE = HF + "sentence-transformers/all-MiniLM-L6-v2"
MINILM_FILE_URL = MINILM_PAGE + "/resolve/main/"
MINILM_FILES = {  # file -> SHA-256, as in the data root's SHA256SUMS
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": (
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
    ),
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
MINILM = register_checkpoint(
    Checkpoint(
        name="all-MiniLM-L6-v2",
        description="a 6-layer BERT sentence encoder (384 wide, 22.7M parameters, uncased "
        "WordPiece); mean pooling, L2-normalised",
        family="bert",
        page=MINILM_PAGE,
        files=tuple(
            DataFile(f"pretrained/all-MiniLM-L6-v2/{file}", sha, f"{MINILM_FILE_URL}{file}")
            for file, sha in MINILM_FILES.items()
        ),
        licence="Apache-2.0",
    )
)
