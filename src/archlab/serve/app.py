"""The ASGI app: the HTTP API over the runs given, and the playground page.

Refusals are JSON ``{"error": "one sentence"}`` with a status that says which:
401 (token), 404 (no such run, or a verb the run does not have), 413 (body too
large), 422 (input that cannot be used), 503 (queue full; ``Retry-After``), 504 (the
per-request time ran out).  An unexpected error is logged on the server and answered
500 with a sentence; no traceback is ever sent.
"""

import asyncio
import base64
import binascii
import concurrent.futures
import hmac
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from archlab.errors import ArchlabError
from archlab.serve import runs as R
from archlab.serve.limits import Limits
from archlab.tasks import FILE_INPUTS

log = logging.getLogger("archlab.serve")
STATIC = Path(__file__).parent / "static"


class Refusal(Exception):
    """A request the server answers with ``status`` and one sentence."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class ErrorBody(BaseModel):
    error: str


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    words = {
        401: "no or wrong bearer token",
        404: "no such run, or the run cannot do this",
        413: "the request body is too large",
        422: "the input cannot be used",
        503: "the queue is full; try again after Retry-After seconds",
        504: "the request ran out of time",
    }
    return {s: {"model": ErrorBody, "description": words[s]} for s in statuses}


# ----- the body limit, below the app: it counts bytes as they arrive -----


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"the request body is over this server's limit of {self.max_bytes:,} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, {"error": message})
        seen = 0
        over = False  # the body went over: whatever the app answers becomes this 413
        started = False

        async def counting_receive():
            nonlocal seen, over
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise _TooLarge
            return event

        async def watching_send(event):
            nonlocal started
            if event["type"] == "http.response.start":
                if started:
                    return
                started = True
                if over:
                    await _send_json(send, 413, {"error": message})
                    return
            if not over:
                await send(event)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, {"error": message})


class _TooLarge(Exception):
    pass


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# ----- the work queue: one inference at a time, a bound on what may wait -----


class Work:
    """Counts requests in flight (waiting or running, every verb) against ``max_queue``;
    runs blocking inference one call at a time in a thread of its own."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.lock = threading.Lock()  # leave() is also called from the inference thread
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The inference thread, started on first use (again after :meth:`close`)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "archlab-infer")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def check(self) -> None:
        """Refuse (503) now if the queue is full, before reading a request's body."""
        if self.in_flight >= self.limits.max_queue:
            self.enter()

    def enter(self) -> None:
        with self.lock:
            if self.in_flight >= self.limits.max_queue:
                raise Refusal(
                    503,
                    f"the server is busy ({self.in_flight} requests in flight, its limit); "
                    "try again shortly",
                    {"Retry-After": str(self.limits.retry_after)},
                )
            self.in_flight += 1

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Start ``fn(*args)`` in the inference thread; it holds its place in the queue
        until it has ended (also when its client stopped waiting)."""
        self.enter()
        future = self.executor.submit(fn, *args)
        future.add_done_callback(lambda _: self.leave())
        return future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the inference thread, within the per-request time."""
        future = self.submit(fn, *args)
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self.limits.request_seconds
            )
        except TimeoutError:
            future.cancel()  # not started yet: it will not run
            raise Refusal(
                504,
                f"the request took longer than this server's limit of "
                f"{self.limits.request_seconds:g} s",
            ) from None


# ----- request bodies -----


def body_models(limits: Limits) -> dict[str, type[BaseModel]]:
    """The JSON bodies, with the server's limits in their schemas."""

    class GenerateBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        prompt: str = Field(min_length=1, max_length=limits.max_prompt_chars)
        max_new_tokens: int = Field(
            default=min(200, limits.max_new_tokens), ge=0, le=limits.max_new_tokens
        )
        temperature: float = Field(default=0.8, ge=0, le=100, description="0: greedy")
        top_k: int | None = Field(default=200, ge=1, le=1_000_000)
        top_p: float | None = Field(default=None, gt=0, le=1)
        seed: int | None = Field(default=None, ge=0, le=2**63 - 1)

    class TranslateBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: str = Field(min_length=1, max_length=limits.max_text_chars)
        beam: int | None = Field(default=None, ge=1, le=limits.max_beam)
        attention: bool = Field(
            default=False, description="also return the cross-attention over the source"
        )

    class PredictBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: dict[str, str] = Field(
            description="the run's inputs by name (GET /v1/runs: inputs); a file (IMAGE, "
            "AUDIO) as base64 or a data: URL",
            max_length=8,
        )
        options: dict[str, str | int] = Field(
            default_factory=dict, description="the task's options (GET /v1/runs: options)"
        )
        draw: bool = Field(default=False, description="a SMILES input: add RDKit's SVG drawing")

    class SampleBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int = Field(default=16, ge=1, le=limits.max_samples)
        seed: int = Field(default=0, ge=0, le=2**63 - 1)

    class EmbedBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[Annotated[str, Field(max_length=limits.max_text_chars)]] = Field(
            min_length=1, max_length=64
        )

    return {
        "generate": GenerateBody,
        "translate": TranslateBody,
        "predict": PredictBody,
        "sample": SampleBody,
        "embed": EmbedBody,
    }


