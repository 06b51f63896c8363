"""archlab serve's HTTP API, called in-process with httpx: every endpoint and every refusal."""

import asyncio
import base64
import io
import json

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from archlab.run import load  # noqa: E402
from archlab.serve import Limits, create_app  # noqa: E402
from tests.conftest import cli, require_data  # noqa: E402

KINDS = ("gpt", "translation", "cnn", "capsnet", "esol", "fsdd", "gmu", "mr", "kg", "bert", "gan")


@pytest.fixture(scope="module")
def run_dirs(serve_run):
    return {name: serve_run(name) for name in KINDS}


def make_app(run_dirs, names=KINDS, **kwargs):
    return create_app([f"{n}={run_dirs[n]}" for n in names], **kwargs)


@pytest.fixture(scope="module")
def app(run_dirs):
    app = make_app(run_dirs)
    yield app
    app.state.close()


def request(app, method, path, **kwargs) -> httpx.Response:
    """One request to ``app`` in-process (httpx's ASGITransport)."""

    async def go():
        # as a server would: the response the app sends, also after an error it raises
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def events(response: httpx.Response) -> list[tuple[str, dict]]:
    out = []
    for block in response.text.strip().split("\n\n"):
        event, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        out.append((event, data))
    return out


def digit_png(digit: int = 7) -> bytes:
    from PIL import Image

    from archlab.data.mnist import load_mnist

    require_data("mnist/t10k-images-idx3-ubyte.gz")
    images, labels = load_mnist("test")
    i = int((labels == digit).nonzero()[0])
    buffer = io.BytesIO()
    Image.fromarray(images[i].numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(digit: int = 7) -> bytes:
    root = require_data(f"fsdd/recordings/{digit}_jackson_0.wav")
    return (root / f"fsdd/recordings/{digit}_jackson_0.wav").read_bytes()


def assert_refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert "Traceback" not in message and "\n" not in message
    for word in words:
        assert word in message, message
    return message


# ----- the endpoints -----


def test_runs_are_listed_with_task_model_figures_and_verbs(app) -> None:
    runs = {r["name"]: r for r in request(app, "GET", "/v1/runs").json()["runs"]}
    assert set(runs) == set(KINDS)
    assert runs["gpt"]["verbs"] == ["generate"] and runs["gpt"]["task"] == "char_lm"
    assert runs["gpt"]["model"] == "gpt" and "loss" in runs["gpt"]["results"]["val"]
    assert runs["translation"]["verbs"] == ["translate"]
    assert runs["cnn"]["verbs"] == ["classify", "predict"]
    assert runs["cnn"]["inputs"] == [{"name": "IMAGE", "kind": "image"}]
    assert runs["cnn"]["labels"] == [str(d) for d in range(10)]
    assert runs["esol"]["verbs"] == ["predict"] and runs["esol"]["labels"] is None
    assert [i["kind"] for i in runs["gmu"]["inputs"]] == ["image", "audio"]
    assert runs["gan"]["verbs"] == ["sample"]
    assert runs["mr"]["inputs"] == [{"name": "TEXT", "kind": "text"}]
    assert runs["mr"]["verbs"] == ["classify", "predict"]  # a CNN does not embed
    assert runs["bert"]["verbs"] == ["classify", "predict", "embed"]
    assert runs["kg"]["verbs"] == ["predict"] and runs["kg"]["predicts"] == "query"
    assert [i["name"] for i in runs["kg"]["inputs"]] == ["ENTITY", "RELATION"]
    assert runs["kg"]["options"] == ["side", "top_k"] and "mrr" in runs["kg"]["results"]["test"]


def test_generate_streams_the_text_the_cli_generates(app, run_dirs) -> None:
    body = {"prompt": "ROMEO:", "max_new_tokens": 40, "temperature": 0}
    response = request(app, "POST", "/v1/runs/gpt/generate", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response)
    assert got[-1] == ("done", {"reason": "length", "tokens": 40})
    text = "".join(data["text"] for event, data in got[:-1])
    run = load(run_dirs["gpt"])
    expected = run.task.generate(run.model, "ROMEO:", max_new_tokens=40, temperature=0)
    assert "ROMEO:" + text == expected


def test_concurrent_generations_share_a_batch_and_each_gets_its_own_text(app, run_dirs) -> None:
    prompts = ["ROMEO:", "JULIET:\nO", "First Citizen:\nWe are", "A"]

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/runs/gpt/generate",
                        json={"prompt": p, "max_new_tokens": 50, "temperature": 0},
                    )
                    for p in prompts
                )
            )

    batch = app.state.runs["gpt"].batch.batch
    steps_before = batch.steps
    responses = asyncio.run(go())
    run = load(run_dirs["gpt"])
    for prompt, response in zip(prompts, responses, strict=True):
        text = "".join(d["text"] for e, d in events(response) if e == "message")
        alone = run.task.generate(run.model, prompt, max_new_tokens=50, temperature=0)
        assert prompt + text == alone
    assert batch.steps - steps_before < 4 * 50  # decoded together, not one after another


