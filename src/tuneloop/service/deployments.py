"""The deployment service: what a project serves (base, adapters, inference components, with the
tune job and registry version each came from), where its server runs, and the running server's
admin endpoints. The CLI's deploy commands, `tuneloop serve` and the demo call it; the server
(serving/) gets it as its `Deployment` interface (serving/served.py), so what the admin routes
change is recorded here and nowhere else.

    deps = open_services().deployments("default")
    deps.add_adapter("tuned", from_tune=True, ref="sft")     # checks, hot-loads if serving, persists
    deps.running_server()                                    # ServerInfo or None
    deps.serve(model=None, host="127.0.0.1", port=8000, api_key=None)   # tuneloop serve

A server started later loads what is recorded here. A running server loads request paths only
from under its model roots (serving/weights.py); the folders the CLI names go on the project's
allow-list first, since the operator chose them on this machine.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from tuneloop.catalog import load_catalog
from tuneloop.errors import AuthenticationError, ConflictError, NotFoundError, ServerError, ValidationError
from tuneloop.models.hub import cached_folder
from tuneloop.models.resolve import resolve, served_folder
from tuneloop.processes import pid_alive
from tuneloop.registry import resolve_from_tune
from tuneloop.serving.adapters import AdapterInfo, check_adapter, check_full_model, localize
from tuneloop.serving.engine import choose_engine
from tuneloop.serving.served import Source
from tuneloop.serving.weights import WeightPolicy, allow
from tuneloop.service.keys import KeyService
from tuneloop.settings import Settings
from tuneloop.store import Store
from tuneloop.store.db import utcnow

__all__ = ["Change", "DeploymentService", "ServerInfo", "Source"]


@dataclass
class ServerInfo:
    url: str
    pid: int | None
    engine: str
    api_key_required: bool


@dataclass
class Change:
    """What a command did, for the edge to render."""

    name: str
    kind: str                          # adapter | ic | base
    path: str
    loaded: bool                       # hot-loaded into a running server
    warnings: list[str] = field(default_factory=list)
    lineage: str | None = None


class DeploymentService:
    def __init__(self, store: Store, settings: Settings, project: str, api_key: str | None = None):
        self.store, self.settings, self.project = store, settings, project
        self.api_key = api_key
        self.cache_dir = settings.home / "deployments" / project / "cache"
        # folders this machine's CLI asked the server to load from outside its model roots (weights.py)
        self.allow_file = settings.home / "deployments" / project / "allowed-weights.json"

    # ---- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The deployment as users see it: base with lineage, adapters, inference components, server."""
        row = self.store.get_deployment(self.project) or {}
        base = row.get("base_model") or self.default_base()
        deployed = self.store.list_deployed(self.project)
        server = self.running_server()
        return {
            "project": self.project, "base_model": base, "base_path": row.get("base_path"),
            "base_job_id": row.get("base_job_id"), "base_group": row.get("base_group"),
            "base_version": row.get("base_version"),
            "adapters": [d for d in deployed if d["kind"] == "adapter"],
            "inference_components": [d for d in deployed if d["kind"] == "ic"],
            "server": None if server is None else {"url": server.url, "pid": server.pid, "engine": server.engine},
        }

    @staticmethod
    def default_base() -> str:
        return load_catalog().default_model().id

    def base_name(self) -> str:
        row = self.store.get_deployment(self.project)
        return row["base_model"] if row else self.default_base()

    def resolve_base(self, model: str) -> tuple[str, str]:
        """(name clients use, folder or Hub id to load) of a built-in, catalog model or folder."""
        ref = resolve(model, use="serve", models_dir=self.settings.models_dir)
        if ref.via == "folder":  # the server's checks: config.json, safetensors, a tokenizer, not an adapter
            path = str(check_full_model(ref.base, param="model").path)
            return path, path
        return ref.name, ref.load_path()

    def base_folder(self) -> Path | None:
        """The deployed base's folder on this machine, when it is there (for shape checks)."""
        row = self.store.get_deployment(self.project)
        name = row["base_model"] if row else self.default_base()
        path = (row or {}).get("base_path")
        if path and Path(path).is_dir():
            return Path(path)
        try:
            _, resolved = self.resolve_base(name)
        except ValidationError:
            return None
        return Path(resolved) if Path(resolved).is_dir() else cached_folder(resolved)

    def set_base(self, model: str, source: Source | None = None) -> tuple[str, str]:
        name, path = self.resolve_base(model)
        self.record_base(name, path, source)
        return name, path

    def record_base(self, name: str, path: str, source: Source | None = None) -> None:
        """Record the base clients call `name`, loaded from `path` (a running server's swap records here)."""
        self.store.upsert_deployment(self.project, base_model=name, base_path=path,
                                     base_job_id=source.job_id if source else None,
                                     base_group=source.group if source else None,
                                     base_version=source.version if source else None)

    # ---- sources ----------------------------------------------------------------------------
    def resolve_source(self, kind: str, *, from_tune: bool, ref: str | None, path: str | None) -> Source:
        """The folder for `--from-tune [REF]` or `--weights/--model-data PATH`, with lineage. A full
        model (`ic`) may be a GGUF file: converted once by the resolver into its cached folder."""
        flag = "--weights" if kind == "adapter" else "--model-data"
        if from_tune == bool(path):
            raise ValidationError(f"Pass exactly one of --from-tune [T|T-SLUG] and {flag} PATH.", param="source")
        if path:
            src = self.source(path)
            if kind == "ic":
                src.path = served_folder(src.path, self.settings.models_dir, param="model_data")
            return src
        out, output_type = resolve_from_tune(self.store, self.project, ref)
        label = f"--from-tune {ref}" if ref else "--from-tune"
        if kind == "adapter" and output_type != "adapter":
            raise ValidationError(
                f"The tune output for {ref or 'the latest job'} is a full model ({out}), not a LoRA adapter.",
                hint=f"Serve it as its own inference component:\n  tuneloop add-ic NAME {label}", param="from_tune")
        if kind == "ic" and output_type == "adapter":
            raise ValidationError(
                f"The tune output for {ref or 'the latest job'} is a LoRA adapter ({out}), not a full model.",
                hint=f"Deploy it on the base model:\n  tuneloop adapter add NAME {label}", param="from_tune")
        folder = localize(out, self.cache_dir)
        return Source(folder, label, *self._lineage(out))

    def source(self, path: str) -> Source:
        """A folder, .tar.gz or URL (unpacked or fetched into the cache), with its lineage."""
        folder = localize(path, self.cache_dir)
        folder = folder.resolve() if folder.exists() else folder
        return Source(folder, path, *self._lineage(folder))

    def _lineage(self, path: str | Path) -> tuple[str | None, str | None, int | None]:
        pkg = self.store.package_by_output_path(str(path))
        return (pkg["job_id"], pkg["group_name"], pkg["version"]) if pkg else (None, None, None)

    def check_adapter(self, path: str | Path) -> AdapterInfo:
        return check_adapter(path, base_name=self.base_name(), base_folder=self.base_folder())

    # ---- records ----------------------------------------------------------------------------
    def deployed(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The recorded adapters and inference components (of one `kind`: adapter | ic)."""
        return self.store.list_deployed(self.project, kind)

    def record(self, name: str, kind: str, src: Source, base_model: str | None = None) -> None:
        if self.store.get_deployment(self.project) is None:  # the base is resolved when a server starts
            self.store.upsert_deployment(self.project, base_model=self.default_base())
        self.store.upsert_deployed(self.project, name, dict(
            kind=kind, source=src.source, path=str(src.path), base_model=base_model, job_id=src.job_id,
            group_name=src.group, version=src.version))

    def forget(self, name: str, kind: str, *, missing_ok: bool = False) -> None:
        if not missing_ok and not any(d["name"] == name for d in self.store.list_deployed(self.project, kind)):
            what = "adapter" if kind == "adapter" else "inference component"
            raise NotFoundError(f"No {what} named {name!r} is deployed in project {self.project!r}.",
                                hint="List them with: tuneloop deployment", param="name")
        self.store.delete_deployed(self.project, name)

    def _check_name(self, name: str) -> None:
        if not name or "/" in name or name.startswith("__") or len(name) > 128:
            raise ValidationError(f"{name!r} is not a valid model name.",
                                  hint="Use letters, digits, '-', '_' and '.', without '/'.", param="name")
        if name == self.base_name():
            raise ValidationError(f"{name!r} is the base model's name.", param="name")
        if any(d["name"] == name for d in self.store.list_deployed(self.project)):
            raise ValidationError(f"{name!r} is already deployed in project {self.project!r}.", param="name",
                                  hint=f"Remove it first (tuneloop adapter remove {name} / tuneloop remove-ic "
                                       f"{name}) or pick another name.")

    # ---- commands (CLI and demo) ------------------------------------------------------------
    def add_adapter(self, name: str, *, from_tune: bool = False, ref: str | None = None,
                    weights: str | None = None) -> Change:
        self._check_name(name)
        src = self.resolve_source("adapter", from_tune=from_tune, ref=ref, path=weights)
        info = self.check_adapter(src.path)
        server = self.running_server()
        if server:
            allow(self.allow_file, src.path)  # the operator named it here: the server may load it
            self._post(server, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(src.path)})
        self.record(name, "adapter", src, base_model=info.base_model)
        return Change(name, "adapter", str(src.path), bool(server), info.warnings, _lineage_text(src))

    def remove_adapter(self, name: str) -> Change:
        self.forget(name, "adapter")
        server = self.running_server()
        if server:
            self._post(server, "/v1/unload_lora_adapter", {"lora_name": name}, missing_ok=True)
        return Change(name, "adapter", "", bool(server))

    def add_ic(self, name: str, *, from_tune: bool = False, ref: str | None = None,
               model_data: str | None = None) -> Change:
        self._check_name(name)
        src = self.resolve_source("ic", from_tune=from_tune, ref=ref, path=model_data)
        check_full_model(src.path)
        server = self.running_server()
        if server:
            allow(self.allow_file, src.path)
            self._post(server, "/v1/load_inference_component", {"name": name, "model_path": str(src.path)},
                       timeout=600)
        self.record(name, "ic", src)
        return Change(name, "ic", str(src.path), bool(server), [], _lineage_text(src))

    def remove_ic(self, name: str) -> Change:
        self.forget(name, "ic")
        server = self.running_server()
        if server:
            self._post(server, "/v1/unload_inference_component", {"name": name}, missing_ok=True)
        return Change(name, "ic", "", bool(server))

    def deploy(self, *, model: str | None = None, model_data: str | None = None, force_ic: bool = False) -> Change:
        """Set the base: `--model ID|DIR`, or `--model-data DIR --force-ic` (a full tune output)."""
        if bool(model) == bool(model_data):
            raise ValidationError("Pass one of --model MODEL and --model-data PATH.", param="model")
        current = self.store.get_deployment(self.project)
        src = None
        if model_data:
            if not force_ic and current is not None:
                raise ValidationError(
                    f"Project {self.project!r} already serves {current['base_model']} as its base.",
                    hint=f"Replace it with --force-ic, or serve the model beside it:\n"
                         f"  tuneloop add-ic NAME --model-data {model_data}", param="force_ic")
            src = self.resolve_source("ic", from_tune=False, ref=None, path=model_data)
            check_full_model(src.path)
            model = str(src.path)
        name, path = self.resolve_base(model)
        warnings = []
        server = self.running_server()
        if server:  # the server swaps first: a refusal leaves the recorded base as it was
            if not Path(path).is_dir():
                raise ValidationError("A running server swaps to a model folder only.", param="model",
                                      hint="Stop the server, run this again, then start it (it loads the new base).")
            allow(self.allow_file, path)
            out = self._post(server, "/v1/replace_base_model", {"name": name, "model_path": path}, timeout=600)
            warnings = [f"⚠️  Adapter {n} does not fit the new base; it stays recorded but is not served."
                        for n in (out or {}).get("dropped", [])]
        self.set_base(model, src)
        return Change(name, "base", path, bool(server), warnings, _lineage_text(src) if src else None)

    # ---- tuneloop serve ----------------------------------------------------------------------
    def serve(self, *, model: str | None, host: str, port: int, api_key: str | None, engine_kind: str = "auto",
              model_roots: tuple[str, ...] = (), allow_remote_weights: bool = False,
              say: Callable[[str], None] = print, **options: Any) -> int:
        """Serve the project's deployment until interrupted (serving/server.py's `run`, with this
        service as its `Deployment`); returns the exit code. `options`: max_batch,
        batch_window_ms, default_max_tokens, threads, limits."""
        from tuneloop.serving.server import port_free, run  # the server's imports (FastAPI) only here

        running = self.running_server()
        if running is not None:
            raise ConflictError(f"A server for project {self.project!r} already runs at {running.url} "
                                f"(pid {running.pid}).", hint="Stop it first, or serve another project (--project).")
        if not port_free(host, port):
            raise ValidationError(f"Port {port} on {host} is in use.", hint="Pick another with --port.", param="port")
        kind = choose_engine(engine_kind)
        row = self.store.get_deployment(self.project)
        if model and (row is None or model != row["base_model"]):
            name, path = self.set_base(model)  # a new base for the deployment (no lineage)
        else:  # the recorded base (lineage kept), or the default model
            name, path = self.resolve_base(row["base_model"] if row else self.default_base())
            self.store.upsert_deployment(self.project, base_model=name, base_path=path)
        weights = WeightPolicy.configured(self.settings, roots=model_roots, allow_remote=allow_remote_weights,
                                          allow_file=self.allow_file)
        options.setdefault("keys", KeyService(self.store, self.settings))  # `tuneloop keys` are accepted too
        return run(self, name, path, self.deployed(), host=host, port=port, api_key=api_key, weights=weights,
                   engine_kind=kind, say=say, **options)

    # ---- the running server -----------------------------------------------------------------
    def record_server(self, host: str, port: int, pid: int, engine: str, api_key_required: bool) -> None:
        self.store.upsert_deployment(self.project, host=host, port=port, pid=pid, server_host=socket.gethostname(),
                                     engine=engine, api_key_required=api_key_required, started_at=utcnow())

    def clear_server(self, pid: int) -> None:
        self.store.clear_server(self.project, pid)

    def running_server(self) -> ServerInfo | None:
        """The project's server, when its process is alive and answers /health."""
        row = self.store.get_deployment(self.project)
        if not row or not row.get("port"):
            return None
        if row["server_host"] == socket.gethostname() and row["pid"] and not pid_alive(row["pid"]):
            self.store.clear_server(self.project, row["pid"])
            return None
        host = "127.0.0.1" if row["host"] in ("0.0.0.0", "::", "") else row["host"]
        url = f"http://{host}:{row['port']}"
        try:
            r = httpx.get(url + "/health", timeout=5)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        if row["engine"] != "vllm":
            try:
                body = r.json()
            except ValueError:
                return None
            if body.get("pid") != row["pid"] or body.get("project") != self.project:
                return None
        return ServerInfo(url, row["pid"], row["engine"] or "transformers", bool(row["api_key_required"]))

    def require_server(self) -> ServerInfo:
        server = self.running_server()
        if server is None:
            raise NotFoundError(f"No server is running for project {self.project!r}.",
                                hint=f"Start one (it keeps running in the foreground):\n  tuneloop serve --project "
                                     f"{self.project}")
        return server

    def headers(self, server: ServerInfo) -> dict[str, str]:
        if server.api_key_required and not self.api_key:
            raise AuthenticationError(f"The server at {server.url} requires an API key.",
                                      hint="Pass --api-key KEY or set TUNELOOP_API_KEY (the server's --api-key, or "
                                           "a key of this project from `tuneloop keys create`).")
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _post(self, server: ServerInfo, path: str, body: dict[str, Any], *, timeout: float = 120,
              missing_ok: bool = False) -> Any:
        try:
            r = httpx.post(server.url + path, json=body, headers=self.headers(server), timeout=timeout)
        except httpx.HTTPError as e:
            raise ServerError(f"The server at {server.url} did not answer {path}: {e}") from None
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code >= 400:
            raise _server_error(r)
        try:
            return r.json()
        except ValueError:
            return r.text

    # ---- tuneloop test ----------------------------------------------------------------------
    def ask(self, server: ServerInfo, model: str, prompts: list[str], max_tokens: int = 64) -> list[str]:
        """Greedy answers of `model` to user prompts through /v1/chat/completions."""
        answers = []
        with httpx.Client(base_url=server.url, headers=self.headers(server), timeout=300) as client:
            for prompt in prompts:
                r = client.post("/v1/chat/completions", json={
                    "model": model, "messages": [{"role": "user", "content": prompt}],
                    "temperature": 0, "max_tokens": max_tokens})
                if r.status_code >= 400:
                    raise _server_error(r)
                answers.append(r.json()["choices"][0]["message"]["content"])
        return answers

    def served_models(self, server: ServerInfo) -> list[dict[str, Any]]:
        r = httpx.get(server.url + "/v1/models", headers=self.headers(server), timeout=30)
        if r.status_code >= 400:
            raise _server_error(r)
        return r.json()["data"]


def _server_error(r) -> Exception:
    """The server's OpenAI error body as the matching typed error."""
    try:
        err = r.json()["error"]
        message, param = err.get("message", r.text), err.get("param")
    except (ValueError, KeyError, TypeError):
        message, param = r.text, None
    cls = {401: AuthenticationError, 404: NotFoundError, 409: ConflictError}.get(r.status_code)
    if cls is None:
        cls = ValidationError if r.status_code < 500 else ServerError
    return cls(f"Server: {message}", param=param)


def _lineage_text(src: Source | None) -> str | None:
    if src is None or not src.job_id:
        return None
    return f"job {src.job_id}" + (f", registered as {src.group} v{src.version}" if src.group else "")
