"""The engine interface every serving backend implements, the sampling parameters of one request,
and the choice of backend.

    engine = make_engine("auto", base=BaseModel("tuneloop/tiny-qwen3", "/path/to/folder"))
    engine.load_adapter("tuned", "/path/to/adapter")           # checked before, by adapters.py
    engine.submit("tuned", prompt_ids, SamplingParams(temperature=0), sink)

Two backends: `TransformersEngine` (hf_engine.py, embedded, the default; CPU or one GPU) and
`VLLMEngine` (vllm_engine.py, a `vllm serve --enable-lora` child process; chosen by `auto` when
vLLM and a CUDA GPU are both present). The OpenAI routes of server.py call `submit` on an engine
that generates in process; vLLM serves those routes itself.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from tuneloop.errors import ValidationError

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch; ours too


@dataclass(frozen=True)
class BaseModel:
    """What serves as the base: the name clients use, and the folder (or Hub id) it loads from."""

    name: str
    path: str


@dataclass
class SamplingParams:
    """Per-request decoding settings (OpenAI's names). temperature 0 is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1


# Events an engine sends to a request's sink, from its own thread:
#   sink("text", choice_index, delta_text)            some new text (possibly "")
#   sink("finish", choice_index, (finish_reason, completion_tokens))
#   sink("error", -1, exception)                      the whole request failed
Sink = Callable[[str, int, Any], None]


class Ticket:
    """A submitted request: `cancel()` stops its rows at the next step (client went away)."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Engine(ABC):
    """Serves one base model, LoRA adapters on it, and inference components (other full models)."""

    kind: str = "engine"
    base: BaseModel

    @abstractmethod
    def models(self) -> list[dict[str, Any]]:
        """`[{"id", "kind": base|adapter|ic, "parent", "root"}]` of what is loaded now."""

    @abstractmethod
    def load_adapter(self, name: str, path: str) -> None:
        """Hot-load a (checked) PEFT LoRA folder under `name`; later requests may use it."""

    @abstractmethod
    def unload_adapter(self, name: str) -> None: ...

    @abstractmethod
    def add_model(self, name: str, path: str) -> None:
        """Serve a full model folder as its own model (an inference component)."""

    @abstractmethod
    def remove_model(self, name: str) -> None: ...

    @abstractmethod
    def replace_base(self, base: BaseModel) -> list[str]:
        """Serve another base; re-attach the adapters that fit it and return the names dropped."""

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class GeneratingEngine(Engine):
    """An engine that generates in this process, behind tuneloop's own OpenAI routes."""

    @abstractmethod
    def encode(self, model: str, *, messages: list[dict[str, Any]] | None = None,
               text: str | None = None) -> list[int]:
        """Token ids of a chat (through the model's chat template) or of a raw prompt."""

    @abstractmethod
    def context_length(self, model: str) -> int: ...

    @abstractmethod
    def submit(self, model: str, prompts: list[list[int]], params: SamplingParams, sink: Sink) -> Ticket:
        """Queue `len(prompts) * params.n` rows; choice i*n+j answers prompts[i]. Returns at once."""


def vllm_available() -> bool:
    """vLLM importable and a CUDA GPU present (vLLM does not run on this kind of CPU box)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_engine(kind: str) -> str:
    """`auto` -> vllm when vLLM and a GPU are present, else transformers; names are checked."""
    if kind not in ("auto", "transformers", "vllm"):
        raise ValidationError(f'Unknown engine "{kind}".', hint="Use --engine auto, transformers or vllm.",
                              param="engine")
    if kind == "auto":
        return "vllm" if vllm_available() else "transformers"
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValidationError("The vLLM engine needs the vllm package, which is not installed.",
                              hint="Install it on a machine with a CUDA GPU (pip install vllm), "
                                   "or serve with the embedded engine: --engine transformers.", param="engine")
    return kind
