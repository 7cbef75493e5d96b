"""The server's routes, one module-level router per API surface (after vLLM's entrypoints); each
route parses, calls the serving object on `app.state` (server.create_app puts them there), renders.

    health.py    GET /health (no API key)
    openai.py    GET /v1/models[/{id}], POST /v1/chat/completions and /v1/completions
    admin.py     vLLM's adapter API and tuneloop's own: what the server serves
    auth.py      the `Authorization: Bearer KEY` check of the /v1 routers
"""
