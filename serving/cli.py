"""Command line of `python -m serving`, in the style of `vllm serve`, turned into a ServePlan.

Everything that can be checked without loading a model is checked here and raised as
CLIError (exit code 2): alias lists, duplicate names, fallback rules, engine settings.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine import AsyncEngine, EngineConfig
from engine.model.checkpoint import resolve_model_path
from serving.retrieval.service import RetrievalSettings
from serving.state import ServerSettings

API_KEY_ENV = "ENGINE_API_KEY"
DATA_DIR_ENV = "ENGINE_DATA_DIR"
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


class CLIError(ValueError):
    """Bad command-line input: reported on one line, exit code 2."""


@dataclass
class ModelSpec:
    names: list[str]  # names[0] is the model's id; the rest are aliases
    config: EngineConfig


@dataclass
class EmbeddingSpec:
    names: list[str]  # names[0] is the model's id; the rest are aliases
    model: str
    explicit: bool  # asked for by flag: failing to load it is an error, not a warning


@dataclass
class ServePlan:
    models: list[ModelSpec]
    fallbacks: dict[str, str]  # short model id -> long model id
    settings: ServerSettings
    host: str
    port: int
    log_level: str = "info"
    embedding: EmbeddingSpec | None = None
    retrieval: RetrievalSettings | None = None


def byte_size(text: str) -> int:
    """'1073741824', '512MiB', '2G' -> bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 2GiB, 512M)")
    return int(match.group(1)) << (10 * " KMGT".index(match.group(2).upper() or " "))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving",
                                description="OpenAI-compatible HTTP server for the engine")
    p.add_argument("--model", action="append", help="registered name, HF-style folder or .gguf "
                   f"file; repeat to serve several (default: {DEFAULT_MODEL})")
    p.add_argument("--served-model-name", action="append", default=[], metavar="NAMES",
                   help="comma-separated names for the i-th --model; the first is its id")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"Bearer key required on /v1/*, /tokenize, /detokenize "
                   f"(default: ${API_KEY_ENV})")
    e = p.add_argument_group("engine (applies to every --model)")
    e.add_argument("--max-model-len", type=int)
    e.add_argument("--max-num-seqs", type=int)
    e.add_argument("--max-num-batched-tokens", type=int)
    e.add_argument("--dtype")
    e.add_argument("--device")
    e.add_argument("--kv-cache-bytes", type=byte_size, help="KV cache budget on the CPU")
    e.add_argument("--gpu-memory-utilization", type=float)
    e.add_argument("--seed", type=int)
    e.add_argument("--quantization", choices=["fp8", "int8", "none"],
                   help="fp8: W8A8 FP8 linear layers (GPU); int8: int8 weights on the CPU (the "
                        "default there for 4/5/6/8-bit GGUF files); none: float weights")
    e.add_argument("--load-format", choices=["auto", "dummy"],
                   help="dummy: random weights for the model's shape (benchmarking)")
    e.add_argument("--kernel-backend", choices=["auto", "torch", "triton"],
                   help="auto: Triton kernels on CUDA, the torch reference elsewhere")
    e.add_argument("--enforce-eager", action="store_true", default=None,
                   help="no CUDA graphs for decode steps")
    e.add_argument("--speculative-ngram", type=int, metavar="K",
                   help="speculative decoding by prompt lookup: up to K n-gram draft tokens "
                        "per decoding sequence, verified in one forward (0: off)")
    e.add_argument("--tensor-parallel-size", type=int, metavar="N",
                   help="split the model over N processes (GPUs on CUDA), Megatron-style; "
                        "one model per server when N > 1")
    s = p.add_argument_group("server")
    s.add_argument("--fallback", action="append", default=[], metavar="SHORT=LONG",
                   help="prompts longer than SHORT's context go to LONG (served names)")
    s.add_argument("--max-waiting-requests", type=int,
                   default=ServerSettings.max_waiting_requests,
                   help="sequences (prompts x n) that may wait for a model; beyond, 503")
    s.add_argument("--max-prompts-per-request", type=int,
                   default=ServerSettings.max_prompts_per_request,
                   help="prompts one /v1/completions request may hold; beyond, 400")
    s.add_argument("--max-body-bytes", type=byte_size, default=ServerSettings.max_body_bytes)
    s.add_argument("--shutdown-grace", type=float, default=ServerSettings.shutdown_grace_s,
                   help="seconds in-flight requests get to finish on SIGINT/SIGTERM")
    s.add_argument("--header-timeout", type=float, default=ServerSettings.header_timeout_s,
                   help="seconds a connection has to send a request's headers, from "
                        "connecting or from its previous response (idle ones close then)")
    s.add_argument("--body-timeout", type=float, default=ServerSettings.body_timeout_s,
                   help="seconds a request's body has to arrive whole (then 408)")
    s.add_argument("--max-connections", type=int, default=ServerSettings.max_connections,
                   help="open connections beyond this are answered 503 and closed")
    s.add_argument("--max-tool-calls", type=int, default=ServerSettings.max_tool_calls,
                   help="most tool calls in one assistant message (enforced by the grammar)")
    s.add_argument("--log-prompts", action="store_true", help="log prompts (off: privacy)")
    s.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical"])
    add_retrieval_flags(p)
    return p