class RunList(BaseModel):
    runs: list[dict[str, Any]]


class Translation(BaseModel):
    translation: str
    source: list[str] | None = None
    target: list[str] | None = None
    attention: list[list[float]] | None = None


class Classification(BaseModel):
    label: str
    probability: float
    labels: list[str]
    probabilities: list[float]


class Embeddings(BaseModel):
    embeddings: list[list[float]]


SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,")


def write_inputs(
    names: list[str], fields: dict, folder: tempfile.TemporaryDirectory, limits: Limits
) -> list[str]:
    """The inputs in the task's order: texts as they are, files written to ``folder``
    once their size limits are checked."""
    inputs = []
    for n in names:
        value, filename = fields[n]
        if n not in FILE_INPUTS:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if len(text) > limits.max_text_chars:
                raise Refusal(
                    422,
                    f"{n} is {len(text):,} characters, over this server's limit of "
                    f"{limits.max_text_chars:,}",
                )
            inputs.append(text)
            continue
        data = value.encode() if isinstance(value, str) else value
        cap = limits.max_image_bytes if FILE_INPUTS[n] == "image" else limits.max_audio_bytes
        if len(data) > cap:
            raise Refusal(
                413,
                f"the {FILE_INPUTS[n]} is {len(data):,} bytes, over this server's limit of {cap:,}",
            )
        stem = SAFE_FILENAME.sub("_", Path(filename or "").name)[:64].lstrip(".")
        path = Path(folder.name) / (stem or ("image" if n == "IMAGE" else "sound"))
        path.write_bytes(data)
        if FILE_INPUTS[n] == "image":
            R.check_image(data, limits.max_image_pixels)
        else:
            R.check_audio(path, limits.max_audio_seconds)
        inputs.append(str(path))
    return inputs


