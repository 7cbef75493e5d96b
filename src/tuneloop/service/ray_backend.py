"""The Ray backend: `tuneloop tune --backend ray [--num-processes N]` with the cluster's address in
TUNELOOP_RAY_ADDRESS (what `ray.init` takes: HOST:PORT of a head, or ray://HOST:10001). The only
module that imports ray (`pip install 'tuneloop[ray]'`); the runner calls it.

The runner (service/runner.py) stays the driver: it claims the job, heartbeats, connects to the
cluster and runs the job as Ray Train workers (`ray.train.torch.TorchTrainer`, a `ScalingConfig`
from the plan: N workers, the plan's CPUs per worker or one GPU each; Ray sets up the torch process
group, gloo or NCCL). Each worker runs the technique's recipe (service/launch.py's `run_rank`), as
the ranks of a local job do. Rank 0 reports through a `JobChannel` actor, not the database (a
worker on another machine may not reach a SQLite file): its events and job-row updates are queued
there and this driver writes them into the store every PUMP_S, logging the metrics to MLflow; the
driver puts the job's cancel request into the channel, where rank 0's cancel check reads it, so
`tuneloop cancel` stops every worker at the same step (and the run ends as cancelled). Rank 0's
result comes back through the channel too; the runner registers the output.

A worker that dies is replaced by Ray Train (FailureConfig.max_failures) and the recipe resumes
from the job's last checkpoint; the controller and workers belong to this driver, so a driver
killed with kill -9 takes them down and re-running `tuneloop tune` resumes the job.

The workers read the job's folder and the model from the same paths as the driver and rank 0
writes the checkpoints and output there: on several machines, TUNELOOP_HOME and
TUNELOOP_MODELS_DIR must be on a filesystem every node mounts (README: Ray cluster, KubeRay).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError

log = logging.getLogger("tuneloop.ray")
ADDRESS_ENV = "TUNELOOP_RAY_ADDRESS"
PUMP_S = 0.5
MAX_FAILURES = 2                 # lost workers Ray Train replaces (resuming from the checkpoint) before failing
WORKER_ENV = ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME", "TRANSFORMERS_OFFLINE")


def ray_address(environ: dict[str, str] | None = None) -> str:
    """The cluster's address, or the refusal that says how to give one."""
    address = (environ if environ is not None else os.environ).get(ADDRESS_ENV, "").strip()
    if not address:
        raise ValidationError(
            f"--backend ray needs the Ray cluster's address in {ADDRESS_ENV}.",
            hint=f"Start a cluster (ray start --head --port 6379) and export {ADDRESS_ENV}=HOST:6379 "
                 "(or ray://HOST:10001 for a Ray Client server, e.g. KubeRay's head service).",
            param="backend")
    return address


def check_ray(environ: dict[str, str] | None = None) -> str:
    """Before a job exists (prepare): the address is set and ray is installed; a note saying where
    the job will run. Imports nothing heavy."""
    address = ray_address(environ)
    if importlib.util.find_spec("ray") is None:
        raise ValidationError("--backend ray needs Ray, which is not installed.",
                              hint="pip install 'tuneloop[ray]'", param="backend")
    return f"ℹ️  Backend: Ray Train workers on the cluster at {address}"


CONNECT_TIMEOUT_S = 5.0


def reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address nothing listens on, within timeout_s (ray.init waits for it indefinitely)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise ValidationError(f"Cannot reach the Ray cluster at {address} ({ADDRESS_ENV}): {e}",
                              hint="Start it (ray start --head --port 6379) or point "
                                   f"{ADDRESS_ENV} at its head (HOST:6379 or ray://HOST:10001).",
                              param="backend") from None


def plan_on_cluster(plan: Any, local_cores: int, environ: dict[str, str] | None = None) -> Any:
    """Before a job exists (prepare, --dry-run too): connect to the cluster, read its nodes'
    resources and what is free, and lay the plan out on them (training/plan.py cluster_layout:
    refused when the workers do not fit). An unreachable cluster is refused with the fix."""
    import ray

    from tuneloop.training.plan import cluster_layout

    address = ray_address(environ)
    reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, namespace="tuneloop")
    except Exception as e:   # ConnectionError, a ray:// server gone, a version mismatch
        raise ValidationError(f"Cannot reach the Ray cluster at {address} ({ADDRESS_ENV}): "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
                              hint="Start it (ray start --head --port 6379) or point "
                                   f"{ADDRESS_ENV} at its head (HOST:6379 or ray://HOST:10001).",
                              param="backend") from None
    try:
        nodes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
        free = dict(ray.available_resources())
    finally:
        ray.shutdown()
    return cluster_layout(plan, nodes, free, address, local_cores)


# ---- what runs on the cluster# ---- what runs on the cluster -------------------------------------------------------------------------
def _channel_class():
    import ray

    @ray.remote(num_cpus=0)
    class JobChannel:
        """Rank 0's reports and the driver's cancel request, between the workers and the driver."""

        def __init__(self) -> None:
            self.calls: list[tuple[str, tuple, dict]] = []
            self.cancel = False
            self.result: dict[str, Any] | None = None

        def put(self, call: tuple[str, tuple, dict]) -> None:
            self.calls.append(call)

        def drain(self) -> list[tuple[str, tuple, dict]]:
            out, self.calls = self.calls, []
            return out

        def set_cancel(self) -> None:
            self.cancel = True

        def cancel_requested(self) -> bool:
            return self.cancel

        def set_result(self, result: dict[str, Any]) -> None:
            self.result = result

        def get_result(self) -> dict[str, Any] | None:
            return self.result

    return JobChannel


