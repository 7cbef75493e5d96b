"""What the export tests share: a LoRA adapter whose merge matters, greedy answers to compare."""

from __future__ import annotations

from pathlib import Path

PROMPTS = ("What is the capital of France?", "Name a fruit that is yellow.", "What is 2 plus 2?",
           "Say hello in Spanish.", "What colour is the sky?")


def make_adapter(base: Path, out: Path, *, seed: int = 0, scale: float = 0.02) -> Path:
    """A LoRA adapter on `base` with random nonzero B (PEFT starts B at zero, a no-op merge), saved
    with the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                       "o_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def greedy_answers(model, tokenizer, prompts=PROMPTS, max_new_tokens: int = 20) -> list[list[int]]:
    import torch

    answers = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        answers.append(out[0, len(ids):].tolist())
    return answers


def load_peft(base: Path, adapter: Path):
    """The unexported model: base + adapter through peft, not merged."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).eval(), AutoTokenizer.from_pretrained(adapter)


def load_gguf(path: Path, head_dim: int | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"head_dim": head_dim} if head_dim else {}
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, **extra)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def forced_agreement(model, tokenizer, want: list[list[int]], prompts=PROMPTS) -> float:
    """Share of the reference answers' tokens that `model` also predicts first, fed the reference
    prefix (teacher-forced): one near-tie flipped by quantization costs one token, not the rest of
    the answer, as it does in a greedy comparison."""
    import torch

    agreed = total = 0
    for prompt, answer in zip(prompts, want):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids + answer])).logits[0]
        predicted = logits[len(ids) - 1:len(ids) - 1 + len(answer)].argmax(-1).tolist()
        agreed += sum(int(a == b) for a, b in zip(predicted, answer))
        total += len(answer)
    return agreed / total


def agreement(want: list[list[int]], got: list[list[int]]) -> float:
    """Share of prompts with identical greedy answers."""
    return sum(int(a == b) for a, b in zip(want, got)) / len(want)
