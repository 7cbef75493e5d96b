"""The vLLM engine: `vllm serve BASE --enable-lora` as a child process that serves the OpenAI
routes itself; adapters go in and out through its runtime API (`/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`, enabled by VLLM_ALLOW_RUNTIME_LORA_UPDATING), which is the API
tuneloop's own server offers too, so `tuneloop adapter add` works the same against both.

    engine = VLLMEngine(base, host="127.0.0.1", port=8000, adapters={"tuned": "/path"})
    engine.start(); engine.wait_ready()
    engine.load_adapter("other", "/path/other")

Used by `tuneloop serve --engine vllm` (and `auto` when vLLM and a CUDA GPU are present). vLLM
serves one base per process: inference components need the embedded engine or another server.
Not exercised on CPU-only machines; tests cover the command it builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Callable

from tuneloop.errors import ServerError, ValidationError
from tuneloop.serving.engine import BaseModel, Engine

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)   # the values vLLM's --max-lora-rank accepts


def rank_bucket(rank: int) -> int:
    for r in LORA_RANKS:
        if rank <= r:
            return r
    raise ValidationError(f"LoRA rank {rank} is above what vLLM serves ({LORA_RANKS[-1]}).", param="lora_rank")


def vllm_command(base: BaseModel, *, host: str, port: int, adapters: dict[str, str] | None = None,
                 max_lora_rank: int = 64, max_loras: int = 8, extra: list[str] | None = None) -> list[str]:
    """The `vllm serve` command line for a base and its adapters (API key goes in the environment)."""
    adapters = adapters or {}
    cmd = ["vllm", "serve", base.path, "--served-model-name", base.name, "--host", host, "--port", str(port),
           "--enable-lora", "--max-lora-rank", str(rank_bucket(max_lora_rank)),
           "--max-loras", str(max(max_loras, len(adapters)))]
    if adapters:
        cmd.append("--lora-modules")
        cmd += [json.dumps({"name": n, "path": p, "base_model_name": base.name}) for n, p in adapters.items()]
    return cmd + list(extra or [])


def vllm_env(api_key: str | None, env: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ if env is None else env)
    out["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if api_key:
        out["VLLM_API_KEY"] = api_key  # not on the command line, where `ps` shows it
    return out


class VLLMEngine(Engine):
    kind = "vllm"

    def __init__(self, base: BaseModel, *, host: str, port: int, api_key: str | None = None,
                 adapters: dict[str, str] | None = None, max_lora_rank: int = 64,
                 popen: Callable[..., Any] = subprocess.Popen):
        self.base, self.api_key = base, api_key
        self.adapters = dict(adapters or {})
        connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.url = f"http://{connect}:{port}"
        self.cmd = vllm_command(base, host=host, port=port, adapters=self.adapters, max_lora_rank=max_lora_rank)
        self.env = vllm_env(api_key)
        self._popen = popen
        self.proc = None

    def start(self) -> int:
        self.proc = self._popen(self.cmd, env=self.env)
        return self.proc.pid

    def wait_ready(self, timeout: float = 900.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"vllm serve exited with code {self.proc.returncode} before it was ready.",
                                  hint="Its output above says why (GPU memory, model id, LoRA rank).")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise ServerError(f"vllm serve did not answer {self.url}/health within {timeout:.0f} s.")

    def _post(self, path: str, body: dict[str, Any]) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        r = httpx.post(self.url + path, json=body, headers=headers, timeout=300)
        if r.status_code >= 400:
            raise ValidationError(f"vLLM refused {path}: {r.text.strip()}", param="lora_name")

    def models(self) -> list[dict[str, Any]]:
        out = [{"id": self.base.name, "kind": "base", "parent": None, "root": self.base.path}]
        return out + [{"id": n, "kind": "adapter", "parent": self.base.name, "root": p} for n, p in self.adapters.items()]

    def load_adapter(self, name: str, path: str) -> None:
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": name})
        self.adapters.pop(name, None)

    def add_model(self, name: str, path: str) -> None:
        raise ValidationError("vLLM serves one model per server: inference components need the embedded engine.",
                              hint="Serve with --engine transformers, or start another server for the model.",
                              param="engine")

    def remove_model(self, name: str) -> None:
        self.add_model(name, "")

    def replace_base(self, base: BaseModel) -> list[str]:
        raise ValidationError("vLLM cannot swap its base model while running.",
                              hint="Stop the server and start it again: it serves the new base.", param="engine")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
