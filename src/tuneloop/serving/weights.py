"""Where a server loads weights from when a request names them (`lora_path`, `model_path`):
local folders under its model roots, and URLs only when the operator allows them.

    policy = WeightPolicy.configured(settings, roots=["/data/models"], allow_file=deps.allow_file)
    where = policy.check(path, "lora_path")   # the real path (or the URL), else WeightsLocationError

Roots: TUNELOOP_HOME and the built-in models folder (where tune jobs and models land), plus
`tuneloop serve --model-root DIR` and TUNELOOP_MODEL_ROOTS (os.pathsep-separated). A path is
resolved first (realpath), so neither `..` nor a symlink under a root leads out of it. The
operator's own CLI (`adapter add --weights`, `add-ic --model-data`, `deploy`) may name any folder:
it adds that folder to the project's allow-list file (`allow`) before asking the server to load it.
URLs (http(s)://, s3://, hf://, ...) are refused unless `--allow-remote-weights` /
TUNELOOP_ALLOW_REMOTE_WEIGHTS=1; http(s) URLs must then also pass `netguard.check_url`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import WeightsLocationError
from tuneloop.settings import Settings

ROOTS_ENV = "TUNELOOP_MODEL_ROOTS"
REMOTE_ENV = "TUNELOOP_ALLOW_REMOTE_WEIGHTS"
REMOTE_SCHEMES = ("http", "https", "s3", "s3a", "gs", "gcs", "hf", "az", "abfs", "abfss")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class WeightPolicy:
    roots: tuple[Path, ...]
    allow_remote: bool = False
    allow_file: Path | None = None      # folders the operator's CLI named: a JSON list of real paths

    @classmethod
    def configured(cls, settings: Settings, *, roots: tuple[str, ...] | list[str] = (), allow_remote: bool = False,
                   allow_file: Path | None = None) -> WeightPolicy:
        """The defaults, the roots given (flags) and those of the environment."""
        from_env = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r.strip()]
        remote = allow_remote or os.environ.get(REMOTE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        found = [settings.home, settings.models_dir, *roots, *from_env]
        return cls(tuple(dict.fromkeys(_real(r) for r in found)), remote, allow_file)

    def check(self, source: str, param: str) -> str:
        """`source` as the server may load it: a real local path under a root, or an allowed URL."""
        if "\x00" in source:
            raise WeightsLocationError(f"`{param}` contains a NUL character.", param=param)
        match = _SCHEME.match(source)
        if match or "::" in source:  # fsspec URLs, chained ones too (zip://...::file://...)
            return self._check_url(source, (match.group(1) if match else "chained").lower(), param)
        real = _real(source)
        if any(real == r or real.is_relative_to(r) for r in (*self.roots, *self._allowed())):
            return str(real)
        raise WeightsLocationError(
            f"`{param}` {source!r} is outside the folders this server loads weights from "
            f"({', '.join(map(str, self.roots))}).", param=param,
            hint="Move the weights under one of them, or start the server with --model-root DIR (repeatable; or "
                 f"{ROOTS_ENV}). On the server's machine, `tuneloop adapter add NAME --weights PATH` loads a "
                 "folder from anywhere.")

    def _check_url(self, source: str, scheme: str, param: str) -> str:
        if not self.allow_remote:
            raise WeightsLocationError(
                f"`{param}` is a URL ({scheme}); this server loads weights from local folders only.", param=param,
                hint=f"Start it with --allow-remote-weights (or {REMOTE_ENV}=1) to fetch URLs, or copy the weights "
                     "under a model root (--model-root DIR).")
        if scheme not in REMOTE_SCHEMES or "::" in source:
            raise WeightsLocationError(f"`{param}`: {scheme} URLs are not fetched.", param=param,
                                       hint=f"Use one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}.")
        if scheme in ("http", "https"):
            from tuneloop import netguard

            netguard.check_url(source, what=param)
        return source

    def _allowed(self) -> list[Path]:
        return [Path(p) for p in read_allowed(self.allow_file)] if self.allow_file else []


def read_allowed(file: Path) -> list[str]:
    try:
        paths = json.loads(file.read_text())
    except (OSError, ValueError):
        return []
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def allow(file: Path, path: str | Path) -> None:
    """Add a folder the operator named on this machine's CLI (its real path) to the allow-list."""
    real = str(_real(path))
    paths = read_allowed(file)
    if real in paths:
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(paths + [real], indent=1))
    tmp.replace(file)


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))
