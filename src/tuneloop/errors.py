"""Typed errors that carry their fix.

Raised deep in the library, rendered once at the edge: the CLI prints `❌ message`, the
details and the hint, then exits with `exit_code`; the server maps `http_status` and `code` to an
OpenAI error body in one function (`serving/protocol.error_response`).
"""

from __future__ import annotations


class TuneloopError(Exception):
    """Base class: `message` says what is wrong, `hint` how to fix it."""

    exit_code = 1
    http_status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, hint: str | None = None, details: list[str] | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []
        self.param = param

    def render(self) -> str:
        lines = [f"❌ {self.message}"]
        lines += [f"   {d}" for d in self.details]
        if self.hint:
            lines += ["", self.hint]
        return "\n".join(lines)


class ValidationError(TuneloopError):
    """Bad user input (flags, arguments, hyperparameters). Nothing was created."""


class DatasetError(ValidationError):
    """The dataset cannot be read or does not match the technique's schema."""

    code = "invalid_file"
    missing: list[str] | None = None   # schema mismatch: the columns the technique needs and the data lacks


class CatalogError(ValidationError):
    """Model, technique or training type not offered by the catalog."""

    code = "model_not_supported"


class NotFoundError(TuneloopError):
    http_status = 404
    code = "not_found"


class JobFailedError(TuneloopError):
    """A job ended failed or cancelled: the CLI exits 2."""

    exit_code = 2
    http_status = 409
    code = "job_failed"


class ConfigError(TuneloopError):
    """The environment (database, home folder) is not usable as configured."""


# ---- serving: what a server (or a client of one) refuses ----------------------------------------
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


class PermissionDeniedError(TuneloopError):
    """A valid key asking for what its project may not do (another project's server admin calls)."""

    http_status = 403
    code = "permission_denied"


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
