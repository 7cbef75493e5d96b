"""python -m tuneloop.service.launch LAUNCH_JSON   (one rank of a job; started by the runner, or by
torchrun on another machine: `torchrun ... -m tuneloop.service.launch JOB_DIR/launch/launch.json`)

A job on several processes (`tuneloop tune --num-processes N`): the runner (service/runner.py)
claims the job and heartbeats as for one process, writes what every rank needs into
`JOB_DIR/launch/launch.json` (the job row, the model folder, its LoRA targets; rank 0 opens the store at the runner's
TUNELOOP_DATABASE_URL), and
becomes torchelastic's agent for this machine (`elastic_launch`, what `torchrun` runs): N rank
processes of this module, with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set, which
transformers' Trainer (through accelerate) reads to train with DDP (gloo on a CPU, NCCL on GPUs), or
FSDP2 when the plan says `sharding: fsdp` (`--sharding`, training/common.py).

On several machines (`--nodes M`): node 0's runner is the agent hosting the static rendezvous at
TUNELOOP_MASTER_ADDR (`run_local`); the same `tune` command on each other machine
(TUNELOOP_NODE_RANK=1..M-1) creates no job and runs that machine's ranks in the foreground
(`run_node`, through JobService.join), which train and report nothing.

Every rank runs the technique's recipe; only rank 0 opens the store and reports (events, metrics,
MLflow) and writes checkpoints' trainer state and the output, then `JOB_DIR/launch/result.json`;
the runner reads it and registers the output as for one process. What happens when a rank ends
badly:

- a rank raises: its error (recorded by torchelastic's `@record`) fails the job, with its traceback
  in the failure event;
- a rank is killed (kill -9, the OOM killer): the agent stops every other rank at once (SIGTERM,
  SIGKILL after SHUTDOWN_S; a rank blocked in a collective dies too), the runner records which rank
  was lost and exits without a final state, like a runner killed with kill -9: the job is stale, and
  re-running the same `tuneloop tune` command (or a `tune` that follows it) resumes it from its last
  checkpoint; `recover` bounds the restarts;
- the runner itself is killed: every rank dies with it (PR_SET_PDEATHSIG), and the job resumes the
  same way. A collective that hangs fails after distributed.DDP_TIMEOUT_S.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from tuneloop.spec import JobSpec
from tuneloop.training import distributed
from tuneloop.training.plan import Plan

log = logging.getLogger("tuneloop.launch")
SHUTDOWN_S = 5          # after a rank fails, the others get SIGTERM, then SIGKILL after this long
RDZV_TIMEOUT_S = 120    # every rank must have started by then


class ProcessesLost(Exception):
    """A rank was killed: the job stopped as a whole and resumes from its last checkpoint when
    its `tune` command is run again (the runner leaves it stale, not failed)."""


def launch_file(job: dict[str, Any], *, model_dir: str, lora_targets: Any, models_dir: Path) -> Path:
    """Write what every rank reads (JOB_DIR/launch/launch.json) and clear a previous attempt's result."""
    folder = Path(job["job_dir"]) / "launch"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").unlink(missing_ok=True)
    path = folder / "launch.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"job": job, "model_dir": model_dir, "lora_targets": lora_targets,
                               "models_dir": str(models_dir)},
                              indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def read_result(job: dict[str, Any]) -> dict[str, Any]:
    path = Path(job["job_dir"]) / "launch" / "result.json"
    if not path.is_file():
        raise RuntimeError(f"every rank exited 0 but rank 0 wrote no {path}")
    return json.loads(path.read_text())


def write_result(job: dict[str, Any], result: Any) -> None:
    """Rank 0's outcome for the runner: the output (folder, type, metrics), or cancelled."""
    path = Path(job["job_dir"]) / "launch" / "result.json"
    data = {"cancelled": True} if result is None else {
        "cancelled": False, "output_dir": str(result.output_dir), "output_type": result.output_type,
        "metrics": result.metrics}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def run_rank(launch: dict[str, Any], rank: int, store: Any, tracker: Any):
    """This rank's recipe on the job (what service/runner.py's _tune runs for one process); the
    RecipeResult, or None when cancelled. Ray workers run it too (service/ray_backend.py)."""
    from tuneloop.training.recipes import JobContext, recipe_for

    job = launch["job"]
    spec = JobSpec.from_dict(job["spec"])
    ctx = JobContext(store=store, job=job, spec=spec, plan=Plan(**job["plan"]), model_dir=launch["model_dir"],
                     lora_targets=launch["lora_targets"], models_dir=Path(launch["models_dir"]), tracker=tracker,
                     rank=rank)
    return recipe_for(spec.technique)(ctx).run()


