"""Dataset (and pretrained checkpoint) files: where they live, what their bytes must hash to,
where to download them.

Files are looked up under the data root, ``$ARCHLAB_DATA`` (default
``~/.cache/archlab/data``), at the path each dataset declares.  A file is used
only after its SHA-256 matches the declared one; a mismatch is refused.  A
missing file is downloaded from its public URL when the network allows (into the
data root, or into the cache when the data root is read-only); otherwise the
error names the dataset, the directory searched and the files to put there.
Processed caches belong in ``$ARCHLAB_CACHE`` (default ``~/.cache/archlab/cache``),
never in the data root.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from archlab.errors import ArchlabError, ConfigError
from archlab.registry import unknown_name_message


class DataError(ArchlabError):
    """A dataset file is missing, cannot be downloaded, or fails its checksum."""


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data root
    sha256: str  # "" when only the git blob id is published (``git_blob``)
    url: str
    git_blob: str = ""  # SHA-1 of "blob <size>\0" + content, as ``git hash-object`` prints

    @property
    def digest(self) -> str:
        return self.sha256 or f"git blob {self.git_blob}"


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple[DataFile, ...]
    licence: str = ""


def data_root() -> Path:
    return Path(os.environ.get("ARCHLAB_DATA") or Path.home() / ".cache/archlab/data")


def cache_root() -> Path:
    return Path(os.environ.get("ARCHLAB_CACHE") or Path.home() / ".cache/archlab/cache")


_DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    _DATASETS[dataset.name] = dataset
    return dataset


def get_dataset(name: str) -> Dataset:
    import archlab.data  # noqa: F401  (registers every dataset)

    if name not in _DATASETS:
        raise ConfigError(unknown_name_message("dataset", name, list(_DATASETS)))
    return _DATASETS[name]


def list_datasets() -> list[str]:
    import archlab.data  # noqa: F401

    return sorted(_DATASETS)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_of(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def _verified(path: Path, size: int, mtime_ns: int, digest: str) -> bool:
    if digest.startswith("git blob "):
        return git_blob_of(path) == digest.removeprefix("git blob ")
    return sha256_of(path) == digest


def _download(file: DataFile, target: Path) -> None:
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(file.url, timeout=30) as response:  # noqa: S310 (declared URL)
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            partial.open("wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {file.path}") as bar,
        ):
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))
    os.replace(partial, target)


def _locate(file: DataFile) -> Path | None:
    for root in (data_root(), cache_root() / "downloads"):
        if (root / file.path).is_file():
            return root / file.path
    return None


def fetch(name: str, only: str = "") -> dict[str, Path]:
    """Paths of every file of dataset ``name`` (or those ending in ``only``), verified;
    downloads what is missing."""
    dataset = get_dataset(name)
    return fetch_files(f"dataset {name!r}", dataset.files, only)


def fetch_files(what: str, files: tuple[DataFile, ...], only: str = "") -> dict[str, Path]:
    """Paths of ``files`` (those ending in ``only``), each verified against its SHA-256.

    A missing file is downloaded when the network allows; ``what`` names the owner of the
    files (``dataset 'mr'``) in the error that lists the files still missing.
    """
    paths: dict[str, Path] = {}
    missing = []
    for file in files:
        if not file.path.endswith(only):
            continue
        path = _locate(file)
        if path is None:
            path = _try_download(file)
        if path is None:
            missing.append(file.path)
            continue
        stat = path.stat()
        if not _verified(path, stat.st_size, stat.st_mtime_ns, file.digest):
            raise DataError(
                f"{path} does not match its published checksum ({file.digest[:21]}...); it is "
                f"refused: replace it with the original file from {file.url}"
            )
        paths[file.path] = path
    if missing:
        raise DataError(
            f"{what} is missing {', '.join(missing)} under {data_root()} and they "
            f"could not be downloaded (offline?); put the files there, or set ARCHLAB_DATA to "
            f"the folder that holds them"
        )
    return paths


def _writable(directory: Path) -> bool:
    """Whether files can be created in ``directory`` (or in the nearest existing parent)."""
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return os.access(directory, os.W_OK)


def _try_download(file: DataFile) -> Path | None:
    """Download ``file`` into the data root, or the cache if that is read-only; None if offline."""
    if os.environ.get("ARCHLAB_OFFLINE"):
        return None
    for root in (data_root(), cache_root() / "downloads"):
        if not _writable(root):
            continue
        target = root / file.path
        try:
            _download(file, target)
        except (urllib.error.URLError, OSError, TimeoutError):
            return None
        return target
    return None
