"""GET /v1/models and /v1/models/{id}: OpenAI's model objects, one per name and alias."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine import SamplingParams
from serving.served import ServedEncoder, ServedModel
from serving.state import ServerState


def model_card(served: ServedModel | ServedEncoder, model_id: str) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "created": served.created,
        "owned_by": "engine",
        "max_model_len": served.max_model_len,
    }
    if model_id != served.name:
        card["root"] = served.name  # an alias says which model answers it
    if isinstance(served, ServedEncoder):
        card["task"] = "embedding"  # serves /v1/embeddings and retrieval, not chat
    else:
        card["sampling_defaults"] = sampling_defaults(served)
        if served.fallback is not None:
            card["fallback"] = served.fallback
    return card


def sampling_defaults(served: ServedModel) -> dict[str, Any]:
    """What a chat request gets for the sampling fields it leaves out (an extra field of
    the card, for the chat page; OpenAI clients ignore it). max_tokens: the rest of the
    context; seed: none (a fresh random stream per request)."""
    params = SamplingParams()
    return {"temperature": params.temperature, "top_p": params.top_p,
            "max_tokens": None, "seed": None}


def model_cards(state: ServerState) -> list[dict[str, Any]]:
    """Every name a request may use, the model's own name first."""
    served_models: list[ServedModel | ServedEncoder] = [*state.models, *state.encoders]
    return [
        model_card(served, model_id)
        for served in served_models
        for model_id in [served.name, *served.aliases]
    ]


async def list_models(request: web.Request, state: ServerState) -> web.Response:
    return web.json_response({"object": "list", "data": model_cards(state)})


async def get_model(request: web.Request, state: ServerState) -> web.Response:
    model_id = request.match_info["model_id"]
    served = state.resolve_embedder(model_id)  # 404 model_not_found envelope for an unknown id
    return web.json_response(model_card(served, model_id))
