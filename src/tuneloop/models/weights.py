"""Which weights tuneloop loads: safetensors only. A folder holding only pickles (`*.bin`, `*.pt`,
...) is refused before anything reads it, because unpickling a file can run code.

    check_weights(Path("my-model"))                 # ValidationError naming its pickles and the fix
    check_weights(Path("my-adapter"), adapter=True)
"""

from __future__ import annotations

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
