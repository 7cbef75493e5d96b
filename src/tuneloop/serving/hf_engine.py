"""The embedded engine: transformers models in this process, many LoRA adapters on the base in
one batch (lora.py), continuous batching by a scheduler thread (batching.py).

    engine = TransformersEngine(BaseModel("tuneloop/tiny-qwen3", folder))
    engine.load_adapter("tuned", adapter_folder)
    ids = engine.encode("tuned", messages=[{"role": "user", "content": "Hi"}])
    engine.submit("tuned", [ids], SamplingParams(temperature=0, max_tokens=16), sink)

CPU in fp32; a CUDA GPU in bf16 (fp16 where bf16 is missing). Weights load from safetensors only.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tuneloop.errors import ModelNotFoundError, ValidationError
from tuneloop.serving.batching import ModelSlot, Request, Scheduler
from tuneloop.serving.engine import BASE_ADAPTER, BaseModel, GeneratingEngine, SamplingParams, Sink, Ticket
from tuneloop.serving.lora import LoraSet

log = logging.getLogger(__name__)


def pick_device() -> tuple[str, torch.dtype]:
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def load_model(path: str, device: str, dtype: torch.dtype):
    """Model (eval mode) and tokenizer of a folder or Hub id; safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    return model.to(device).eval(), tok


class TransformersEngine(GeneratingEngine):
    kind = "transformers"

    def __init__(self, base: BaseModel, *, max_batch: int = 32, batch_window_ms: float = 10.0,
                 device: str | None = None, dtype: torch.dtype | None = None, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        auto_device, auto_dtype = pick_device()
        self.device, self.dtype = device or auto_device, dtype or auto_dtype
        self.scheduler = Scheduler(max_batch=max_batch, window_s=batch_window_ms / 1000.0)
        self.base = base
        self.base_slot = self._new_slot(base.name, base.path, with_loras=True)
        self.adapters: dict[str, str] = {}            # name -> folder
        self.components: dict[str, ModelSlot] = {}    # inference components: name -> slot
        self.roots: dict[str, str] = {}               # IC name -> folder
        self.scheduler.slots.append(self.base_slot)
        self.scheduler.start()

    def _new_slot(self, name: str, path: str, with_loras: bool) -> ModelSlot:
        model, tok = load_model(path, self.device, self.dtype)
        return ModelSlot(name, model, tok, LoraSet(model) if with_loras else None)

    # ---- what is served ---------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        out = [{"id": self.base.name, "kind": "base", "parent": None, "root": self.base.path}]
        out += [{"id": n, "kind": "adapter", "parent": self.base.name, "root": p} for n, p in self.adapters.items()]
        out += [{"id": n, "kind": "ic", "parent": None, "root": self.roots[n]} for n in self.components]
        return out

    def _route(self, model: str) -> tuple[ModelSlot, str]:
        if model == self.base.name:
            return self.base_slot, BASE_ADAPTER
        if model in self.adapters:
            return self.base_slot, model
        if model in self.components:
            return self.components[model], BASE_ADAPTER
        raise ModelNotFoundError(model, [m["id"] for m in self.models()])

    def _check_free(self, name: str) -> None:
        if name == self.base.name or name in self.adapters or name in self.components or name == BASE_ADAPTER:
            raise ValidationError(f"The name {name!r} is already served on this server.",
                                  hint="Pick another name, or remove the one served first.", param="name")

    def load_adapter(self, name: str, path: str) -> None:
        self._check_free(name)
        weights = self.base_slot.loras.read(path)  # file reading does not stop generation
        with self.scheduler.lock:  # installed between two forward passes
            self._check_free(name)
            self.base_slot.loras.load(name, path, weights)
            self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise ModelNotFoundError(name, list(self.adapters))
        with self.scheduler.lock:
            self.base_slot.loras.unload(name)
            del self.adapters[name]

    def add_model(self, name: str, path: str) -> None:
        self._check_free(name)
        slot = self._new_slot(name, path, with_loras=False)  # loads outside the lock: serving goes on
        with self.scheduler.lock:
            self._check_free(name)
            self.components[name], self.roots[name] = slot, path
            self.scheduler.slots.append(slot)

    def remove_model(self, name: str) -> None:
        if name not in self.components:
            raise ModelNotFoundError(name, list(self.components))
        with self.scheduler.lock:
            self.components.pop(name).retired = True
            self.roots.pop(name)

    def replace_base(self, base: BaseModel) -> list[str]:
        """Load the new base, move the adapters that load on it; requests already running on the
        old base finish there."""
        slot = self._new_slot(base.name, base.path, with_loras=True)
        dropped = []
        for name, path in self.adapters.items():
            try:
                slot.loras.load(name, path)
            except Exception as e:  # shapes that do not fit the new base
                log.warning("adapter %s does not load on %s: %s", name, base.name, e)
                dropped.append(name)
        with self.scheduler.lock:
            self.base_slot.retired = True
            self.base, self.base_slot = base, slot
            self.adapters = {n: p for n, p in self.adapters.items() if n not in dropped}
            self.scheduler.slots.insert(0, slot)
        return dropped

    # ---- generation -------------------------------------------------------------------------
    def encode(self, model: str, *, messages: list[dict[str, Any]] | None = None,
               text: str | None = None) -> list[int]:
        slot, _ = self._route(model)
        tok = slot.tok
        if messages is not None:
            if not getattr(tok, "chat_template", None):
                raise ValidationError(f"Model {model} has no chat template.",
                                      hint="Send a raw prompt to /v1/completions instead.", param="messages")
            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # the template rejected the conversation (roles, order)
                raise ValidationError(f"The chat template of {model} cannot render these messages: {e}",
                                      param="messages") from None
        return tok(text, add_special_tokens=messages is None)["input_ids"]

    def context_length(self, model: str) -> int:
        slot, _ = self._route(model)
        cfg = slot.model.config
        return int(getattr(cfg, "max_position_embeddings", None) or slot.tok.model_max_length)

    def submit(self, model: str, prompts: list[list[int]], params: SamplingParams, sink: Sink) -> Ticket:
        slot, adapter = self._route(model)
        ticket = Ticket()
        req = Request(model=model, adapter=adapter, params=params, sink=sink, ticket=ticket)
        room = self.context_length(model)
        limit = [min(params.max_tokens or 256, max(1, room - len(p))) for p in prompts]
        self.scheduler.enqueue(slot, req, prompts, limit)
        return ticket

    def stats(self) -> dict[str, Any]:
        return {"max_batch": self.scheduler.max_batch, "window_ms": self.scheduler.window_s * 1000,
                "device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
                **self.scheduler.stats.to_dict()}

    def close(self) -> None:
        self.scheduler.stop()
        self.scheduler.join(timeout=10)
