"""What a running server serves, and the one way to change it: adapters and models are loaded
into its engine only through `ServedModels`, which checks the weights first and records each
change in the deployment state (deployments.py), so a restarted server serves the same set.

    served = ServedModels(engine, deployments, weights)
    warnings = served.load_adapter("tuned", "/home/me/.tuneloop/jobs/J/adapter")
    served.restore(deps.store.list_deployed(project), say=print)    # at start: what is recorded

A path a request names must pass the weight policy (weights.py: under a model root, URLs only
when allowed) before anything is read. These methods block (reading folders, fetching URLs,
loading weights): the admin routes run them in a worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tuneloop.errors import TuneloopError
from tuneloop.serving.adapters import check_adapter, check_full_model
from tuneloop.serving.deployments import DeploymentService, Source
from tuneloop.serving.engine import BaseModel, Engine
from tuneloop.serving.weights import WeightPolicy


class ServedModels:
    def __init__(self, engine: Engine, deployments: DeploymentService | None = None,
                 weights: WeightPolicy | None = None) -> None:
        if weights is None:
            from tuneloop.settings import load_settings

            weights = WeightPolicy.configured(deployments.settings if deployments else load_settings(),
                                              allow_file=deployments.allow_file if deployments else None)
        self.engine, self.deployments, self.weights = engine, deployments, weights

    def _base_folder(self) -> Path | None:
        base = Path(self.engine.base.path)
        return base if base.is_dir() else None

    def _source(self, path: str, param: str) -> Source:
        """The folder a request's `lora_path` / `model_path` names, once the weight policy allows it."""
        path = self.weights.check(path, param)
        if self.deployments is None:
            folder = Path(path)
            return Source(folder.resolve() if folder.exists() else folder, path)
        return self.deployments.source(path)

    def load_adapter(self, name: str, path: str) -> list[str]:
        """Check, load and record an adapter; returns the check's warnings."""
        src = self._source(path, "lora_path")
        check = check_adapter(src.path, base_name=self.engine.base.name, base_folder=self._base_folder())
        self.engine.load_adapter(name, str(src.path))
        if self.deployments:
            self.deployments.record(name, "adapter", src, base_model=check.base_model)
        return check.warnings

    def unload_adapter(self, name: str) -> None:
        self.engine.unload_adapter(name)
        self._forget(name, "adapter")

    def add_model(self, name: str, path: str) -> str:
        """Check, load and record a full model as an inference component; returns its folder."""
        src = self._source(path, "model_path")
        check_full_model(src.path)
        self.engine.add_model(name, str(src.path))
        if self.deployments:
            self.deployments.record(name, "ic", src)
        return str(src.path)

    def remove_model(self, name: str) -> None:
        self.engine.remove_model(name)
        self._forget(name, "ic")

    def replace_base(self, name: str, path: str) -> tuple[str, list[str]]:
        """Swap the base; returns its folder and the adapters that no longer fit (unloaded)."""
        src = self._source(path, "model_path")
        check_full_model(src.path)
        dropped = self.engine.replace_base(BaseModel(name, str(src.path)))
        if self.deployments:
            self.deployments.record_base(name, str(src.path), src)
        return str(src.path), dropped

    def _forget(self, name: str, kind: str) -> None:
        # the CLI forgets a record before it asks the server to unload: a missing record is fine
        if self.deployments:
            self.deployments.forget(name, kind, missing_ok=True)

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
