"""A model's shape without importing torch: config.json and the safetensors headers.

    shape = model_shape(Path("my-model"), parameters=0)   # layers, hidden size, ... and the parameter count
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


def model_shape(folder: Path | None, parameters: int) -> ModelShape:
    """From the folder's config.json when it is on this machine, else from `parameters` alone."""
    if folder is not None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        return shape_from_config(config, count_safetensors_parameters(folder) or parameters)
    return shape_from_parameters(parameters)
