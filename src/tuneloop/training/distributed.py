"""Which process of a job this is, when a job runs on several (`--num-processes N`, `--backend
ray`): rank 0 reports (events, metrics, checkpoints' events, the output) and the other ranks only
train. The launchers (service/launch.py, service/ray_backend.py) set the standard variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) that transformers' Trainer (through
accelerate) reads to join the process group; these helpers read the same variables, so they
answer the same before and after the group exists.

    if distributed.is_main(): ctx.event(...)
    stop = distributed.agree(rank0_says_stop)   # every rank, same step: rank 0's answer for all
"""

from __future__ import annotations

import os

DDP_TIMEOUT_S = 300   # a collective that waits longer than this fails (a lost rank on another machine)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    return rank() == 0


def agree(flag: bool) -> bool:
    """Rank 0's `flag` on every rank (a one-element broadcast; every rank must call it at the same
    point, as the job callback does at each step's end). One process: `flag` itself."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())
