"""What a caller who is not this machine's user may name: an API key holder (the fine-tuning
API) or a UI viewer signed in with a project key. They name ids (catalog, built-in or Hub models,
registered datasets, hf:// repositories), never a file or folder on the server, except under the
roots the server's user set aside: TUNELOOP_MODELS_DIR for models, the UI's uploads for datasets.

    refuse_server_path(model, param="model", roots=(settings.models_dir,))
    refuse_server_path(dataset, param="dataset", roots=(uploads,), urls=("hf://",))

A value is a path when it looks like one (`/`, `.`, `~`, `\\`, `file://`, a `.gguf` file) whether
or not it exists (so a refusal tells nothing about the server's files), or when it names a file or
folder that exists relative to the server's working directory (the resolvers would read it).
"""

from __future__ import annotations

import re
from pathlib import Path

from tuneloop.errors import ValidationError

MODEL_HINT = ("Pass a catalog, built-in or Hub id (the models this server lists), or put the model under the "
              "server's TUNELOOP_MODELS_DIR.")
DATASET_HINT = "Upload the file on the Datasets page and pick it by name, or pass an hf:// dataset."
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def server_path(ref: str) -> Path | None:
    """The file or folder on this machine `ref` names, as the resolvers would take it; None for an id."""
    text = ref[len("file://"):] if ref.startswith("file://") else ref
    text = text.split("?file=", 1)[0]                       # a dataset's file filter
    if ref.startswith("file://") or text.startswith(("/", ".", "~", "\\")) or text.endswith(".gguf"):
        return Path(text).expanduser().resolve()
    try:
        return Path(text).resolve() if text and Path(text).exists() else None
    except (OSError, ValueError):                           # not a name the filesystem takes
        return None


def refuse_server_path(ref: str, *, param: str, roots: tuple[Path, ...], urls: tuple[str, ...] | None = None,
                       hint: str | None = None) -> None:
    """Raise ValidationError (400, naming `param`) when `ref` is a path on the server outside
    `roots`, or, with `urls`, a URL of another scheme than those (s3://, http://, memory://: the
    server's own credentials and network)."""
    if "\x00" in ref:
        raise ValidationError(f"{param} contains a NUL byte.", param=param)
    if urls is not None and _SCHEME.match(ref) and not ref.startswith("file://") \
            and not ref.lower().startswith(urls):
        raise ValidationError(f"{param} {ref!r} is a URL this server would fetch with its own credentials; "
                              f"here it takes {', '.join(urls)} URLs only.", param=param, hint=hint)
    path = server_path(ref)
    if path is not None and not any(path.is_relative_to(Path(r).expanduser().resolve()) for r in roots):
        raise ValidationError(f"{param} {ref!r} is a path on the server; only ids are taken here.",
                              param=param, hint=hint)
