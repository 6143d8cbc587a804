"""The server's version, and the fingerprint of what answers a request."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json


def server_version() -> str:
    try:
        return importlib.metadata.version("engine")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
        return "0.0.0+unknown"


def system_fingerprint(model: str, dtype: str, weights: str) -> str:
    """OpenAI's `system_fingerprint`: stable while the engine version, the model source, the
    dtype and the weights' form (e.g. int8) stay the same, so a client can tell when the
    backend that produced its answers changed."""
    ident = json.dumps([server_version(), model, dtype, weights])
    return "fp_" + hashlib.sha256(ident.encode()).hexdigest()[:10]
