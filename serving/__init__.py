"""Serving: the app in front of remote OpenAI-Images servers, and the app's engine served as that API (and MCP).

``mapping`` says what each kind of server takes and how a request maps onto it; ``remote`` talks to one server;
``pool`` is a ``qwen_image.backend.Backend`` over several of them (routing, health checks, failover); ``service``
runs API requests through the conversation side's one job queue; ``openai_api`` is our own ``/v1/images/*`` server;
``mcp`` exposes generate and edit as MCP tools. Nothing here imports torch.
"""
