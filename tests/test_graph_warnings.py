"""archlab.nn.graph changes no global state, and users never see PyTorch's CSR "beta" notice.

Both are checked in fresh processes: this one has imported the package already, and
PyTorch gives the notice once per process.  The fresh processes run with ``-W always``
and without pytest's warning filters, as a user's script would.
"""

import subprocess
import sys
import textwrap

NOTICE = "Sparse CSR tensor support is in beta"


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_importing_graph_leaves_the_warnings_filters_unchanged() -> None:
    run = python(
        """
        import warnings
        import torch  # (PyTorch adds filters of its own on import)

        before = list(warnings.filters)
        import archlab.nn.graph
        import archlab.models.gat
        import archlab.models.gcn
        import archlab.models.mpnn

        added = [f for f in warnings.filters if f not in before]
        assert warnings.filters == before, added
        """
    )
    assert run.returncode == 0, run.stderr


def test_sparse_graph_models_show_no_csr_beta_notice() -> None:
    # the notice is there to hide: a bare CSR tensor shows it in a fresh process
    control = python("import torch; torch.eye(2).to_sparse_csr()")
    assert NOTICE in control.stderr, "PyTorch no longer gives the notice; drop this test"

    run = python(
        """
        import torch
        import archlab
        from archlab.nn.graph import to_sparse_csr

        torch.manual_seed(0)
        x = (torch.rand(6, 5) < 0.3).float()
        edge_index = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
        for name in ("gcn", "gat"):
            model = archlab.create_model(name, in_dim=5, hidden_dim=4, out_dim=3)
            for features in (x, to_sparse_csr(x)):
                model(features, edge_index).sum().backward()
        """
    )
    assert run.returncode == 0, run.stderr
    assert NOTICE not in run.stderr, run.stderr
    assert "Warning" not in run.stderr, run.stderr  # nor any other warning on the way
