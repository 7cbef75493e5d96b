"""What a running server serves, and the one way to change it: adapters and models are loaded
into its engine only through `ServedModels`, which checks the weights first and records each
change through its `Deployment` (the deployment service, service/deployments.py, passed in by
`tuneloop serve`), so a restarted server serves the same set. Serving never opens the store.

    served = ServedModels(engine, deployment, weights)
    warnings = served.load_adapter("tuned", "/home/me/.tuneloop/jobs/J/adapter")
    served.restore(deployment.deployed(), say=print)                 # at start: what is recorded

A path a request names must pass the weight policy (weights.py: under a model root, URLs only
when allowed) before anything is read; a `model_path` may be a GGUF file, converted once by the
resolver into its cached folder. These methods block (reading folders, fetching URLs,
loading weights): the admin routes run them in a worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from tuneloop.errors import TuneloopError
from tuneloop.models.resolve import served_folder
from tuneloop.serving.adapters import check_adapter, check_full_model
from tuneloop.serving.engine import BaseModel, Engine
from tuneloop.serving.weights import WeightPolicy
from tuneloop.settings import load_settings


@dataclass
class Source:
    """A folder to deploy and where it came from."""

    path: Path
    source: str                        # what the user gave, for the record
    job_id: str | None = None
    group: str | None = None
    version: int | None = None


class Deployment(Protocol):
    """What the server records, and where: the deployment service (service/deployments.py)."""

    project: str

    def source(self, path: str) -> Source:
        """The folder `path` names (unpacked or fetched into the cache), with its lineage."""

    def record(self, name: str, kind: str, src: Source, base_model: str | None = None) -> None:
        """Record an adapter (kind "adapter") or inference component ("ic") as served."""

    def record_base(self, name: str, path: str, source: Source | None = None) -> None:
        """Record the base clients call `name`, loaded from `path`."""

    def forget(self, name: str, kind: str, *, missing_ok: bool = False) -> None:
        """Drop a record."""

    def record_server(self, host: str, port: int, pid: int, engine: str, api_key_required: bool) -> None:
        """Record that this server runs (pid, where, which engine)."""

    def clear_server(self, pid: int) -> None:
        """Record that the server `pid` stopped."""


class OnDemand(Protocol):
    """Models the server loads when a request first names them, owned by a project: the fine-tuning
    API's `ft:` models and checkpoints (service/finetuning.py implements it)."""

    prefix: str

    def find(self, name: str, project: str) -> tuple[str, str] | None:
        """(folder, "adapter" | "model") of `name` when it exists and is `project`'s; else None."""

    def names(self, project: str) -> list[str]:
        """The names `project` may ask for (listed by /v1/models)."""


class ServedModels:
    def __init__(self, engine: Engine, deployment: Deployment | None = None,
                 weights: WeightPolicy | None = None) -> None:
        self.engine, self.deployment = engine, deployment
        self.weights = weights if weights is not None else WeightPolicy.configured(load_settings())
        self._on_demand_lock = threading.Lock()

    def load_on_demand(self, name: str, path: str, kind: str) -> None:
        """Load an on-demand model (the tuneloop-made folder the OnDemand found; not recorded: it is
        found again after a restart); a second request racing for it finds it loaded."""
        with self._on_demand_lock:
            if any(m["id"] == name for m in self.engine.models()):
                return
            if kind == "adapter":
                check_adapter(path, base_name=self.engine.base.name, base_folder=self._base_folder())
                self.engine.load_adapter(name, path)
            else:
                check_full_model(path)
                self.engine.add_model(name, path)

    def _base_folder(self) -> Path | None:
        base = Path(self.engine.base.path)
        return base if base.is_dir() else None

    def _source(self, path: str, param: str) -> Source:
        """The folder a request's `lora_path` / `model_path` names, once the weight policy allows it."""
        path = self.weights.check(path, param)
        if self.deployment is None:
            folder = Path(path)
            return Source(folder.resolve() if folder.exists() else folder, path)
        return self.deployment.source(path)

    def load_adapter(self, name: str, path: str) -> list[str]:
        """Check, load and record an adapter; returns the check's warnings."""
        src = self._source(path, "lora_path")
        check = check_adapter(src.path, base_name=self.engine.base.name, base_folder=self._base_folder())
        self.engine.load_adapter(name, str(src.path))
        if self.deployment:
            self.deployment.record(name, "adapter", src, base_model=check.base_model)
        return check.warnings

    def unload_adapter(self, name: str) -> None:
        self.engine.unload_adapter(name)
        self._forget(name, "adapter")

    def _model_source(self, path: str) -> Source:
        """A request's `model_path`: allowed by the weight policy first, then, a GGUF file, converted once
        into the resolver's cached folder (models.resolve.served_folder), which is what is loaded and recorded."""
        src = self._source(path, "model_path")
        src.path = served_folder(src.path)
        return src

    def add_model(self, name: str, path: str) -> str:
        """Check, load and record a full model (a folder or a GGUF file) as an inference component;
        returns its folder."""
        src = self._model_source(path)
        check_full_model(src.path)
        self.engine.add_model(name, str(src.path))
        if self.deployment:
            self.deployment.record(name, "ic", src)
        return str(src.path)

    def remove_model(self, name: str) -> None:
        self.engine.remove_model(name)
        self._forget(name, "ic")

    def replace_base(self, name: str, path: str) -> tuple[str, list[str]]:
        """Swap the base (a folder or a GGUF file); returns its folder and the adapters that no longer
        fit (unloaded)."""
        src = self._model_source(path)
        check_full_model(src.path)
        dropped = self.engine.replace_base(BaseModel(name, str(src.path)))
        if self.deployment:
            self.deployment.record_base(name, str(src.path), src)
        return str(src.path), dropped

    def _forget(self, name: str, kind: str) -> None:
        # the CLI forgets a record before it asks the server to unload: a missing record is fine
        if self.deployment:
            self.deployment.forget(name, kind, missing_ok=True)

    def restore(self, deployed: list[dict[str, Any]], say: Callable[[str], None]) -> None:
        """Load what the deployment state lists (already allowed when it was recorded); what no
        longer loads is reported and skipped."""
        for d in deployed:
            try:
                if d["kind"] == "adapter":
                    info = check_adapter(d["path"], base_name=self.engine.base.name, base_folder=self._base_folder())
                    self.engine.load_adapter(d["name"], d["path"])
                    for w in info.warnings:
                        say(w)
                else:
                    check_full_model(d["path"])
                    self.engine.add_model(d["name"], d["path"])
                say(f"  {'adapter' if d['kind'] == 'adapter' else 'inference component'} {d['name']} <- {d['path']}")
            except TuneloopError as e:
                say(f"⚠️  Not serving {d['name']}: {e.message}")
            except Exception as e:  # noqa: BLE001 - one broken record must not stop the server
                say(f"⚠️  Not serving {d['name']}: {type(e).__name__}: {e}")
