"""Serving's typed errors; like every TuneloopError they carry a hint and an HTTP status, and
`protocol.error_response` maps them to OpenAI error bodies in one place."""

from __future__ import annotations

from tuneloop.errors import NotFoundError, TuneloopError, ValidationError


class AdapterError(ValidationError):
    """An adapter or model folder that cannot be deployed (missing files, pickle weights, shapes)."""

    code = "invalid_adapter"


class ModelNotFoundError(NotFoundError):
    """The `model` of a request names nothing this server serves."""

    code = "model_not_found"

    def __init__(self, model: str, available: list[str]):
        super().__init__(f"The model `{model}` does not exist.", param="model",
                         hint="Served models: " + (", ".join(available) or "none") + ".")


class AuthenticationError(TuneloopError):
    http_status = 401
    code = "invalid_api_key"


class ConflictError(TuneloopError):
    """A name already in use (an adapter loaded twice, a second server for one project)."""

    http_status = 409
    code = "conflict"


class ServerError(TuneloopError):
    """The engine failed while answering, or a server could not be reached."""

    exit_code = 1
    http_status = 500
    code = "server_error"


class RequestTooLargeError(ValidationError):
    """A request body over the server's --max-request-bytes (answered before it is read)."""

    http_status = 413
    code = "request_too_large"


class WeightsLocationError(ValidationError):
    """lora_path / model_path names a folder outside the server's model roots, or a URL the
    server does not fetch."""

    code = "weights_location_not_allowed"
