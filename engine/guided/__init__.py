"""Guided decoding: token masks from a grammar (JSON, a JSON schema, tool-call tags), so the
output is valid by construction. Backed by xgrammar.

Only the spec is imported here, so that SamplingParams (and the torch-free request and
scheduler modules that import it) do not pull in xgrammar and torch; the engine imports
engine.guided.compiler and engine.guided.matcher itself.
"""

from engine.guided.options import GuidedDecoding

__all__ = ["GuidedDecoding"]