def test_sampled_generation_with_a_seed_repeats(app) -> None:
    body = {"prompt": "KING", "max_new_tokens": 20, "temperature": 1.0, "top_k": 5, "seed": 3}
    texts = [
        "".join(d["text"] for e, d in events(request(app, "POST", url, json=body)) if d.get("text"))
        for url in ("/v1/runs/gpt/generate",) * 2
    ]
    assert texts[0] == texts[1] and texts[0]


def test_translate_with_beam_and_cross_attention(app, run_dirs) -> None:
    text = "Ein Mann fährt Fahrrad."
    response = request(
        app, "POST", "/v1/runs/translation/translate", json={"text": text, "beam": 2}
    )
    assert response.status_code == 200
    run = load(run_dirs["translation"])
    assert response.json() == {"translation": run.task.translate(run.model, text, beam=2)}
    body = {"text": text, "beam": 2, "attention": True}
    result = request(app, "POST", "/v1/runs/translation/translate", json=body).json()
    weights = torch.tensor(result["attention"])
    assert weights.shape == (len(result["target"]), len(result["source"]))
    torch.testing.assert_close(weights.sum(1), torch.ones(len(result["target"])))
    assert result["translation"] == response.json()["translation"]


@pytest.mark.parametrize("name", ["cnn", "capsnet"])
def test_classify_an_uploaded_digit_as_predict_does(app, run_dirs, name, tmp_path) -> None:
    png = digit_png(7)
    files = {"IMAGE": ("seven.png", png, "image/png")}
    upload = request(app, "POST", f"/v1/runs/{name}/classify", files=files)
    assert upload.status_code == 200, upload.text
    result = upload.json()
    assert result["labels"] == [str(d) for d in range(10)]
    assert all(0 <= p <= 1 for p in result["probabilities"])
    if name == "cnn":  # a softmax; a CapsNet's are capsule lengths, one per digit (Sabour et al.)
        assert sum(result["probabilities"]) == pytest.approx(1, abs=1e-5)
    as_json = {"inputs": {"IMAGE": base64.b64encode(png).decode()}}
    assert request(app, "POST", f"/v1/runs/{name}/classify", json=as_json).json() == result
    (tmp_path / "seven.png").write_bytes(png)
    run = load(run_dirs[name])
    expected = run.predict([str(tmp_path / "seven.png")])[0]
    predicted = request(app, "POST", f"/v1/runs/{name}/predict", json=as_json).json()
    assert predicted["label"] == expected["label"] == result["label"]
    assert predicted["probability"] == pytest.approx(expected["probability"], abs=1e-6)


def test_predict_a_molecule_with_its_drawing(app, run_dirs) -> None:
    body = {"inputs": {"SMILES": "c1ccccc1O"}, "draw": True}
    result = request(app, "POST", "/v1/runs/esol/predict", json=body).json()
    expected = load(run_dirs["esol"]).predict(["c1ccccc1O"])[0]["value"]
    assert result["value"] == pytest.approx(expected, abs=1e-6)
    assert result["svg"].lstrip().startswith("<?xml") and "</svg>" in result["svg"]


def test_predict_a_spoken_digit_from_a_wav_upload(app) -> None:
    files = {"AUDIO": ("seven.wav", wav_bytes(7), "audio/wav")}
    result = request(app, "POST", "/v1/runs/fsdd/classify", files=files).json()
    assert len(result["probabilities"]) == 10 and result["label"] in result["labels"]