# ---- the runner's side ------------------------------------------------------------------------------
def run_local(store: Any, job: dict[str, Any], plan: Plan, launch_path: Path) -> dict[str, Any]:
    """Run the job's ranks on this machine under torchelastic's agent (this process) and return rank
    0's result; ProcessesLost when a rank was killed, RuntimeError with the rank's error when one
    raised. Returns only when every rank has exited. With --nodes this is node 0: the agents of the
    other machines (run_node) join its rendezvous at TUNELOOP_MASTER_ADDR."""
    n = plan.num_processes
    if plan.nodes > 1:
        if any(Path(job["job_dir"]).glob("checkpoints/checkpoint-*/trainer_state.json")):
            raise RuntimeError(f"a job on {plan.nodes} machines does not resume from a checkpoint yet (the other "
                               "machines' ranks would start over); start it again with --force")
        host, port = rendezvous(plan.nodes)
    else:
        host, port = "127.0.0.1", free_port()
    if plan.device == "cpu" and plan.threads:
        os.environ["OMP_NUM_THREADS"] = str(plan.threads)   # accelerate would set cores / N otherwise
    os.environ["TUNELOOP_LAUNCHER_PID"] = str(os.getpid())  # the ranks die with this process
    where = f"on node 0 of {plan.nodes} (rendezvous at {host}:{port})" if plan.nodes > 1 else "on this machine"
    if store is not None:
        store.add_event(job["id"], f"launching {n} process{'es' if n != 1 else ''} {where} ({plan.sharding.upper()} "
                                   f"over {'gloo' if plan.device == 'cpu' else 'NCCL'}; rank 0 reports)",
                        data={"num_processes": n, "nodes": plan.nodes, "backend": "local", "master": f"{host}:{port}",
                              "threads_per_process": plan.threads,
                              "sharding": plan.sharding})
    return _launch(job, plan, launch_path, host, port, node_rank=0)


def run_node(job: dict[str, Any], plan: Plan, launch_path: Path, node_rank: int) -> None:
    """Node `node_rank` (> 0) of a job on several machines: its ranks, under torchelastic's agent
    (this process, in the foreground), joined to node 0's rendezvous; they train and report
    nothing (node 0's rank 0 owns the job). Returns when they have all exited."""
    host, port = rendezvous(plan.nodes)
    if plan.device == "cpu" and plan.threads:
        os.environ["OMP_NUM_THREADS"] = str(plan.threads)
    os.environ["TUNELOOP_LAUNCHER_PID"] = str(os.getpid())
    _launch(job, plan, launch_path, host, port, node_rank=node_rank)


MASTER_ENV, NODE_RANK_ENV = "TUNELOOP_MASTER_ADDR", "TUNELOOP_NODE_RANK"


def rendezvous(nodes: int, environ: dict[str, str] | None = None) -> tuple[str, int]:
    """Node 0's HOST, PORT for a job on `nodes` machines (TUNELOOP_MASTER_ADDR), or the refusal."""
    from tuneloop.errors import ValidationError

    value = (environ if environ is not None else os.environ).get(MASTER_ENV, "").strip()
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValidationError(f"--nodes {nodes} needs node 0's address in {MASTER_ENV}=HOST:PORT"
                              + (f" (got {value!r})" if value else "") + ".",
                              hint=f"On every machine: export {MASTER_ENV}=NODE0_HOST:29500 and "
                                   f"{NODE_RANK_ENV}=0 on node 0, 1 .. {nodes - 1} on the others.", param="nodes")
    return host, int(port)


