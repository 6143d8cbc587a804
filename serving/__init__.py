"""OpenAI-compatible HTTP server over the engine: `python -m serving`, or make_app(state)."""