def test_a_fusion_run_takes_an_image_and_a_sound(app) -> None:
    files = {
        "IMAGE": ("seven.png", digit_png(7), "image/png"),
        "AUDIO": ("seven.wav", wav_bytes(7), "audio/wav"),
    }
    result = request(app, "POST", "/v1/runs/gmu/predict", files=files).json()
    assert result["label"] in [str(d) for d in range(10)]
    assert result["gate_image"] + result["gate_audio"] == pytest.approx(1, abs=1e-5)
    bars = request(app, "POST", "/v1/runs/gmu/classify", files=files).json()
    assert bars["label"] == result["label"]
    only_image = {"IMAGE": files["IMAGE"]}
    assert_refused(
        request(app, "POST", "/v1/runs/gmu/predict", files=only_image), 422, "needs", "AUDIO"
    )


def test_classify_a_sentence(app) -> None:
    body = {"inputs": {"TEXT": "a gorgeous, witty, seductive movie."}}
    result = request(app, "POST", "/v1/runs/mr/classify", json=body).json()
    assert result["labels"] == ["negative", "positive"]


@pytest.mark.parametrize("side", ["tail", "head"])
def test_link_prediction_ranks_as_archlab_predict_does(app, run_dirs, side) -> None:
    body = {"inputs": {"ENTITY": "usa", "RELATION": "embassy"}, "options": {"top_k": 5}}
    if side == "head":
        body["options"]["side"] = "head"
    result = request(app, "POST", "/v1/runs/kg/predict", json=body).json()
    cli_order = ["usa", "embassy"] if side == "tail" else ["embassy", "usa"]
    (expected,) = load(run_dirs["kg"]).predict(cli_order, side=side, top_k=5)
    assert result == expected and len(result["ranking"]) == 5
    assert result["query"] == ("(usa, embassy, ?)" if side == "tail" else "(?, embassy, usa)")
    form = {"ENTITY": "usa", "RELATION": "embassy", "top_k": "5", "side": side}
    assert request(app, "POST", "/v1/runs/kg/predict", data=form).json() == expected


def test_embed_gives_the_tasks_sentence_vectors(app, run_dirs) -> None:
    texts = ["a gorgeous, witty, seductive movie.", "dull"]
    result = request(app, "POST", "/v1/runs/bert/embed", json={"texts": texts}).json()
    run = load(run_dirs["bert"])
    expected = run.task.embed(run.model, texts)
    assert torch.tensor(result["embeddings"]) == pytest.approx(expected, abs=1e-6)
    assert len(result["embeddings"]) == 2 and len(result["embeddings"][0]) == 32


def test_sample_returns_a_png_grid(app) -> None:
    response = request(app, "POST", "/v1/runs/gan/sample", json={"n": 9, "seed": 1})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert (
        response.content.startswith(b"\x89PNG") and response.headers["x-layout"] == "3 x 3 images"
    )
    again = request(app, "POST", "/v1/runs/gan/sample", json={"n": 9, "seed": 1})
    assert again.content == response.content


def test_openapi_spec_docs_and_page_are_served(app) -> None:
    spec = request(app, "GET", "/openapi.json").json()
    for verb in ("generate", "translate", "classify", "predict", "sample", "embed"):
        assert f"/v1/runs/{{name}}/{verb}" in spec["paths"]
    assert (
        "multipart/form-data"
        in spec["paths"]["/v1/runs/{name}/predict"]["post"]["requestBody"]["content"]
    )
    assert request(app, "GET", "/docs").status_code == 200
    page = request(app, "GET", "/")
    assert page.status_code == 200 and "archlab playground" in page.text
    assert request(app, "GET", "/static/playground.js").status_code == 200


# ----- refusals -----