def add_retrieval_flags(p: argparse.ArgumentParser) -> None:
    d = RetrievalSettings(data_dir=Path())
    r = p.add_argument_group("embeddings and retrieval")
    r.add_argument("--embedding-model", help="BERT sentence-embedding model (registered name or "
                   f"HF folder) served beside the chat models (default: {DEFAULT_EMBEDDING_MODEL})")
    r.add_argument("--embedding-model-name", metavar="NAMES",
                   help="comma-separated names for the embedding model; the first is its id")
    r.add_argument("--no-embedding-model", action="store_true",
                   help="serve no embedding model (and so no retrieval endpoints)")
    r.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV, "engine-data"),
                   help="uploaded files, the local vector store and stored responses "
                   f"(default: ${DATA_DIR_ENV} or ./engine-data)")
    r.add_argument("--qdrant-url", help="a Qdrant server instead of the local store "
                   "(e.g. http://localhost:6333)")
    r.add_argument("--rag-collection", default=d.collection, help="default collection name")
    r.add_argument("--rag-chunk-capacity", type=int, default=d.chunk_capacity,
                   help="default tokens per chunk")
    r.add_argument("--rag-chunk-overlap", type=int, default=d.chunk_overlap,
                   help="default tokens shared by consecutive windows of a long paragraph")
    r.add_argument("--rag-limit", type=int, default=d.limit, help="default points per search")
    r.add_argument("--rag-score-threshold", type=float, default=d.score_threshold,
                   help="default lowest cosine score a search returns")
    r.add_argument("--rag-chat", action="store_true", help="add retrieved context to every "
                   'chat request that does not send "rag": false')


def embedding_plan(args: argparse.Namespace, specs: list[ModelSpec]
                   ) -> tuple[EmbeddingSpec | None, RetrievalSettings | None]:
    if args.no_embedding_model:
        if args.embedding_model or args.embedding_model_name:
            raise CLIError("--no-embedding-model contradicts --embedding-model(-name)")
        return None, None
    model = args.embedding_model or DEFAULT_EMBEDDING_MODEL
    names = [n.strip() for n in (args.embedding_model_name or model).split(",") if n.strip()]
    if not names:
        raise CLIError(f"--embedding-model-name {args.embedding_model_name!r} holds no name")
    taken = {n for spec in specs for n in spec.names}
    for name in names:
        if name in taken or names.count(name) > 1:
            raise CLIError(f"model name {name!r} is used twice")
    try:
        retrieval = RetrievalSettings(
            data_dir=Path(args.data_dir).expanduser(), qdrant_url=args.qdrant_url or None,
            collection=args.rag_collection, chunk_capacity=args.rag_chunk_capacity,
            chunk_overlap=args.rag_chunk_overlap, limit=args.rag_limit,
            score_threshold=args.rag_score_threshold, rag_chat=args.rag_chat)
    except ValueError as e:
        raise CLIError(str(e)) from None
    explicit = args.embedding_model is not None or args.embedding_model_name is not None
    return EmbeddingSpec(names, model, explicit), retrieval


ENGINE_FLAGS = ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "dtype", "device",
                "kv_cache_bytes", "gpu_memory_utilization", "seed", "quantization", "load_format",
                "kernel_backend", "enforce_eager", "speculative_ngram", "tensor_parallel_size")


