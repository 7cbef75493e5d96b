"""The model a reference names, loaded with its adapter merged, and written as a standalone folder.

    model, tokenizer = load_merged(ref)            # a ModelRef from tuneloop.models.resolve
    write_merged(model, tokenizer, Path("out/merged"), source=ref)

The folder has config.json, model.safetensors, generation_config.json, the tokenizer and its chat
template: plain transformers loads it (`AutoModelForCausalLM.from_pretrained(folder)`), without
peft. It is written into a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_merged(ref: Any) -> tuple[Any, Any]:
    """(model in float32 on the CPU, tokenizer) of `ref`: a PEFT adapter merged into its base
    (merge_and_unload), a full model as it is. The tokenizer is the adapter's when it has one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = ref.load_path()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer_dir = base
    if ref.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ref.adapter).merge_and_unload()
        if all((Path(ref.adapter) / name).is_file() for name in TOKENIZER_FILES[:1]):
            tokenizer_dir = ref.adapter
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.chat_template is None and tokenizer_dir != base:  # an adapter saved without its template
        tokenizer.chat_template = AutoTokenizer.from_pretrained(base).chat_template
    return model, tokenizer


def write_merged(model: Any, tokenizer: Any, output: Path, *, source: Any = None) -> Path:
    """Save `model` and `tokenizer` as a standalone safetensors folder at `output` (must not exist
    or be empty)."""
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ValidationError(f"{output} already exists and is not empty.",
                              hint="Pass a new --output folder, or remove this one.", param="output")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if not (tmp / "generation_config.json").is_file() and getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if source is not None:
            (tmp / "tuneloop_export.json").write_text(json.dumps(
                {"source": source.name, "base": source.base, "adapter": source.adapter, "via": source.via},
                indent=2) + "\n")
        if output.exists():
            output.rmdir()
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output
