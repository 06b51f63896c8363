"""Optional extras: a family whose field library is missing says which extra to install.

RDKit (and descriptastorus) come with ``archlab[chem]``.  Without them ``import
archlab`` and the other families work, and using molecules is one sentence naming
``pip install 'archlab[chem]'``, exit status 2.  A missing library is simulated by
``sys.modules[name] = None``, which makes ``import name`` fail.
"""

import subprocess
import sys

import pytest

from archlab.cli import main
from archlab.errors import ArchlabError, MissingExtraError, require
from tests.conftest import require_data

INSTALL_CHEM = "pip install 'archlab[chem]'"


@pytest.fixture
def no_rdkit(monkeypatch):
    """RDKit and descriptastorus unimportable, even where they were imported before."""
    for name in ("rdkit", "descriptastorus"):
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtraError) as exc:
        require("archlab_no_such_library.sub", extra="audio", purpose="spoken digits")
    message = str(exc.value)
    assert message.startswith("archlab_no_such_library is needed for spoken digits")
    assert message.endswith("pip install 'archlab[audio]'")
    assert isinstance(exc.value, ArchlabError) and isinstance(exc.value, ImportError)


def test_parsing_a_molecule_without_rdkit_names_the_chem_extra(no_rdkit) -> None:
    from archlab.data.molecules import parse_smiles, rdkit2d_names, scaffold

    for call in (lambda: parse_smiles("CCO"), rdkit2d_names, lambda: scaffold("c1ccccc1O")):
        with pytest.raises(MissingExtraError, match=r"rdkit is needed for molecules .*\[chem\]"):
            call()


def test_training_a_molecule_recipe_without_rdkit_exits_2_in_one_sentence(
    no_rdkit, tmp_path, monkeypatch, capsys
) -> None:
    require_data("molecules/delaney-processed.csv")
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    args = ["train", "gnn-esol", "--set", "trainer.max_steps=1", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert INSTALL_CHEM in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_archlab_and_other_families_work_without_rdkit() -> None:
    """In a fresh process with RDKit hidden: import, the task and model registries, list."""
    code = (
        "import sys\n"
        "sys.modules['rdkit'] = sys.modules['descriptastorus'] = None\n"
        "import archlab\n"
        "from archlab.cli import main\n"
        "from archlab.tasks import get_task\n"
        "get_task('node_classification'), get_task('molecule_regression')\n"
        "archlab.create_model('mpnn'), archlab.create_model('gcn')\n"
        "sys.exit(main(['list', 'datasets']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "esol" in proc.stdout and "cora" in proc.stdout
