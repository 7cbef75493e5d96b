"""Where tuneloop keeps its state, resolved from the environment.

`TUNELOOP_HOME` (default `~/.tuneloop`) holds `tuneloop.db`, job folders and the built-in
models; `TUNELOOP_DATABASE_URL` points the store at PostgreSQL (or another SQLite file);
`TUNELOOP_PROJECT` (default `default`) names the project jobs and state belong to;
`TUNELOOP_MODELS_DIR` (default `TUNELOOP_HOME/models`) caches the built-in models.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import ValidationError

_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    models_dir: Path

    def jobs_dir(self, project: str) -> Path:
        return self.home / "projects" / project / "jobs"


def load_settings() -> Settings:
    home = Path(os.environ.get("TUNELOOP_HOME") or Path.home() / ".tuneloop").expanduser().resolve()
    url = os.environ.get("TUNELOOP_DATABASE_URL") or f"sqlite:///{home / 'tuneloop.db'}"
    models = Path(os.environ.get("TUNELOOP_MODELS_DIR") or home / "models").expanduser().resolve()
    return Settings(home=home, database_url=url, models_dir=models)


def resolve_project(project: str | None) -> str:
    name = project or os.environ.get("TUNELOOP_PROJECT") or "default"
    if not _PROJECT_RE.match(name):
        raise ValidationError(
            f"Project name {name!r} is not valid.",
            hint="Use 1-40 characters: lower-case letters, digits and '-', starting with a letter or digit.",
            param="project",
        )
    return name