def test_unknown_runs_and_verbs_a_run_lacks_are_404_with_a_sentence(app) -> None:
    assert_refused(
        request(app, "POST", "/v1/runs/nothing/generate", json={"prompt": "a"}),
        404,
        "no run named 'nothing'",
    )
    assert_refused(
        request(app, "POST", "/v1/runs/cnn/generate", json={"prompt": "a"}),
        404,
        "cnn holds an image_classification run, which cannot generate (it can: classify, predict)",
    )
    assert_refused(
        request(app, "POST", "/v1/runs/esol/classify", json={"inputs": {"SMILES": "C"}}),
        404,
        "not classes",
    )
    assert_refused(request(app, "POST", "/v1/runs/gpt/embed", json={"texts": ["a"]}), 404)
    assert_refused(
        request(app, "POST", "/v1/runs/mr/embed", json={"texts": ["a"]}), 404, "cannot embed"
    )
    assert_refused(request(app, "GET", "/v1/runs/gpt/generate"), 405, "GET is not allowed")
    assert_refused(request(app, "GET", "/nowhere"), 404, "no such page")


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("gpt/generate", {"prompt": ""}, ["prompt", "at least 1 character"]),
        ("gpt/generate", {"prompt": "a", "temperature": -1}, ["temperature", "greater than"]),
        ("gpt/generate", {"prompt": "a", "max_new_tokens": 10**6}, ["max_new_tokens"]),
        ("gpt/generate", {"prompt": "a", "colour": 1}, ["colour is not a field"]),
        ("gpt/generate", {"prompt": "\u00e9\u00e9"}, ["character"]),
        ("translation/translate", {"text": "x", "beam": 0}, ["beam"]),
        ("translation/translate", {"text": "   "}, ["empty"]),
        ("esol/predict", {"inputs": {"SMILES": "C1CC(("}}, ["RDKit cannot parse this SMILES"]),
        ("esol/predict", {"inputs": {"SMILE": "C"}}, ["takes the inputs SMILES, not SMILE"]),
        ("esol/predict", {"inputs": {"SMILES": "C"}, "options": {"side": "x"}}, ["no option"]),
        ("cnn/classify", {"inputs": {"IMAGE": "not base64!"}}, ["base64"]),
        ("cnn/classify", {"inputs": {"IMAGE": "aGVsbG8="}}, ["cannot be read as an image"]),
        ("fsdd/classify", {"inputs": {"AUDIO": "aGVsbG8="}}, ["cannot be read as a wav"]),
        ("gan/sample", {"n": 100000}, ["n", "less than or equal"]),
        ("kg/predict", {"inputs": {"ENTITY": "usaa", "RELATION": "embassy"}},
         ["unknown entity 'usaa'", "closest known: usa"]),
        ("kg/predict", {"inputs": {"ENTITY": "usa"}}, ["needs the input RELATION"]),
        ("kg/predict", {"inputs": {"ENTITY": "usa", "RELATION": "embassy"},
                        "options": {"side": "x"}}, ["side must be head or tail"]),
        ("kg/predict", {"inputs": {"ENTITY": "usa", "RELATION": "embassy"},
                        "options": {"top_k": 0}}, ["top_k must be at least 1"]),
        ("bert/embed", {"texts": []}, ["texts"]),
        ("bert/embed", {"texts": ["a" * 3000]}, ["at most 2000 characters"]),
    ],
)  # fmt: skip
def test_invalid_input_is_422_with_one_sentence(app, path, body, words) -> None:
    assert_refused(request(app, "POST", f"/v1/runs/{path}", json=body), 422, *words)


def test_a_blank_image_and_a_silent_wav_are_refused_by_their_task(app) -> None:
    import numpy as np
    import soundfile
    from PIL import Image

    png, wav = io.BytesIO(), io.BytesIO()
    Image.new("L", (28, 28)).save(png, format="PNG")
    soundfile.write(wav, np.zeros(800, dtype=np.float32), 8000, format="WAV")
    files = {"IMAGE": ("blank.png", png.getvalue(), "image/png")}
    message = assert_refused(
        request(app, "POST", "/v1/runs/cnn/predict", files=files), 422, "blank"
    )
    assert "archlab-serve-" not in message  # no server paths in messages
    files = {"AUDIO": ("quiet.wav", wav.getvalue(), "audio/wav")}
    assert_refused(request(app, "POST", "/v1/runs/fsdd/predict", files=files), 422, "silence")


