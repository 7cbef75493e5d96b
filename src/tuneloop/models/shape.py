"""A model's shape without importing torch: config.json and the safetensors headers, or a GGUF
file's header (before it is converted).

    shape = model_shape(Path("my-model"), parameters=0)   # layers, hidden size, ... and the parameter count
    shape = model_shape(None, 0, gguf="model.gguf")       # from the GGUF header (gguf package, numpy only)
    info = gguf_info("model.gguf")                        # also its context length, architecture, types
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tuneloop.training.plan import ModelShape, shape_from_config, shape_from_parameters


def count_safetensors_parameters(folder: Path) -> int:
    """Parameters in the folder's *.safetensors files, from their JSON headers (no tensor is read)."""
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for d in meta["shape"]:
                    count *= d
                total += count
    return total


def gguf_info(path: str | Path):
    """The GGUF header's parameters, layers, hidden size, vocabulary, heads and context length
    (a converted file's marker holds them too; models.gguf.GGUFInfo)."""
    from tuneloop.models.gguf import read_header

    return read_header(Path(path))


def model_shape(folder: Path | None, parameters: int, gguf: str | Path | None = None) -> ModelShape:
    """From the folder's config.json when it is on this machine, else from the GGUF header when
    the model is a GGUF file not converted yet, else from `parameters` alone."""
    if folder is not None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        return shape_from_config(config, count_safetensors_parameters(folder) or parameters)
    if gguf is not None:
        info = gguf_info(gguf)
        return ModelShape(parameters=info.parameters, layers=info.layers, hidden=info.hidden, vocab=info.vocab,
                          heads=info.heads, context=info.context_length)
    return shape_from_parameters(parameters)
