"""The Responses API (POST /v1/responses, GET and DELETE /v1/responses/{id}) for the chat
models, built on the chat endpoint's machinery (chat template, tool formats and grammars,
guided decoding, the engine's streams):

- request: the body, validated; tools, tool_choice and text.format for serving.tools / the
  grammar; the engine request;
- items: input items normalised, and the conversation as chat messages;
- output: generated text -> output items and their stream events;
- objects: the response object;
- store: stored responses, JSON files under the data directory;
- handlers: the routes.

(serving/responses.py is unrelated: the chat and completions response bodies.)
"""
