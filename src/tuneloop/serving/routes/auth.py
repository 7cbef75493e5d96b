"""The API key check of the /v1 routers: `Authorization: Bearer KEY` when the server has a key
(`tuneloop serve --api-key`, in `app.state.api_key`), compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from tuneloop.errors import AuthenticationError


def require_api_key(request: Request) -> None:
    api_key = request.app.state.api_key
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise AuthenticationError("Incorrect API key provided.",
                                  hint="Send it as `Authorization: Bearer KEY` (the openai client's api_key).")
