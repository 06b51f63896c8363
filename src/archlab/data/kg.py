"""Knowledge graphs for link prediction: Nations, Kinship, UMLS, WN18RR and FB15k-237.

Each dataset is one ``.tar.gz`` archive (the copies distributed with ConvE, Dettmers et
al. 2018) holding ``train.txt``, ``valid.txt`` and ``test.txt`` at its root: one triple
per line, ``head<TAB>relation<TAB>tail``, with string labels (Freebase MIDs, WordNet
synset offsets, plain names).  The members are read straight from the archive with
``tarfile`` -- nothing is extracted -- after the archive's SHA-256 matches.
FB15k-237's files end their lines with CRLF; the ``\\r`` is stripped.  Parsing the
largest (FB15k-237, 310k triples) takes under a second, so nothing is cached.

Vocabularies are built as PyKEEN's ``TriplesFactory`` builds them, but over the union of
the three splits (as the ConvE and RotatE authors' ``entities.dict`` do): the entity
labels seen as a head or a tail in any split, sorted, numbered from 0; the relation
labels likewise.  On Nations, Kinship and UMLS every label occurs in training, so the
ids are exactly those of PyKEEN's datasets; WN18RR and FB15k-237 have test entities
absent from training (210 and 28 test triples), which PyKEEN's datasets drop and which
are kept here, so that the test sets are the published ones (3,134 and 20,466 triples).
Triples keep their file order.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from archlab.data.files import DataError, DataFile, Dataset, fetch, register_dataset

CONVE_URL = "https://github.com/TimDettmers/ConvE/raw/f3c0eb286025410fa5b4c04696c918264163d0ca/"
SPLIT_FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
# data.dataset -> archive, SHA-256, description
KG_DATASETS = {
    "nations": (
        "nations.tar.gz",
        "feb3e3e027103089934ea7dfb67d2048d8a43e65d6757a86f2e037acb66f640b",
        "Nations: 14 countries, 55 relations, 1,592/199/201 triples (ConvE split)",
    ),
    "kinship": (
        "kinship.tar.gz",
        "a3cb9ca67213eb38133aebc12901195e283d844ebd59f1a6cbf2d4fa12ced4e6",
        "Kinship (Alyawarra): 104 people, 25 relations, 8,544/1,068/1,074 triples",
    ),
    "umls": (
        "umls.tar.gz",
        "26223aa91f0ec8db2324e0f489b9a4425e04d1d0df72ce5cfd62af4b91aee6fd",
        "UMLS: 135 medical concepts, 46 relations, 5,216/652/661 triples",
    ),
    "wn18rr": (
        "WN18RR.tar.gz",
        "1eb9152f804c140d163462c0d49f65e5a0b30ab5fbb375c5e3353c11a6249060",
        "WN18RR (Dettmers et al. 2018): 40,943 synsets, 11 relations, 86,835/3,034/3,134",
    ),
    "fb15k237": (
        "FB15k-237.tar.gz",
        "311df7930f842a02979eaa7a802484a6afe62303c07f915f1e6edbc30cbe05e8",
        "FB15k-237 (Toutanova & Chen 2015): 14,541 entities, 237 relations, 272,115/17,535/20,466",
    ),
}

for _name, (_file, _sha, _description) in KG_DATASETS.items():
    register_dataset(
        Dataset(
            name=_name,
            description=_description,
            files=(DataFile(f"kg/{_file}", _sha, CONVE_URL + _file),),
            licence="MIT (TimDettmers/ConvE); FB15k-237 originally from Microsoft Research",
        )
    )


@dataclass
class KnowledgeGraph:
    """The triples of a dataset's splits as ids, and the labels the ids stand for.

    ``triples[split]`` is a (n, 3) long tensor of (head, relation, tail) ids, in file
    order; ``entities[i]`` / ``relations[j]`` are the labels of id i / j (sorted).
    """

    name: str
    entities: list[str]
    relations: list[str]
    triples: dict[str, Tensor]  # train, val, test -> (n, 3)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @cached_property
    def entity_ids(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.entities)}

    @cached_property
    def relation_ids(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.relations)}

    @cached_property
    def all_triples(self) -> Tensor:
        """Every known true triple (train, val and test), the filter of filtered ranking."""
        return torch.cat([self.triples[s] for s in SPLIT_FILES])


def read_triples(archive: Path) -> dict[str, list[tuple[str, str, str]]]:
    """The labelled triples of each split in a ConvE-style archive, in file order."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            for split, file in SPLIT_FILES.items():
                if file not in members:
                    raise DataError(f"{archive} holds no {file} at its root")
                text = tar.extractfile(members[file]).read().decode("utf-8")
                out[split] = _parse(text, f"{archive}:{file}")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{archive} could not be read as a .tar.gz archive: {error}") from None
    return out


def _parse(text: str, where: str) -> list[tuple[str, str, str]]:
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    triples = [tuple(line.split("\t")) for line in lines]
    for number, triple in enumerate(triples, 1):
        if len(triple) != 3 or not all(triple):
            raise DataError(f"{where}, line {number}: expected head<TAB>relation<TAB>tail")
    return triples  # type: ignore[return-value]


def build_graph(name: str, labelled: dict[str, list[tuple[str, str, str]]]) -> KnowledgeGraph:
    """Ids as PyKEEN's TriplesFactory gives them over the union of the splits (sorted labels)."""
    entities = sorted({e for triples in labelled.values() for h, _, t in triples for e in (h, t)})
    relations = sorted({r for triples in labelled.values() for _, r, _ in triples})
    e_id = {label: i for i, label in enumerate(entities)}
    r_id = {label: i for i, label in enumerate(relations)}
    triples = {
        split: torch.tensor([(e_id[h], r_id[r], e_id[t]) for h, r, t in rows], dtype=torch.long)
        .reshape(-1, 3)
        .contiguous()
        for split, rows in labelled.items()
    }
    return KnowledgeGraph(name, entities, relations, triples)


def load_kg(name: str) -> KnowledgeGraph:
    """Dataset ``name`` (nations, kinship, umls, wn18rr, fb15k237) as id triples."""
    (archive,) = fetch(name).values()
    return build_graph(name, read_triples(archive))
