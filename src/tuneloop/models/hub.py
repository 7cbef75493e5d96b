"""The local Hugging Face cache: a Hub model's folder when it is already on this machine, and the
error that says how to get it there when it is not and the Hub is off.

    cached_folder("Qwen/Qwen3-0.6B")   # Path to the cached snapshot, or None (nothing is downloaded)
    hub_path("Qwen/Qwen3-0.6B")        # the snapshot, else the id (Hub on) or a ValidationError (Hub off)

The cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub, read when asked (the
layout `hf download` writes: models--ORG--NAME/snapshots/REV/ and refs/main).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tuneloop.errors import ValidationError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")   # ORG/NAME, as the Hub spells repo ids


def looks_like_repo_id(ref: str) -> bool:
    return bool(REPO_ID.match(ref)) and ".." not in ref and not ref.endswith((".gguf", ".json", ".jsonl"))


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_folder(repo_id: str) -> Path | None:
    """The snapshot folder of `repo_id` in the local cache, or None when it is not there."""
    if not looks_like_repo_id(repo_id):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=str(cache_dir())))
    except Exception:  # not cached, not a repo id, or the hub library refuses offline: no folder
        return None


def download_hint(repo_id: str, lead: str = "Download") -> str:
    off = " (the Hub is off here: HF_HUB_OFFLINE=1)" if hub_offline() else ""
    return (f"{lead} it first{off}: hf download {repo_id}   (or: huggingface-cli download {repo_id}); "
            f"it lands in {cache_dir()} (set HF_HUB_CACHE to use another cache).")


def not_cached(repo_id: str, what: str | None = None) -> ValidationError:
    return ValidationError(f"{what or f'Model {repo_id!r}'} is not in the local Hugging Face cache ({cache_dir()}).",
                           hint=download_hint(repo_id), param="model")


def hub_path(repo_id: str) -> str:
    """What from_pretrained should take for a Hub id: the cached snapshot, else the id itself
    when the Hub is on (transformers downloads it), else the error naming `hf download`."""
    folder = cached_folder(repo_id)
    if folder is not None:
        return str(folder)
    if hub_offline():
        raise not_cached(repo_id)
    return repo_id
