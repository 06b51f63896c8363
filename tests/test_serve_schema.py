"""Property tests of archlab serve's OpenAPI description with schemathesis: requests drawn
from the spec (valid and invalid) get only the statuses, content types and bodies the spec
declares, and never a server error.  Bounded: a few examples per operation, small limits."""

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

from archlab.serve import Limits, create_app  # noqa: E402

# which tiny run each verb is called on (the path parameter ``name``); embed has no run
# that declares it, so it is called on the GPT run and must answer 404
RUN_OF = {
    "generate": "gpt",
    "translate": "translation",
    "classify": "cnn",
    "predict": "esol",
    "sample": "gan",
    "embed": "gpt",
}
LIMITS = Limits(
    max_new_tokens=8, max_prompt_chars=64, max_text_chars=64, max_beam=2, max_samples=4,
    request_seconds=20,
)  # fmt: skip


@pytest.fixture(scope="module")
def served_app(serve_run):
    names = sorted(set(RUN_OF.values()))
    app = create_app([f"{n}={serve_run(n)}" for n in names], limits=LIMITS)
    yield app
    app.state.close()


@pytest.fixture(scope="module")
def api_schema(served_app):
    return schemathesis.openapi.from_asgi("/openapi.json", served_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is shown as found
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_to_its_openapi_description(case) -> None:
    verb = case.path.rsplit("/", 1)[-1]
    if "{name}" in case.path:
        case.path_parameters = {**(case.path_parameters or {}), "name": RUN_OF[verb]}
    case.call_and_validate()
