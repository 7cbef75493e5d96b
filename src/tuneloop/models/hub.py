"""The local Hugging Face cache: a Hub model's folder when it is already on this machine.

    cached_folder("Qwen/Qwen3-0.6B")   # Path to the cached snapshot, or None (nothing is downloaded)
"""

from __future__ import annotations

from pathlib import Path


def cached_folder(repo_id: str) -> Path | None:
    """The snapshot folder of `repo_id` in the local cache, or None when it is not there."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, not a repo id, or the hub library refuses offline: no folder
        return None
