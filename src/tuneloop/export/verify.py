"""Does an exported GGUF answer like the model it came from? Load it back with transformers
(`from_pretrained(folder, gguf_file=name)`) and compare greedy answers on a few prompts.

    report = verify_gguf(model, tokenizer, Path("out/model.gguf"), quant="q8_0")
    report.passed, report.token_agreement, report.identical

Two numbers per check: `identical`, the prompts whose greedy answers are the same tokens, and
`token_agreement`, the share of the reference answer's tokens the export also predicts first when
fed the reference's own prefix (teacher forced, so one early flip does not count every later
token). Also checked: the GGUF's tokenizer turns each chat prompt into the same ids.
Thresholds: f32 answers identical on every prompt; f16 at least 98% token agreement (its rounding
can flip a near-tie); q8_0 at least 90%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colours.",
    "Explain what a neural network is in one sentence.",
    "What is 12 times 7?",
    "Give me a tip for learning to cook.",
)
THRESHOLDS = {"f32": 1.0, "f16": 0.98, "q8_0": 0.90}
MAX_NEW_TOKENS = 24


@dataclass
class VerifyReport:
    quant: str
    prompts: int
    identical: int
    token_agreement: float
    tokenizer_identical: int
    threshold: float
    passed: bool
    answers: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (f"{self.identical}/{self.prompts} greedy answers identical, {self.token_agreement:.1%} token "
                f"agreement (needs {self.threshold:.0%}), prompts tokenized the same {self.tokenizer_identical}/"
                f"{self.prompts}")


def load_gguf(path: Path, config: Any) -> tuple[Any, Any]:
    """The GGUF as transformers loads it. Its qwen2/qwen3 reader takes no head size from the file
    (Qwen3Config then defaults to 128), so the source's head size is passed as a config override."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    extra = {"head_dim": config.head_dim} if getattr(config, "head_dim", None) and config.model_type != "llama" else {}
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, **extra)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    messages = [{"role": "user", "content": prompt}]
    if tokenizer.chat_template:
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])
    return tokenizer(prompt)["input_ids"]


def _greedy(model: Any, ids: list[int], eos: int | None, pad: int | None) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos,
                             pad_token_id=pad if pad is not None else eos)
    return out[0, len(ids):].tolist()


def _forced_agreement(model: Any, ids: list[int], answer: list[int]) -> int:
    """How many of `answer`'s tokens `model` predicts first, given the prompt and the answer so far."""
    import torch

    if not answer:
        return 0
    with torch.no_grad():
        logits = model(torch.tensor([ids + answer])).logits[0]
    predicted = logits[len(ids) - 1: len(ids) + len(answer) - 1].argmax(-1).tolist()
    return sum(int(p == a) for p, a in zip(predicted, answer))


def compare(reference: Any, tokenizer: Any, exported: Any, exported_tokenizer: Any, quant: str,
            prompts: tuple[str, ...] = PROMPTS) -> VerifyReport:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    identical = same_tokens = agreed = total = 0
    answers = []
    for prompt in prompts:
        ids = _prompt_ids(tokenizer, prompt)
        same_tokens += int(_prompt_ids(exported_tokenizer, prompt) == ids)
        want = _greedy(reference, ids, eos, pad)
        got = _greedy(exported, ids, eos, pad)
        identical += int(want == got)
        agreed += _forced_agreement(exported, ids, want)
        total += len(want)
        answers.append({"prompt": prompt, "reference": tokenizer.decode(want, skip_special_tokens=True),
                        "export": tokenizer.decode(got, skip_special_tokens=True)})
    agreement = agreed / total if total else 1.0
    threshold = THRESHOLDS[quant]
    passed = same_tokens == len(prompts) and (identical == len(prompts) if threshold >= 1.0 else agreement >= threshold)
    return VerifyReport(quant, len(prompts), identical, round(agreement, 4), same_tokens, threshold, passed, answers)


def verify_gguf(reference: Any, tokenizer: Any, path: Path, *, quant: str,
                prompts: tuple[str, ...] = PROMPTS) -> VerifyReport:
    exported, exported_tokenizer = load_gguf(path, reference.config)
    return compare(reference, tokenizer, exported, exported_tokenizer, quant, prompts)


def verify_merged(reference: Any, tokenizer: Any, folder: Path, prompts: tuple[str, ...] = PROMPTS) -> VerifyReport:
    """The merged folder loaded by plain transformers answers exactly as the merged model in memory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return compare(reference, tokenizer, exported, AutoTokenizer.from_pretrained(folder), "f32", prompts)