class ChannelStore:
    """Rank 0's store on a Ray worker: the three calls a recipe makes, through the channel."""

    def __init__(self, channel: Any):
        self.channel = channel

    def add_event(self, job_id: str, message: str, **kwargs: Any) -> None:
        self.channel.put.remote(("add_event", (job_id, message), kwargs))

    def update_job(self, job_id: str, **values: Any) -> None:
        self.channel.put.remote(("update_job", (job_id,), values))

    def get_job(self, job_id: str) -> dict[str, Any]:
        import ray

        return {"id": job_id, "cancel_requested": bool(ray.get(self.channel.cancel_requested.remote()))}


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the job's recipe on this rank (rank 0 reports through the channel)."""
    import ray.train

    from tuneloop.service.launch import run_rank
    from tuneloop.tracking import NoTracker

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rank = ray.train.get_context().get_world_rank()
    channel = config["channel"]
    result = run_rank(config["launch"], rank, ChannelStore(channel) if rank == 0 else None, NoTracker())
    if rank == 0:
        ray.get(channel.set_result.remote({"cancelled": True} if result is None else {
            "cancelled": False, "output_dir": str(result.output_dir), "output_type": result.output_type,
            "metrics": result.metrics}))


# ---- the driver (the runner's process) ------------------------------------------------------------
class _Pump(threading.Thread):
    """Writes rank 0's queued calls into the store (metrics to the tracker too) and hands the job's
    cancel request to the channel, every PUMP_S until stopped."""

    ALLOWED = ("add_event", "update_job")

    def __init__(self, store: Any, job_id: str, channel: Any, tracker: Any):
        super().__init__(daemon=True)
        self.store, self.job_id, self.channel, self.tracker = store, job_id, channel, tracker
        self.stopped = threading.Event()
        self.cancel_sent = False

    def run(self) -> None:
        while not self.stopped.wait(PUMP_S):
            try:
                self.once()
            except Exception:   # a slow cluster or a locked database must not stop the job
                log.exception("relaying rank 0's reports failed")

    def once(self) -> None:
        import ray

        for name, args, kwargs in ray.get(self.channel.drain.remote()):
            if name not in self.ALLOWED or not args or args[0] != self.job_id:
                continue
            getattr(self.store, name)(*args, **kwargs)
            data = kwargs.get("data") or {}
            if name == "add_event" and kwargs.get("type") == "metrics" and "step" in data:
                self.tracker.log_metrics(int(data["step"]), {k: v for k, v in data.items() if k != "step"})
        if not self.cancel_sent:
            job = self.store.get_job(self.job_id)
            if job and job["cancel_requested"]:
                ray.get(self.channel.set_cancel.remote())
                self.cancel_sent = True


def run_on_ray(store: Any, settings: Any, job: dict[str, Any], plan: Any, launch_path: Path,
               tracker: Any) -> dict[str, Any]:
    """Run the job on the Ray cluster and return rank 0's result ({"cancelled": True} when cancelled)."""
    import json

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from tuneloop.training.distributed import DDP_TIMEOUT_S

    address = ray_address()
    launch = json.loads(launch_path.read_text())
    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    if plan.device == "cpu" and plan.threads:
        env["OMP_NUM_THREADS"] = str(plan.threads)
    from tuneloop.training.plan import ray_worker_resources

    gpu = plan.device == "cuda"
    per_worker = ray_worker_resources(plan)
    started = time.monotonic()
    ray.init(address=address, runtime_env={"env_vars": env}, namespace="tuneloop", log_to_driver=True,
             logging_level=logging.WARNING)
    try:
        store.add_event(job["id"], f"connected to the Ray cluster at {address} in "
                                   f"{time.monotonic() - started:.1f} s; starting {plan.num_processes} Ray Train "
                                   f"worker{'s' if plan.num_processes != 1 else ''} ({per_worker})",
                        data={"backend": "ray", "address": address, "num_workers": plan.num_processes,
                              "resources_per_worker": per_worker})
        channel = _channel_class().remote()
        pump = _Pump(store, job["id"], channel, tracker)
        pump.start()
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"launch": launch, "channel": channel},
            torch_config=TorchConfig(backend="nccl" if gpu else "gloo", timeout_s=DDP_TIMEOUT_S),
            scaling_config=ScalingConfig(num_workers=plan.num_processes, use_gpu=gpu, resources_per_worker=per_worker),
            run_config=RunConfig(name=f"{job['id']}-{uuid.uuid4().hex[:8]}",
                                 storage_path=str(Path(job["job_dir"]) / "ray"),
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES)),
        )
        try:
            trainer.fit()
        finally:
            pump.stopped.set()
            pump.join(timeout=10)
            try:
                pump.once()     # what rank 0 queued last
            except Exception:
                log.exception("relaying rank 0's last reports failed")
        result = ray.get(channel.get_result.remote())
        if result is None:
            raise RuntimeError("the Ray Train run ended without rank 0's result")
        return result
    finally:
        ray.shutdown()