def test_size_limits_refuse_large_bodies_images_and_sounds(run_dirs) -> None:
    limits = Limits(
        max_body_bytes=50_000, max_image_bytes=5_000, max_image_pixels=10_000,
        max_audio_seconds=0.2, max_prompt_chars=10,
    )  # fmt: skip
    app = make_app(run_dirs, ("gpt", "cnn", "fsdd"), limits=limits)
    try:
        big = {"prompt": "a" * 60_000}
        assert_refused(request(app, "POST", "/v1/runs/gpt/generate", json=big), 413, "50,000")

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"x" * 10_000

        streamed = request(app, "POST", "/v1/runs/gpt/generate", content=chunks())
        assert_refused(streamed, 413, "limit")
        long = {"prompt": "a" * 11}
        assert_refused(request(app, "POST", "/v1/runs/gpt/generate", json=long), 422, "prompt")
        from PIL import Image

        wide = io.BytesIO()
        Image.new("L", (200, 200)).save(wide, format="PNG")
        files = {"IMAGE": ("wide.png", wide.getvalue(), "image/png")}
        assert_refused(
            request(app, "POST", "/v1/runs/cnn/predict", files=files), 422, "200 x 200 pixels"
        )
        noisy = io.BytesIO()
        Image.effect_noise((90, 90), 80).save(noisy, format="PNG")
        files = {"IMAGE": ("noisy.png", noisy.getvalue(), "image/png")}
        assert_refused(request(app, "POST", "/v1/runs/cnn/predict", files=files), 413, "image")
        files = {"AUDIO": ("seven.wav", wav_bytes(7), "audio/wav")}
        assert_refused(
            request(app, "POST", "/v1/runs/fsdd/predict", files=files), 422, "over this server"
        )
    finally:
        app.state.close()


