"""Prometheus metrics, one CollectorRegistry per app (so tests and several apps never share).

The completion handlers leave what they measured on the aiohttp request:
`request[MODEL]` (the served name), `request[USAGE]` = {"prompt_tokens",
"completion_tokens"}, `request[TTFT_S]` and `request[TOKEN_TIMES]` (time.monotonic()
of each output token). The access-log middleware hands the request here once it is done.
Engine load (running, waiting, KV cache usage) is read at scrape time, not pushed.
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from serving.request_keys import MODEL, TOKEN_TIMES, TTFT_S, USAGE
from serving.state import ServerState

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("engine_http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("engine_http_request_duration_seconds",
                                 "Time from request to the last byte, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("engine_prompt_tokens", "Prompt tokens processed",
                                     ["model"], registry=r)
        self.generation_tokens = Counter("engine_generation_tokens", "Tokens generated",
                                         ["model"], registry=r)
        self.running = Gauge("engine_num_requests_running", "Sequences being computed",
                             ["model"], registry=r)
        self.waiting = Gauge("engine_num_requests_waiting", "Sequences queued",
                             ["model"], registry=r)
        self.kv_usage = Gauge("engine_kv_cache_usage_ratio", "Fraction of KV blocks in use",
                              ["model"], registry=r)
        # Totals since start, read from the engine at scrape time (speculative decoding).
        self.spec_drafts = Gauge("engine_spec_decode_draft_tokens",
                                 "N-gram draft tokens proposed and verified since start",
                                 ["model"], registry=r)
        self.spec_accepted = Gauge("engine_spec_decode_accepted_tokens",
                                   "Draft tokens the model accepted since start",
                                   ["model"], registry=r)
        self.ttft = Histogram("engine_time_to_first_token_seconds", "Time to first token",
                              ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("engine_time_per_output_token_seconds",
                              "Time between consecutive output tokens",
                              ["model"], buckets=TPOT_BUCKETS, registry=r)

    def observe(self, request: web.Request, endpoint: str, status: int, seconds: float) -> None:
        """Record one finished request (called by the access-log middleware)."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        model = str(request.get(MODEL) or "")
        usage: dict[str, Any] = request.get(USAGE) or {}
        if usage:
            self.prompt_tokens.labels(model).inc(int(usage.get("prompt_tokens") or 0))
            self.generation_tokens.labels(model).inc(int(usage.get("completion_tokens") or 0))
        ttft = request.get(TTFT_S)
        if ttft is not None:
            self.ttft.labels(model).observe(float(ttft))
        times = sorted(request.get(TOKEN_TIMES) or ())
        for earlier, later in itertools.pairwise(times):
            self.tpot.labels(model).observe(later - earlier)

    def refresh(self, state: ServerState) -> None:
        for served in state.models:
            stats = served.engine.stats()
            self.running.labels(served.name).set(stats.num_running)
            self.waiting.labels(served.name).set(stats.num_waiting)
            self.kv_usage.labels(served.name).set(stats.kv_cache_usage)
            self.spec_drafts.labels(served.name).set(stats.spec_draft_tokens)
            self.spec_accepted.labels(served.name).set(stats.spec_accepted_tokens)

    def render(self, state: ServerState) -> web.Response:
        self.refresh(state)
        response = web.Response(body=generate_latest(self.registry))
        # CONTENT_TYPE_LATEST carries a charset, which web.Response(content_type=...) refuses.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
