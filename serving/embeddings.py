"""POST /v1/embeddings: OpenAI's embeddings endpoint, over the BERT encoders and (pooled
final hidden states) the chat models.

`input` is a string, a list of strings, token ids, or a list of token-id lists (token ids go
to the model as given: for a BERT model, with its [CLS] ... [SEP], and only if its tokenizer
could have produced them; other ids, such as another model's, are a 400 that says to send
the text). `encoding_format`
"base64" is little-endian float32. `dimensions` keeps the first d values and re-normalises.
An input over the model's length is a 400 naming both numbers unless `truncate` is true
(an extension, as in Hugging Face's text-embeddings-inference): then its first tokens are
kept (a BERT text keeps its closing [SEP]).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from engine import EmbeddingOutput
from engine.embedding import ForeignTokenIds
from serving.errors import bad_request
from serving.offload import off_loop
from serving.request_keys import MODEL, PROMPT, USAGE
from serving.requests import parse_request
from serving.served import ServedEncoder, ServedModel
from serving.state import ServerState

MAX_INPUTS = 2048  # OpenAI's limit on the number of inputs per request

EmbedInput = str | list[int]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None  # only labels the end user, as in OpenAI's API
    truncate: bool = False
    # Chat models only: which token states make the vector (a BERT model's is in its config).
    pooling: Literal["mean", "last"] | None = None

    def inputs(self) -> list[EmbedInput]:
        x = self.input
        if isinstance(x, str) or (x and isinstance(x[0], int)):
            return [x]  # type: ignore[list-item]
        return list(x)  # type: ignore[arg-type]


@dataclass
class Embedded:
    """Vectors of one request, and the model that made them."""

    model: str
    outputs: list[EmbeddingOutput]

    @property
    def prompt_tokens(self) -> int:
        return sum(len(o.prompt_token_ids) for o in self.outputs)


def check_inputs(inputs: list[EmbedInput]) -> None:
    if not inputs:
        raise bad_request("input must not be empty", "input")
    if len(inputs) > MAX_INPUTS:
        raise bad_request(f"input holds {len(inputs)} items; at most {MAX_INPUTS} are allowed",
                          "input")
    for i, item in enumerate(inputs):
        if not item:
            raise bad_request(f"input[{i}] must not be empty", "input")


async def embed_inputs(state: ServerState, model: str, inputs: list[EmbedInput],
                       truncate: bool = False, pooling: str | None = None) -> Embedded:
    """Embed with the named encoder or chat model; every client error is a 400/404."""
    check_inputs(inputs)
    target = state.resolve_embedder(model)
    try:
        if isinstance(target, ServedEncoder):
            if pooling is not None:
                raise bad_request(f"pooling is fixed by {target.name}'s configuration; it can "
                                  "only be chosen for a chat model", "pooling")
            outputs = await target.encoder.embed(inputs, truncate)
        else:
            outputs = await target.engine.embed(inputs, pooling or "mean", True, truncate)
    except ForeignTokenIds as e:  # ids made by another model's tokenizer
        raise bad_request(f"{e} (e.g. langchain's OpenAIEmbeddings tokenizes for OpenAI's "
                          "models unless it is given check_embedding_ctx_length=False).",
                          "input") from None
    except ValueError as e:  # over-length inputs, ids out of the vocabulary
        code = "context_length_exceeded" if "maximum input length" in str(e) else None
        raise bad_request(str(e), "input", code) from None
    return Embedded(target.name, outputs)


def shorten(vector: list[float], dimensions: int | None) -> list[float]:
    """The first `dimensions` values, scaled back to unit length."""
    if dimensions is None:
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in head))
    return [v / norm for v in head] if norm > 0 else head


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def model_dim(target: ServedEncoder | ServedModel) -> int:
    if isinstance(target, ServedEncoder):
        return target.encoder.dim
    return target.engine.embedding_dim


def _response_text(req: EmbeddingRequest, done: Embedded) -> str:
    """The JSON answer, built and serialized off the loop (2048 vectors are ~800k floats)."""
    data = [
        {"object": "embedding", "index": i,
         "embedding": encode(shorten(o.embedding, req.dimensions), req.encoding_format)}
        for i, o in enumerate(done.outputs)
    ]
    usage = {"prompt_tokens": done.prompt_tokens, "total_tokens": done.prompt_tokens}
    return json.dumps({"object": "list", "data": data, "model": done.model, "usage": usage})


async def create_embeddings(request: web.Request, state: ServerState) -> web.Response:
    req = await off_loop(parse_request, EmbeddingRequest, await request.read())
    target = state.resolve_embedder(req.model)
    dim = model_dim(target)
    if req.dimensions is not None and req.dimensions > dim:
        raise bad_request(f"dimensions ({req.dimensions}) must not exceed the model's "
                          f"embedding size ({dim})", "dimensions")
    inputs = req.inputs()
    request[PROMPT] = inputs[0] if len(inputs) == 1 else inputs  # logged only when asked
    done = await embed_inputs(state, req.model, inputs, req.truncate, req.pooling)
    request[MODEL] = done.model
    request[USAGE] = {"prompt_tokens": done.prompt_tokens, "completion_tokens": 0}
    return web.Response(text=await off_loop(_response_text, req, done),
                        content_type="application/json")
