"""Fixtures for the embeddings and retrieval server tests: encoders and a server state that
serves a tiny chat model, an embedding model and (optionally) the retrieval endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import AsyncEngine, AsyncSentenceEncoder
from tests.serving.conftest import API_KEY, MAX_LEN, MODEL, Api

ENCODER = "tiny-bert"
MINILM = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from weights import model_path

    path = model_path(MINILM)
    if not (path / "model.safetensors").exists():
        pytest.skip(f"all-MiniLM-L6-v2 is not fetched ({path}); run python -m weights.fetch")
    return path


async def make_state_api(aiohttp_client: Any, engine: AsyncEngine, encoder_path: Path,
                         encoder_name: str = ENCODER, data_dir: Path | None = None,
                         **retrieval: Any) -> tuple[Api, list[Any]]:
    """An in-process server; with data_dir, retrieval is on. Returns the api and what to
    close afterwards (the encoder, the retrieval service)."""
    from serving.app import make_app
    from serving.retrieval.service import RetrievalService, RetrievalSettings
    from serving.served import ServedEncoder, ServedModel
    from serving.state import ServerSettings, ServerState

    encoder = AsyncSentenceEncoder(str(encoder_path))
    served = ServedEncoder(encoder_name, encoder, aliases=[f"{encoder_name}-alias"])
    state = ServerState([ServedModel(MODEL, engine, max_model_len=MAX_LEN)],
                        ServerSettings(api_key=API_KEY), encoders=[served])
    closers: list[Any] = [encoder]
    if data_dir is not None:
        state.retrieval = await RetrievalService.open(RetrievalSettings(data_dir, **retrieval),
                                                      served)
        closers.insert(0, state.retrieval)
    client = await aiohttp_client(make_app(state))
    return Api(client, engine, state), closers


async def close_all(closers: list[Any]) -> None:
    for c in closers:
        if hasattr(c, "close"):
            await c.close()
        else:
            await c.shutdown()


@pytest.fixture
async def emb_api(aiohttp_client: Any, engine: AsyncEngine,
                  tiny_bert_dir: Path) -> AsyncIterator[Api]:
    api, closers = await make_state_api(aiohttp_client, engine, tiny_bert_dir)
    yield api
    await close_all(closers)
