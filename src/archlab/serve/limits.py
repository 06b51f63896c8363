"""What one request may ask of the server; each limit is a ``archlab serve`` option."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from archlab.config import Config, PositiveFloat, Size


@dataclass
class Limits(Config):
    """The server's limits.  A request past one is refused with a sentence naming it."""

    section: ClassVar[str] = "limits"

    max_body_bytes: Size = 8_000_000  # a request's whole body (413)
    max_prompt_chars: Size = 2_000  # generate: the prompt
    max_new_tokens: Size = 1_000  # generate: tokens per request
    max_text_chars: Size = 2_000  # translate, predict, classify, embed: each text
    max_beam: Size = 16  # translate: beam size
    max_samples: Size = 256  # sample: images in one grid
    max_image_bytes: Size = 2_000_000  # an uploaded image (413)
    max_image_pixels: Size = 4_000_000  # its width x height, read before decoding it
    max_audio_bytes: Size = 2_000_000  # an uploaded sound (413)
    max_audio_seconds: PositiveFloat = 10.0  # its length, read before decoding it
    request_seconds: PositiveFloat = 60.0  # per request; a generation stops there (504)
    max_queue: Size = 64  # requests in flight, every verb; past it: 503 with Retry-After
    max_batch: Size = 32  # generation requests decoded together per GPT run
    retry_after: Size = 1  # seconds, in a 503's Retry-After


def limit_fields() -> list[tuple[str, type, object]]:
    """(name, type, default) of every limit, for the command line's options."""
    return [(f.name, type(f.default), f.default) for f in fields(Limits)]
