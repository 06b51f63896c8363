"""The dataset registry: every dataset a recipe trains on is declared, with its files."""

import dataclasses
from pathlib import Path

import pytest
import yaml

import archlab
from archlab.cli import main
from archlab.data import get_dataset, list_datasets
from archlab.tasks import get_task
from tests.conftest import data_root

RECIPES = sorted((Path(archlab.__file__).parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_dataset_a_recipe_names_is_registered(recipe: Path) -> None:
    raw = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data_fields = {f.name for f in dataclasses.fields(get_task(raw["task"]["name"]).DataConfig)}
    if "dataset" not in data_fields:  # the task draws its data (the adding problem)
        assert "dataset" not in raw["data"], recipe.name
        return
    dataset = raw["data"]["dataset"]
    assert dataset in list_datasets(), f"{recipe.name} trains on unregistered {dataset!r}"


def test_list_datasets_prints_the_graphs(capsys) -> None:
    assert main(["list", "datasets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert {"cora", "citeseer", "pubmed", "karate", "esol", "mnist", "shakespeare"} <= set(names)


def test_planetoid_files_have_checksums_and_public_urls() -> None:
    for name in ("cora", "citeseer", "pubmed"):
        files = {f.path: f for f in get_dataset(name).files}
        assert len(files) == 8, name
        for path, file in files.items():
            assert file.url == f"https://github.com/kimiyoung/planetoid/raw/master/data/{path[10:]}"
            assert file.sha256 or file.git_blob, path
    # the one file without a published SHA-256: pubmed's allx, checked by its git blob id
    allx = {f.path: f for f in get_dataset("pubmed").files}["planetoid/ind.pubmed.allx"]
    assert allx.sha256 == "" and allx.git_blob == "3b86bccf08111c37c632a9dd8ab63db25ea76361"


def test_declared_checksums_match_the_data_roots_sha256sums() -> None:
    """Every declared file listed in the data root's SHA256SUMS has the same SHA-256."""
    root = data_root()
    if root is None or not (root / "SHA256SUMS").is_file():
        pytest.skip("real data: set ARCHLAB_DATA to a folder with SHA256SUMS")
    sums = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        sums[path.lstrip("*")] = digest
    checked = 0
    for name in list_datasets():
        for file in get_dataset(name).files:
            if file.path in sums:
                assert file.sha256 == sums[file.path], f"{name}: {file.path}"
                checked += 1
    assert checked >= 30  # planetoid (23), molecules, text, mnist
