"""Which weights and code tuneloop loads: safetensors only, and transformers' own model classes.
A folder holding only pickles (`*.bin`, `*.pt`, ...) is refused before anything reads it, because
unpickling a file can run code. A folder whose config.json names its own code (`auto_map`, the
Python files `trust_remote_code=True` would import) is loaded without that code when transformers
has a class for its `model_type`, and refused when it has none: tuneloop never runs a model's code.

    check_weights(Path("my-model"))                 # ValidationError naming its pickles and the fix
    check_weights(Path("my-adapter"), adapter=True)
    notes = check_code(Path("my-model"))            # () or a note that its auto_map is ignored
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneloop.data.limits import shell_arg
from tuneloop.errors import ValidationError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_CONVERT = {  # run where the file is trusted; the folder is passed as an argument, never inside the code
    False: "import sys; from transformers import AutoModelForCausalLM as M; "
           "M.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[1], safe_serialization=True)",
    True: "import sys, torch, safetensors.torch as s; d = sys.argv[1]; "
          "s.save_file(torch.load(d + '/adapter_model.bin', weights_only=True), d + '/adapter_model.safetensors')",
}


def check_weights(folder: Path, adapter: bool = False) -> None:
    """Refuse a model (or adapter) folder without safetensors weights, naming its pickles."""
    has = (folder / "adapter_model.safetensors").is_file() if adapter else any(folder.glob("*.safetensors"))
    if has:
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    what = "adapter" if adapter else "model"
    need = "adapter_model.safetensors" if adapter else "*.safetensors"
    if pickles:
        message = (f"{what.capitalize()} folder {folder} holds only pickled weights ({', '.join(pickles[:5])}"
                   f"{', ...' if len(pickles) > 5 else ''}): tuneloop loads {need} only, because unpickling a "
                   "file can run code.")
        convert = (f"Convert the weights to safetensors on a machine where you trust the file, then pass the "
                   f"folder again:\n  python -c \"{_CONVERT[adapter]}\" {shell_arg(str(folder))}")
    else:
        message = f"{what.capitalize()} folder {folder} has no weights ({need})."
        convert = "Pass the folder that save_pretrained wrote (config.json, *.safetensors, tokenizer)."
    raise ValidationError(message, hint=convert, param="model")


def check_code(folder: Path) -> tuple[str, ...]:
    """Refuse a model folder that only its own Python code can load (config.json's auto_map with a
    model_type transformers does not know); a known model_type loads with transformers' class."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return ()
    if not isinstance(config, dict) or not config.get("auto_map"):
        return ()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING_NAMES:
        return (f"ℹ️  {folder}/config.json names its own code (auto_map); tuneloop ignores it and loads the model "
                f"with transformers' {model_type} classes (trust_remote_code stays off).",)
    raise ValidationError(f"Model folder {folder} needs its own Python code to load (config.json: auto_map, "
                          f"model_type {model_type!r}, which transformers does not know); tuneloop never runs a "
                          "model's code (trust_remote_code stays off).",
                          hint="Use a model whose architecture transformers supports natively, or upgrade "
                               "transformers if a newer version has this model_type.", param="model")
