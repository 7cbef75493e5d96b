"""Many PEFT LoRA adapters on one base model, mixed in one batch.

Each targeted `nn.Linear` of the base is wrapped once in `MultiLoraLinear`. Every adapter loaded
gets a slot (0 is the base: no LoRA); a wrapper keeps, per slot, A^T (in x r) and B^T (r x out)
with the adapter's scaling folded into B, zero-padded to the largest rank loaded, stacked into
two tensors. Before a forward pass the engine selects a slot per batch row:

- all rows on the base: the base's own Linears are put back in the model while the batch stays
  base-only, so a base forward runs exactly the base model's modules (no wrapper call per layer);
- all rows on one adapter: y = W x + (x A) B, one matmul pair per layer;
- mixed rows, few adapters: the A matrices of the adapters in the batch are concatenated
  ([in, k*r]) and the B matrices stacked ([k*r, out]); y = W x + ((x A_cat) * M) B_cat where the
  0/1 mask M keeps each row's own block. Two dense matmuls and one multiply per layer, whatever
  the mix: a mixed batch costs about what a single-adapter batch costs (the extra work is k*r
  columns instead of r, small next to W x);
- mixed rows, many adapters: each row's A and B are gathered once per selection and applied
  with two batched matmuls; where those copies would be large, rows are grouped by adapter
  (PEFT's `adapter_names` scheme, with index tensors built once per selection, not per layer).

This is the S-LoRA / punica idea without custom kernels. The result equals PEFT's mixed-batch
forward (`model(..., adapter_names=[...])`); tests/unit/test_serving_engine.py checks it.
Adapter folders are checked by adapters.py before they get here.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
MASKED_MAX_COLUMNS = 1024                # k adapters * rank: above this, gather per row instead
GATHER_LIMIT_BYTES = 256 * 1024 * 1024  # above this, mixed batches group rows by adapter


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern: a key matches a module name or its dotted suffix."""
    for key, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def read_adapter(path: str | Path, dtype: torch.dtype, device: torch.device | str
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (A^T [in, r], B^T * scaling [r, out])} from a PEFT LoRA folder."""
    folder = Path(path)
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m:
            pairs.setdefault(m["module"], {})[m["ab"]] = t
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module, ab in pairs.items():
        a, b = ab["A"], ab["B"]                   # A: [r, in], B: [out, r]
        r = a.shape[0]
        alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", r))
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        out[module] = (a.t().to(device=device, dtype=dtype).contiguous(),
                       (b.t().float() * scaling).to(device=device, dtype=dtype).contiguous())
    return out


class MultiLoraLinear(nn.Module):
    """A base Linear plus whatever LoRA selection the engine set for the next forward."""

    def __init__(self, base: nn.Linear, parent: nn.Module | None = None, attr: str = ""):
        super().__init__()
        self.base = base
        self.home = (parent, attr)  # where the wrapper (or, for base-only batches, `base`) sits
        self.weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # adapter -> (A^T, B^T)
        self.a_stack: torch.Tensor | None = None  # [slots, in, r_max]
        self.b_stack: torch.Tensor | None = None  # [slots, r_max, out]
        self.selection: tuple[str, Any] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        sel = self.selection
        if sel is None:
            return y
        kind, value = sel
        if kind == "one":
            a, b = value
            return y + (x @ a) @ b
        if kind == "masked":
            a, mask, b = value  # [in, k*r], [B, 1, k*r], [k*r, out]
            return y + ((x @ a) * mask) @ b
        if kind == "gather":
            a, b = value  # [B, in, r], [B, r, out]; x: [B, T, in]
            return y + torch.bmm(torch.bmm(x, a), b)
        for idx, a, b in value:  # "groups": rows of one adapter at a time
            y.index_add_(0, idx, (x.index_select(0, idx) @ a) @ b)
        return y

    def restack(self, order: list[str]) -> None:
        """Rebuild the stacks for slots [base, *order]."""
        mine = [self.weights.get(name) for name in order]
        present = [w for w in mine if w is not None]
        if not present:
            self.a_stack = self.b_stack = None
            return
        r_max = max(a.shape[1] for a, _ in present)
        a0, b0 = present[0]
        a_stack = a0.new_zeros((len(order) + 1, self.base.in_features, r_max))
        b_stack = b0.new_zeros((len(order) + 1, r_max, self.base.out_features))
        for slot, w in enumerate(mine, start=1):
            if w is not None:
                a, b = w
                a_stack[slot, :, : a.shape[1]] = a
                b_stack[slot, : b.shape[0], :] = b
        self.a_stack, self.b_stack = a_stack, b_stack


class LoraSet:
    """The adapters loaded on one base model and the per-row selection for its next forward."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.order: list[str] = []                         # slot i+1 holds order[i]
        self.wrappers: dict[str, MultiLoraLinear] = {}
        self._selected: tuple[int, ...] | None = None
        self._installed = True                              # wrappers in the model (else the bare Linears)
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device

    def slot(self, name: str) -> int:
        return self.order.index(name) + 1

    def __contains__(self, name: str) -> bool:
        return name in self.order

    def read(self, path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return read_adapter(path, self.dtype, self.device)

    def load(self, name: str, path: str | Path,
             weights: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Add an adapter (its weights read already by `read`, or read now) in the next free slot."""
        weights = weights if weights is not None else self.read(path)
        for module in weights:
            self._wrap(module)
        for module, w in self.wrappers.items():
            if module in weights:
                w.weights[name] = weights[module]
        self.order.append(name)
        self._restack()

    def unload(self, name: str) -> None:
        for w in self.wrappers.values():
            w.weights.pop(name, None)
        self.order.remove(name)
        self._restack()

    def _wrap(self, module: str) -> None:
        if module in self.wrappers:
            return
        parent_name, _, child = module.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        base = getattr(parent, child)
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRA on {module} ({type(base).__name__}): only Linear layers are served")
        wrapper = MultiLoraLinear(base, parent, child)
        if self._installed:
            setattr(parent, child, wrapper)
        self.wrappers[module] = wrapper

    def _install(self, on: bool) -> None:
        """Put the wrappers (on) or the base Linears (off) in the model; between forwards only."""
        if on == self._installed:
            return
        for w in self.wrappers.values():
            parent, attr = w.home
            setattr(parent, attr, w if on else w.base)
        self._installed = on

    def _restack(self) -> None:
        for w in self.wrappers.values():
            w.restack(self.order)
        self._selected = None

    def select(self, slots: list[int]) -> None:
        """Choose each row's adapter (slot; 0 = base) for the forwards that follow."""
        key = tuple(slots)
        if key == self._selected:
            return
        self._selected = key
        unique = sorted(set(slots))
        if unique == [0] or not self.order:
            for w in self.wrappers.values():
                w.selection = None
            self._install(False)
            return
        self._install(True)
        if len(unique) == 1:
            s = unique[0]
            for w in self.wrappers.values():
                ok = w.a_stack is not None and self.order[s - 1] in w.weights
                w.selection = ("one", (w.a_stack[s], w.b_stack[s])) if ok else None
            return
        present = [s for s in unique if s != 0]
        widths = {w.a_stack.shape[2] for w in self.wrappers.values() if w.a_stack is not None}
        if len(present) * max(widths) <= MASKED_MAX_COLUMNS:
            masks = {r: self._mask(slots, present, r) for r in widths}
            for w in self.wrappers.values():
                if w.a_stack is None:
                    w.selection = None
                    continue
                n_in, r = w.a_stack.shape[1], w.a_stack.shape[2]
                a_cat = w.a_stack[present].permute(1, 0, 2).reshape(n_in, len(present) * r)
                b_cat = w.b_stack[present].reshape(len(present) * r, -1)
                w.selection = ("masked", (a_cat, masks[r], b_cat))
            return
        idx = torch.tensor(slots, device=self.device)
        gathered = sum(w.a_stack[0].numel() + w.b_stack[0].numel() for w in self.wrappers.values()
                       if w.a_stack is not None) * len(slots) * self.a_stack_itemsize()
        if gathered <= GATHER_LIMIT_BYTES:
            for w in self.wrappers.values():
                w.selection = None if w.a_stack is None else \
                    ("gather", (w.a_stack.index_select(0, idx), w.b_stack.index_select(0, idx)))
            return
        groups = [(s, torch.tensor([i for i, x in enumerate(slots) if x == s], device=self.device))
                  for s in unique if s != 0]
        for w in self.wrappers.values():
            w.selection = None if w.a_stack is None else \
                ("groups", [(ix, w.a_stack[s], w.b_stack[s]) for s, ix in groups])

    def _mask(self, slots: list[int], present: list[int], r: int) -> torch.Tensor:
        """[rows, 1, k*r]: ones over each row's own adapter block (none for base rows)."""
        mask = torch.zeros((len(slots), 1, len(present) * r), dtype=self.dtype, device=self.device)
        for i, s in enumerate(slots):
            if s:
                k = present.index(s)
                mask[i, 0, k * r:(k + 1) * r] = 1
        return mask

    def a_stack_itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()