def node_rank(nodes: int, environ: dict[str, str] | None = None) -> int:
    """This machine's TUNELOOP_NODE_RANK (0 when unset), checked against --nodes."""
    from tuneloop.errors import ValidationError

    value = (environ if environ is not None else os.environ).get(NODE_RANK_ENV, "0").strip() or "0"
    if not value.isdigit() or int(value) >= max(nodes, 1):
        raise ValidationError(f"{NODE_RANK_ENV}={value} is not a node of --nodes {nodes} (0 .. {nodes - 1}).",
                              param="nodes")
    return int(value)


def _launch(job: dict[str, Any], plan: Plan, launch_path: Path, host: str, port: int, node_rank: int) -> dict | None:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    n = plan.num_processes
    config = LaunchConfig(
        min_nodes=plan.nodes, max_nodes=plan.nodes, nproc_per_node=n,
        run_id=job["id"] if plan.nodes == 1 else "tuneloop", rdzv_backend="static",
        rdzv_endpoint=f"{host}:{port}", rdzv_configs={"rank": node_rank, "timeout": RDZV_TIMEOUT_S},
        max_restarts=0, monitor_interval=0.2, start_method="spawn", local_addr=host if node_rank == 0 else None,
        logs_specs=DefaultLogsSpecs(log_dir=str(launch_path.parent / "logs")), shutdown_timeout=SHUTDOWN_S)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "tuneloop.service.launch", str(launch_path))
    except ChildFailedError as e:
        # A killed rank takes the others down with it: they fail too (SIGTERM from the agent, or a
        # gloo error on the closed connection); the kill is the cause whenever there is one.
        killed = sorted(((f.exitcode == -signal.SIGTERM, f.timestamp, r, f) for r, f in e.failures.items()
                         if f.exitcode < 0), key=lambda t: t[:3])
        if killed:
            _, _, rank, failure = killed[0]
            raise ProcessesLost(f"rank {rank} (pid {failure.pid}) was killed by {failure.signal_name()}; "
                                f"all {n} processes were stopped") from None
        rank, failure = e.get_first_failure()
        message = failure.message
        if isinstance(message, dict):
            text = message.get("message", "")
            trace = (message.get("extraInfo") or {}).get("py_callstack", "")
        else:
            text, trace = str(message), ""
        raise RankFailed(f"rank {rank} failed: {text.strip().splitlines()[-1] if text.strip() else failure.exitcode}",
                         trace) from None
    return read_result(job) if node_rank == 0 else None


class RankFailed(RuntimeError):
    """A rank raised; `trace` is its traceback (torchelastic's error file)."""

    def __init__(self, message: str, trace: str = ""):
        super().__init__(message)
        self.trace = trace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a rank --------------------------------------------------------------------------------------------
def die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when the process that started it dies (a runner killed with
    kill -9 takes its ranks with it); exit now if it is already gone."""
    expected = os.environ.get("TUNELOOP_LAUNCHER_PID")
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if expected and os.getppid() != int(expected):
        os._exit(1)


def _rank_tracker(store: Any, spec: JobSpec, job: dict[str, Any]):
    """Rank 0's MLflow tracker: the runner opened the run (and said where it is); this continues it."""
    from tuneloop.tracking import open_tracker

    def on_event(level: str, message: str, data: dict[str, Any]) -> None:
        if "mlflow_url" not in data:
            store.add_event(job["id"], message, level=level, data=data or None)

    return open_tracker(spec, job, on_event)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    return record(_rank_main)(Path(argv[0]))


def _rank_main(launch_path: Path) -> int:
    die_with_parent()
    rank = distributed.rank()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    launch = json.loads(launch_path.read_text())
    job = launch["job"]
    store, tracker = None, None
    if rank == 0:
        from tuneloop.settings import load_settings
        from tuneloop.store import open_store

        store = open_store(load_settings().database_url)   # the runner's TUNELOOP_DATABASE_URL
        tracker = _rank_tracker(store, JobSpec.from_dict(job["spec"]), job)
    else:
        from tuneloop.tracking import NoTracker

        tracker = NoTracker()
    result = run_rank(launch, rank, store, tracker)
    if rank == 0:
        write_result(job, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