def engine_config(model: str, args: argparse.Namespace) -> EngineConfig:
    # Only flags the user gave are passed, so EngineConfig keeps the one copy of the defaults.
    given = {k: getattr(args, k) for k in ENGINE_FLAGS if getattr(args, k) is not None}
    try:
        return EngineConfig(model, **given)
    except ValueError as e:
        raise CLIError(str(e)) from None


def model_specs(args: argparse.Namespace) -> list[ModelSpec]:
    paths: list[str] = args.model or [DEFAULT_MODEL]
    if len(args.served_model_name) > len(paths):
        raise CLIError(f"{len(args.served_model_name)} --served-model-name given for "
                       f"{len(paths)} --model")
    specs, seen = [], set()
    for i, path in enumerate(paths):
        raw = args.served_model_name[i] if i < len(args.served_model_name) else path
        names = [n.strip() for n in raw.split(",") if n.strip()]
        if not names:
            raise CLIError(f"--served-model-name {raw!r} holds no name")
        for name in names:
            if name in seen:
                raise CLIError(f"model name {name!r} is used twice")
            seen.add(name)
        specs.append(ModelSpec(names, engine_config(path, args)))
    return specs


def check_model_paths(plan: ServePlan) -> None:
    """Every model the flags name exists: a missing one is a flag error, reported before
    anything loads or the data directory is touched."""
    named = [("--model", s.config.model) for s in plan.models if s.config.load_format != "dummy"]
    if plan.embedding is not None and plan.embedding.explicit:
        named.append(("--embedding-model", plan.embedding.model))  # the default may be absent
    for flag, model in named:
        try:
            resolve_model_path(model)
        except FileNotFoundError as e:
            raise CLIError(f"{flag} {model}: {e}") from None


def fallback_rules(rules: list[str], specs: list[ModelSpec]) -> dict[str, str]:
    """SHORT=LONG (any served name or alias) -> {short id: long id}."""
    ids = {name: spec.names[0] for spec in specs for name in spec.names}
    out: dict[str, str] = {}
    for rule in rules:
        short, sep, long = (part.strip() for part in rule.partition("="))
        if not sep or not short or not long:
            raise CLIError(f"--fallback {rule!r} must look like SHORT=LONG")
        for name in (short, long):
            if name not in ids:
                raise CLIError(f"--fallback {rule!r}: {name!r} is not a served model "
                               f"(served: {', '.join(ids)})")
        if ids[short] == ids[long]:
            raise CLIError(f"--fallback {rule!r}: both names are the same model")
        if ids[short] in out:
            raise CLIError(f"--fallback: {short!r} has two fallbacks")
        out[ids[short]] = ids[long]
    return out


def parse_args(argv: list[str] | None = None) -> ServePlan:
    args = build_parser().parse_args(argv)
    for flag in ("max_waiting_requests", "max_prompts_per_request", "max_body_bytes",
                 "header_timeout", "body_timeout", "max_connections", "max_tool_calls"):
        if getattr(args, flag) <= 0:
            raise CLIError(f"--{flag.replace('_', '-')} must be positive")
    if args.shutdown_grace < 0:
        raise CLIError("--shutdown-grace must not be negative")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port} is not a TCP port")
    specs = model_specs(args)
    settings = ServerSettings(api_key=args.api_key or None,
                              max_body_bytes=args.max_body_bytes,
                              max_waiting_requests=args.max_waiting_requests,
                              max_prompts_per_request=args.max_prompts_per_request,
                              log_prompts=args.log_prompts,
                              shutdown_grace_s=args.shutdown_grace,
                              data_dir=Path(args.data_dir).expanduser(),
                              header_timeout_s=args.header_timeout,
                              body_timeout_s=args.body_timeout,
                              max_connections=args.max_connections,
                              max_tool_calls=args.max_tool_calls)
    embedding, retrieval = embedding_plan(args, specs)
    return ServePlan(specs, fallback_rules(args.fallback, specs), settings, args.host,
                     args.port, args.log_level, embedding, retrieval)


@dataclass(frozen=True)
class EngineSummary:
    """What the start-up line reports about one loaded engine."""

    parameters: int
    dtype: str
    device: str
    kv_blocks: int
    kv_tokens: int
    max_model_len: int
    weights: str
    kernels: str


def engine_summary(engine: AsyncEngine) -> EngineSummary:
    return EngineSummary(**engine.summary())