def create_app(
    run_dirs: list[str] | list[tuple[str, Path]],
    token: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The server for ``run_dirs`` (``RUN_DIR``, ``NAME=RUN_DIR`` or (name, path) pairs).

    Every run is loaded here, before the first request: a directory that is not a run
    raises :class:`~archlab.errors.ArchlabError`.  ``token``: every ``/v1`` request
    needs ``Authorization: Bearer TOKEN`` (the page, its scripts and the API's
    description stay open: they hold no data).
    """
    from archlab.models.gpt import GPT
    from archlab.serve.batching import BatchWorker, ContinuousBatch

    limits = limits or Limits()
    pairs = (
        R.parse_run_args([str(d) for d in run_dirs])
        if run_dirs and not isinstance(run_dirs[0], tuple)
        else list(run_dirs)
    )
    served: dict[str, R.ServedRun] = {}
    for name, path in pairs:
        run = R.load_served(name, Path(path))
        if "generate" in run.verbs and isinstance(run.single.model, GPT):
            run.batch = BatchWorker(ContinuousBatch(run.single.model, limits.max_batch), name)
        served[name] = run
    work = Work(limits)
    bodies = body_models(limits)
    streams: set[Callable[[], None]] = set()  # how to end each open generation stream

    def stop_streams() -> None:
        """End every open generation stream with an error event (the server is stopping:
        uvicorn waits for open responses before it shuts down)."""
        for stop in list(streams):
            stop()

    def close() -> None:
        """Stop the decoding threads and the inference thread (at shutdown; a request
        after it starts them again)."""
        for run in served.values():
            if run.batch is not None:
                run.batch.stop()
        work.close()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close()

    app = FastAPI(
        title="archlab serve",
        version="1",
        description="Trained archlab runs over HTTP: each run answers the verbs its task "
        'declares (GET /v1/runs).  Refusals are JSON {"error": sentence}.',
        lifespan=lifespan,
    )
    app.state.runs, app.state.limits, app.state.work = served, limits, work
    app.state.close, app.state.stop_streams = close, stop_streams

    # ----- errors: one sentence, never a traceback -----

    @app.exception_handler(Refusal)
    async def on_refusal(request: Request, exc: Refusal) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(ArchlabError)
    async def on_user_error(request: Request, exc: ArchlabError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 422)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_sentence(exc.errors())}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body: invalid input
            return JSONResponse({"error": "the request body is not valid JSON (or form)"}, 422)
        words = {404: "no such page", 405: f"{request.method} is not allowed here"}
        message = words.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the server's log has the details"}, 500)

    # ----- auth -----

    @app.middleware("http")
    async def bearer(request: Request, call_next):
        if token is not None and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()
            ):
                return JSONResponse(
                    {"error": "this server needs the header Authorization: Bearer TOKEN"},
                    401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    def find(name: str, verb: str) -> R.ServedRun:
        run = served.get(name)
        if run is None:
            raise Refusal(404, f"no run named {name!r} is served here (runs: {', '.join(served)})")
        if verb not in run.verbs:
            raise Refusal(404, run.cannot(verb))
        return run

    # ----- endpoints -----

    @app.get("/v1/runs", response_model=RunList, responses=refusals(401))
    async def list_runs() -> dict:
        """Each run: its task, model, figures from results.json, and its verbs."""
        return {"runs": [run.info for run in served.values()]}

    generate_body = bodies["generate"]

    @app.post(
        "/v1/runs/{name}/generate",
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": 'server-sent events: data {"text": piece} per piece; then '
                'event done {"reason", "tokens"} (or event error {"error"})',
            },
            **refusals(401, 404, 413, 422, 503),
        },
        response_class=StreamingResponse,
    )
    async def generate(name: str, body: generate_body) -> StreamingResponse:  # type: ignore[valid-type]
        """Continue a prompt; the text streams back as server-sent events."""
        run = find(name, "generate")
        if run.batch is not None:
            return await batched_stream(run, body)
        return await threaded_stream(run, body)

    async def batched_stream(run: R.ServedRun, body: Any) -> StreamingResponse:
        from archlab.serve.batching import Request as GenRequest

        task = run.single.task
        prompt = task.encode_prompt(body.prompt)
        decoder = task.text_decoder(prompt)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        request = GenRequest(
            prompt,
            body.max_new_tokens,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            seed=body.seed,
            emit=lambda token: loop.call_soon_threadsafe(queue.put_nowait, ("token", token)),
            finish=lambda reason: loop.call_soon_threadsafe(queue.put_nowait, ("end", reason)),
            deadline=time.monotonic() + limits.request_seconds,
        )
        work.enter()
        run.batch.submit(request)

        def stop() -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("end", SHUTTING_DOWN))

        async def events() -> AsyncIterator[str]:
            made = 0
            streams.add(stop)
            try:
                while True:
                    # every token that arrived since the last event goes in one event: a
                    # client that falls behind gets fewer, longer pieces
                    items = [await queue.get()]
                    while not queue.empty() and items[-1][0] != "end":
                        items.append(queue.get_nowait())
                    tokens = [value for kind, value in items if kind == "token"]
                    made += len(tokens)
                    text = "".join(decoder.push(t) for t in tokens)
                    if text:
                        yield sse({"text": text})
                    if items[-1][0] == "end":  # the request's end, or the server's
                        yield end_event(items[-1][1], made, limits)
                        return
            finally:
                streams.discard(stop)
                request.cancelled = True  # a client that left frees its row
                work.leave()

        return StreamingResponse(events(), media_type="text/event-stream", headers=NO_BUFFER)

    async def threaded_stream(run: R.ServedRun, body: Any) -> StreamingResponse:
        run.single.task.encode_prompt(body.prompt)  # refuse an empty prompt up front
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        deadline = time.monotonic() + limits.request_seconds
        state = {"cancelled": False}

        def should_stop() -> str | None:
            if state["cancelled"]:
                return "cancelled"
            return "time limit" if time.monotonic() > deadline else None

        def produce() -> None:
            try:
                reason = R.generate_text(
                    run,
                    body,
                    lambda piece: loop.call_soon_threadsafe(queue.put_nowait, ("text", piece)),
                    should_stop,
                )
            except ArchlabError as exc:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", str(exc)))
                return
            except Exception:
                log.exception("generation failed")
                loop.call_soon_threadsafe(queue.put_nowait, ("error", "internal error"))
                return
            loop.call_soon_threadsafe(queue.put_nowait, ("end", reason))

        work.submit(produce)

        def stop() -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("end", SHUTTING_DOWN))

        async def events() -> AsyncIterator[str]:
            made = 0
            streams.add(stop)
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "text":
                        made += 1
                        yield sse({"text": value})
                    elif kind == "error":
                        yield sse({"error": value}, "error")
                        return
                    else:
                        yield end_event(value, made, limits)
                        return
            finally:
                streams.discard(stop)
                state["cancelled"] = True

        return StreamingResponse(events(), media_type="text/event-stream", headers=NO_BUFFER)

    translate_body = bodies["translate"]

    @app.post(
        "/v1/runs/{name}/translate",
        response_model=Translation,
        response_model_exclude_none=True,
        responses=refusals(401, 404, 413, 422, 503, 504),
    )
    async def translate(name: str, body: translate_body) -> dict:  # type: ignore[valid-type]
        """Translate a sentence by beam search (``beam``: the run's own by default), with the
        last decoder layer's cross-attention over the source tokens if ``attention``."""
        run = find(name, "translate")
        return await work.run(R.translate, run, body.text, body.beam, body.attention)

    predict_body = bodies["predict"]
    upload_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictBody"},
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "description": "one field per input, named as GET /v1/runs says "
                        "(IMAGE, AUDIO: files; the others text); options as fields",
                        "additionalProperties": {"type": "string", "format": "binary"},
                    }
                },
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "description": "text inputs and options as fields",
                        "additionalProperties": {"type": "string"},
                    }
                },
            },
        }
    }

    async def read_inputs(
        run: R.ServedRun, request: Request
    ) -> tuple[list[str], dict[str, Any], bool, tempfile.TemporaryDirectory]:
        """The inputs of a predict/classify request, files written to a temporary folder."""
        names = list(run.task_cls.predict_inputs)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fields: dict[str, tuple[bytes | str, str | None]] = {}
        options: dict[str, Any] = {}
        draw = False
        if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            try:
                form = await request.form(max_files=8, max_fields=16)
            except Exception as exc:  # a malformed form
                raise Refusal(422, f"the form cannot be read ({exc})") from None
            for key, value in form.multi_items():
                if isinstance(value, str):
                    if key in names:
                        fields[key] = (value, None)
                    elif key == "draw":
                        draw = value.lower() in ("1", "true", "yes", "on")
                    else:
                        options[key] = value
                else:
                    fields[key] = (await value.read(), value.filename)
        else:
            try:
                raw = json.loads(await request.body() or b"null")
            except (ValueError, UnicodeDecodeError):
                raise Refusal(422, "the body is not JSON (or a form)") from None
            try:
                body = predict_body.model_validate(raw)
            except Exception as exc:
                errors = getattr(exc, "errors", lambda: [])()
                raise Refusal(422, validation_sentence(errors, prefix=())) from None
            draw = body.draw
            options = dict(body.options)
            for key, value in body.inputs.items():
                if key in names and key in FILE_INPUTS:
                    fields[key] = (decode_base64(key, value), None)
                else:
                    fields[key] = (value, None)
        unknown = sorted(set(fields) - set(names))
        if unknown:
            raise Refusal(422, f"{run.name} takes the inputs {', '.join(names)}, not {unknown[0]}")
        missing = [n for n in names if n not in fields]
        if missing:
            raise Refusal(
                422,
                f"{run.name} needs the input{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            )
        takes = set(run.info["options"])
        for key in options:
            if key not in takes:
                have = f"it takes {', '.join(sorted(takes))}" if takes else "it takes none"
                raise Refusal(422, f"{run.name} has no option {key!r} ({have})")
            if key == "top_k":
                try:
                    options[key] = int(options[key])
                except (TypeError, ValueError):
                    raise Refusal(422, "the option top_k must be a whole number") from None
                if options[key] < 1:
                    raise Refusal(422, f"the option top_k must be at least 1, not {options[key]}")
            if key == "side" and options[key] not in ("head", "tail"):
                raise Refusal(422, f"the option side must be head or tail, not {options[key]!r}")
        folder = tempfile.TemporaryDirectory(prefix="archlab-serve-")
        try:
            return write_inputs(names, fields, folder, limits), options, draw, folder
        except BaseException:
            folder.cleanup()
            raise

    def unfold(message: str, folder: tempfile.TemporaryDirectory) -> str:
        """A task's message with the temporary folder's path taken out."""
        return message.replace(folder.name + "/", "")

    @app.post(
        "/v1/runs/{name}/predict",
        openapi_extra=upload_schema,
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}}
        | refusals(401, 404, 413, 422, 503, 504),
    )
    async def predict(name: str, request: Request) -> JSONResponse:
        """The task's prediction for one input (or pair, or query): a label and its
        probability, a value, or a ranking; JSON or a multipart form with file uploads."""
        run = find(name, "predict")
        work.check()
        inputs, options, draw, folder = await read_inputs(run, request)
        with folder:
            rows = await work.run(R.predict, run, inputs, options)
            row = rows[0] if len(rows) == 1 else {"results": rows}
            if "error" in row:
                raise Refusal(422, unfold(str(row["error"]), folder))
        if draw and "SMILES" in run.task_cls.predict_inputs:
            svg = R.smiles_svg(inputs[list(run.task_cls.predict_inputs).index("SMILES")])
            if svg is not None:
                row = {**row, "svg": svg}
        return JSONResponse(row)

    @app.post(
        "/v1/runs/{name}/classify",
        openapi_extra=upload_schema,
        response_model=Classification,
        responses=refusals(401, 404, 413, 422, 503, 504),
    )
    async def classify(name: str, request: Request) -> dict:
        """Every class's probability for one input (or pair), as predict reads it."""
        run = find(name, "classify")
        work.check()
        inputs, options, _, folder = await read_inputs(run, request)
        with folder:
            result = await work.run(R.classify, run, inputs)
            if isinstance(result, str):
                raise Refusal(422, unfold(result, folder))
        return result

    sample_body = bodies["sample"]

    @app.post(
        "/v1/runs/{name}/sample",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "a PNG grid"},
            **refusals(401, 404, 413, 422, 503, 504),
        },
    )
    async def sample(name: str, body: sample_body) -> Response:  # type: ignore[valid-type]
        """A PNG grid of ``n`` generated images (class-conditional: a row per class)."""
        run = find(name, "sample")
        png, layout = await work.run(R.sample_png, run, body.n, body.seed)
        return Response(png, media_type="image/png", headers={"X-Layout": layout})

    embed_body = bodies["embed"]

    @app.post(
        "/v1/runs/{name}/embed",
        response_model=Embeddings,
        responses=refusals(401, 404, 413, 422, 503, 504),
    )
    async def embed(name: str, body: embed_body) -> dict:  # type: ignore[valid-type]
        """One vector per text, pooled as the run's task says."""
        run = find(name, "embed")
        return {"embeddings": await work.run(R.embed, run, body.texts)}

    # ----- the playground -----

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


NO_BUFFER = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


SHUTTING_DOWN = "the server is shutting down"


def end_event(reason: str | None, made: int, limits: Limits) -> str:
    if reason is None:
        return sse({"reason": "length", "tokens": made}, "done")
    if reason == "time limit":
        return sse(
            {
                "error": f"stopped after {limits.request_seconds:g} s, this server's per-request "
                f"limit ({made} tokens made)"
            },
            "error",
        )
    return sse({"error": f"stopped: {reason}"}, "error")


def decode_base64(name: str, value: str) -> bytes:
    try:
        return base64.b64decode(DATA_URL.sub("", value.strip()), validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(422, f"{name} must be a file's bytes in base64 (or a data: URL)") from None


def validation_sentence(errors: list[dict], prefix: tuple = ("body",)) -> str:
    """Pydantic's first complaint as one sentence: where, then what."""
    if not errors:
        return "the request body is not what this endpoint takes"
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "path", "query")]
    where = ".".join(loc) or "the body"
    message = str(first.get("msg", "is invalid"))
    if first.get("type") == "missing":
        return f"{where} is missing"
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    if first.get("type") == "extra_forbidden":
        return f"{where} is not a field this endpoint takes"
    return f"{where}: {message[0].lower() + message[1:]}"
