"""``archlab serve``: trained runs over HTTP, and a playground page that shows them.

    app = create_app(["runs/demo", "digits=runs/cnn-mnist"], token=None, limits=Limits())

The app (FastAPI on uvicorn) serves ``GET /v1/runs`` and, per run, the verbs its
task declares: ``POST /v1/runs/{name}/generate`` (server-sent events; concurrent GPT
requests share one decoding batch, :mod:`archlab.serve.batching`), ``/translate``,
``/classify``, ``/predict``, ``/sample`` (PNG) and ``/embed``; the OpenAPI
description at ``/openapi.json`` with docs at ``/docs``; the playground at ``/``.
Limits (:class:`Limits`) bound every request; FastAPI and uvicorn are the
``archlab[serve]`` extra.
"""

from archlab.errors import require
from archlab.serve.limits import Limits

__all__ = ["Limits", "create_app"]


def create_app(run_dirs, token=None, limits=None):
    """The ASGI app for ``run_dirs`` (:func:`archlab.serve.app.create_app`)."""
    require("fastapi", "serve", "archlab serve (the HTTP API)")
    from archlab.serve.app import create_app as build

    return build(run_dirs, token=token, limits=limits)
