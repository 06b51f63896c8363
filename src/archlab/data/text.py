"""Text corpora.

Tiny Shakespeare (Karpathy's char-rnn corpus): one 1.1 MB text, split as nanoGPT
does: the first 90 % of characters for training, the last 10 % for validation.

MR (Pang & Lee 2005): 5,331 positive and 5,331 negative movie-review snippets,
lower-cased and tokenized, in Latin-1; split into 10 folds for cross-validation as
Kim (2014) did.

Multi30k task 1 (Elliott et al. 2016): 29,000 / 1,014 / 1,000 German-English
caption pairs for train / val / test2016, raw (not tokenized, not lower-cased).
"""

from __future__ import annotations

import gzip

from archlab.data.files import DataFile, Dataset, fetch, register_dataset
from archlab.errors import ArchlabError

SHAKESPEARE = register_dataset(
    Dataset(
        name="shakespeare",
        description="Tiny Shakespeare, 1.1M characters (char-rnn)",
        files=(
            DataFile(
                "shakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            ),
        ),
        licence="public domain text (repository: MIT)",
    )
)


MULTI30K_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
MULTI30K_FILES = {  # split -> file stem, SHA-256 of the .de.gz and .en.gz files
    "train": (
        "train",
        "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
        "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    ),
    "val": (
        "val",
        "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
        "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    ),
    "test": (
        "test_2016_flickr",
        "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
        "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    ),
}
MULTI30K = register_dataset(
    Dataset(
        name="multi30k",
        description="Multi30k task 1, German-English caption pairs (train/val/test2016)",
        files=tuple(
            DataFile(f"multi30k/{stem}.{lang}.gz", sha, f"{MULTI30K_URL}{stem}.{lang}.gz")
            for stem, sha_de, sha_en in MULTI30K_FILES.values()
            for lang, sha in (("de", sha_de), ("en", sha_en))
        ),
        licence="non-commercial research and education (Flickr terms for the images)",
    )
)


def load_multi30k(split: str, source: str = "de", target: str = "en") -> list[tuple[str, str]]:
    """Aligned (source, target) sentence pairs of one split."""
    paths = fetch("multi30k")
    stem = MULTI30K_FILES[split][0]

    def lines(lang: str) -> list[str]:
        with gzip.open(paths[f"multi30k/{stem}.{lang}.gz"], "rt", encoding="utf-8") as f:
            return f.read().rstrip("\n").split("\n")

    src, tgt = lines(source), lines(target)
    if len(src) != len(tgt):
        raise ArchlabError(f"multi30k {split}: {len(src)} {source} lines but {len(tgt)} {target}")
    return list(zip(src, tgt, strict=True))


MR_URL = "https://raw.githubusercontent.com/yoonkim/CNN_sentence/master/"
MR = register_dataset(
    Dataset(
        name="mr",
        description="MR sentence polarity, 10,662 movie-review snippets (Pang & Lee 2005)",
        files=(
            DataFile(
                "mr/rt-polarity.neg",
                "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca",
                MR_URL + "rt-polarity.neg",
            ),
            DataFile(
                "mr/rt-polarity.pos",
                "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0",
                MR_URL + "rt-polarity.pos",
            ),
        ),
        licence="not stated; cite Pang & Lee (2005)",
    )
)
MR_LABELS = ("negative", "positive")


def load_mr() -> list[tuple[str, int]]:
    """(sentence, label) pairs, negatives (label 0) first; Latin-1, split on newlines only."""
    paths = fetch("mr")
    out = []
    for label, name in enumerate(MR_LABELS):
        text = paths[f"mr/rt-polarity.{name[:3]}"].read_bytes().decode("latin-1")
        out += [(line.strip(), label) for line in text.split("\n") if line.strip()]
    return out


def load_shakespeare() -> str:
    return fetch("shakespeare")["shakespeare/input.txt"].read_text(encoding="utf-8")