def test_a_token_is_needed_on_the_api_but_not_on_the_page(run_dirs) -> None:
    app = make_app(run_dirs, ("gpt",), token="s3cret")
    try:
        assert_refused(request(app, "GET", "/v1/runs"), 401, "Bearer")
        wrong = {"Authorization": "Bearer nope"}
        response = request(app, "GET", "/v1/runs", headers=wrong)
        assert_refused(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        body = {"prompt": "a", "max_new_tokens": 2}
        assert_refused(request(app, "POST", "/v1/runs/gpt/generate", json=body), 401)
        good = {"Authorization": "Bearer s3cret"}
        assert request(app, "GET", "/v1/runs", headers=good).status_code == 200
        assert request(app, "POST", "/v1/runs/gpt/generate", json=body, headers=good).is_success
        assert request(app, "GET", "/").status_code == 200
        assert request(app, "GET", "/openapi.json").status_code == 200
    finally:
        app.state.close()


def test_a_full_queue_is_503_with_retry_after(run_dirs) -> None:
    app = make_app(run_dirs, ("gpt", "cnn"), limits=Limits(max_queue=1))

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            long = {"prompt": "a", "max_new_tokens": 1000, "temperature": 0}
            first = asyncio.create_task(client.post("/v1/runs/gpt/generate", json=long))
            while app.state.work.in_flight == 0:
                await asyncio.sleep(0.01)
            refused = await client.post("/v1/runs/cnn/predict", json={"inputs": {"IMAGE": "x"}})
            again = await client.post("/v1/runs/gpt/generate", json=long)
            await first
            return refused, again

    try:
        refused, again = asyncio.run(go())
        for response in (refused, again):
            assert_refused(response, 503, "busy")
            assert response.headers["retry-after"] == "1"
        assert app.state.work.in_flight == 0
    finally:
        app.state.close()


def test_the_per_request_time_limit_ends_a_generation_and_a_slow_call(
    run_dirs, monkeypatch
) -> None:
    import time

    from archlab.serve import runs

    app = make_app(run_dirs, ("gpt", "translation"), limits=Limits(request_seconds=0.3))
    try:
        body = {"prompt": "a", "max_new_tokens": 1000, "temperature": 0}
        got = events(request(app, "POST", "/v1/runs/gpt/generate", json=body))
        assert got[-1][0] == "error" and "after 0.3 s" in got[-1][1]["error"]
        assert 0 < sum(e == "message" for e, _ in got) < 1000
        translate = runs.translate
        monkeypatch.setattr(runs, "translate", lambda *a: time.sleep(1) or translate(*a))
        slow = request(app, "POST", "/v1/runs/translation/translate", json={"text": "Hallo"})
        assert_refused(slow, 504, "longer than", "0.3 s")
        assert app.state.work.in_flight == 1  # it holds its place until it ends
        time.sleep(1.2)
        assert app.state.work.in_flight == 0
    finally:
        app.state.close()


def test_an_unexpected_error_is_500_with_a_sentence_and_no_traceback(app, monkeypatch) -> None:
    from archlab.serve import runs

    def broken(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runs, "translate", broken)
    response = request(app, "POST", "/v1/runs/translation/translate", json={"text": "Hallo"})
    message = assert_refused(response, 500, "internal error")
    assert "secret" not in message


def test_runs_are_named_apart_and_bad_directories_are_one_sentence(run_dirs, tmp_path) -> None:
    from archlab.errors import ArchlabError

    with pytest.raises(ArchlabError, match="two runs are named"):
        create_app([str(run_dirs["gpt"]), str(run_dirs["gpt"])])
    with pytest.raises(ArchlabError, match="not an archlab run directory"):
        create_app([str(tmp_path)])
    result = cli("serve", str(tmp_path / "missing"))
    assert result.returncode == 2 and result.stderr.startswith("archlab: error:")
    assert "Traceback" not in result.stderr


def test_a_bad_or_busy_port_is_one_sentence_and_exit_2(run_dirs) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, words in (
            (["--port", "99999"], "--port must be between 0 and 65535, got 99999"),
            (["--port", str(port)], "address already in use"),
            (["--host", "no.such.host.invalid"], "--host no.such.host.invalid"),
        ):
            result = cli("serve", str(run_dirs["gpt"]), *args)
            assert result.returncode == 2, result.stderr
            assert result.stderr.startswith("archlab: error:") and words in result.stderr
            assert result.stderr.count("\n") == 1, result.stderr  # one sentence, no traceback


def test_ctrl_c_ends_open_streams_and_stops_the_server(run_dirs) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "archlab", "serve", str(run_dirs["gpt"]), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        stop = time.monotonic() + 60
        while time.monotonic() < stop:
            try:
                if httpx.get(f"{base}/v1/runs", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"prompt": "ROMEO:", "max_new_tokens": 1000, "temperature": 0}
        lines = []
        with httpx.stream("POST", f"{base}/v1/runs/gpt/generate", json=body, timeout=30) as r:
            for line in filter(None, r.iter_lines()):
                lines.append(line)
                if len(lines) == 2:  # streaming: stop the server now
                    server.send_signal(signal.SIGINT)
        began = time.monotonic()
        assert server.wait(timeout=30) == 0
        assert time.monotonic() - began < 10
    finally:
        server.kill()
    assert lines[-2:] == ["event: error", 'data: {"error": "stopped: the server is shutting down"}']
    err = server.stderr.read()
    assert "Traceback" not in err and "Cancel" not in err, err
    assert err.rstrip().endswith("archlab serve: stopped"), err


def test_a_model_without_batching_streams_from_the_tasks_own_generator(run_dirs) -> None:
    """Language models that are not GPTs (the recurrent ones) generate one request at a time
    through the task's generate_stream; the GPT run stands in for them here."""
    app = make_app(run_dirs, ("gpt",))
    try:
        app.state.runs["gpt"].batch.stop()
        app.state.runs["gpt"].batch = None
        body = {"prompt": "ROMEO:", "max_new_tokens": 30, "temperature": 0}
        got = events(request(app, "POST", "/v1/runs/gpt/generate", json=body))
        assert got[-1] == ("done", {"reason": "length", "tokens": 30})
        run = load(run_dirs["gpt"])
        expected = run.task.generate(run.model, "ROMEO:", max_new_tokens=30, temperature=0)
        assert "ROMEO:" + "".join(d["text"] for e, d in got[:-1]) == expected
        assert_refused(
            request(app, "POST", "/v1/runs/gpt/generate", json={"prompt": "\u00e9"}), 422
        )
    finally:
        app.state.close()
