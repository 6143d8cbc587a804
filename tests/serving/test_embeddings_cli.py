"""The embedding and retrieval flags of `python -m serving`, parsed into the ServePlan."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.cli import DEFAULT_EMBEDDING_MODEL, CLIError, parse_args


def test_embedding_model_is_served_by_default(tmp_path: Path) -> None:
    plan = parse_args(["--data-dir", str(tmp_path)])
    assert plan.embedding is not None
    assert plan.embedding.model == DEFAULT_EMBEDDING_MODEL
    assert plan.embedding.names == [DEFAULT_EMBEDDING_MODEL] and not plan.embedding.explicit
    r = plan.retrieval
    assert r is not None and r.data_dir == tmp_path and r.qdrant_url is None
    assert (r.collection, r.limit, r.score_threshold, r.rag_chat) == ("default", 5, 0.4, False)


def test_flags_reach_the_plan(tmp_path: Path) -> None:
    plan = parse_args(["--embedding-model", str(tmp_path), "--embedding-model-name", "e5,emb",
                       "--qdrant-url", "http://qdrant:6333", "--rag-collection", "docs",
                       "--rag-chunk-capacity", "64", "--rag-chunk-overlap", "8",
                       "--rag-limit", "3", "--rag-score-threshold", "0.2", "--rag-chat"])
    assert plan.embedding is not None and plan.embedding.explicit
    assert plan.embedding.names == ["e5", "emb"] and plan.embedding.model == str(tmp_path)
    r = plan.retrieval
    assert r is not None and r.qdrant_url == "http://qdrant:6333"
    assert (r.collection, r.chunk_capacity, r.chunk_overlap, r.limit, r.score_threshold,
            r.rag_chat) == ("docs", 64, 8, 3, 0.2, True)


def test_opt_out() -> None:
    plan = parse_args(["--no-embedding-model"])
    assert plan.embedding is None and plan.retrieval is None


@pytest.mark.parametrize("argv", [
    ["--no-embedding-model", "--embedding-model", "x"],
    ["--embedding-model-name", "smollm2-135m-instruct"],  # the chat model's name
    ["--embedding-model-name", " , "],
    ["--rag-chunk-capacity", "0"],
    ["--rag-chunk-capacity", "8", "--rag-chunk-overlap", "8"],
    ["--rag-limit", "0"],
    ["--rag-collection", "a/b"],
])
def test_bad_flags(argv: list[str]) -> None:
    with pytest.raises(CLIError):
        parse_args(argv)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
async def test_unreachable_qdrant_server_is_a_503(tmp_path: Path) -> None:
    from serving.errors import APIError
    from serving.retrieval.handlers import client_errors
    from serving.retrieval.store import VectorStore

    store = VectorStore(url="http://127.0.0.1:1")  # nothing listens on port 1
    try:
        with pytest.raises(APIError) as info, client_errors():
            await store.search("docs", [0.0, 1.0], 3, None)
        assert info.value.status == 503 and info.value.code == "vector_store_unavailable"
        assert "Retry-After" in info.value.headers
    finally:
        await store.close()
