"""Submitting and tracking jobs: the seed's order of checks, idempotency per technique, runner
processes, staleness (kill -9) detection and resume, cancel, and the per-project config state.

Edges (CLI, SDK) build a `TuneRequest`, call `prepare` then `submit`, and render the outcome.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneloop.catalog import RL_TECHNIQUES, TECHNIQUES, normalize_technique, normalize_training_type
from tuneloop.data.lengths import token_stats
from tuneloop.data.stage import StageResult, stage_dataset
from tuneloop.errors import ConflictError, JobFailedError, NotFoundError, ValidationError
from tuneloop.processes import pid_alive
from tuneloop.models.resolve import ModelLookups, ModelRef, resolve
from tuneloop.models.shape import model_shape
from tuneloop.service.models import check_generic, model_defaults, store_lookups
from tuneloop.settings import Settings, resolve_project
from tuneloop.spec import (JobSpec, TuneRequest, check_hyperparameters, resolve_hyperparameters, spec_record,
                           write_spec_file)
from tuneloop.store.repo import ACTIVE_STATES, Store, age_seconds
from tuneloop.training.plan import Hardware, Plan, describe_layout, detect_hardware, make_plan, relayout

STALE_AFTER_S = 60.0          # a running job whose heartbeat is older than this is dead
QUEUED_GRACE_S = 30.0         # a queued job whose runner never claimed it within this is relaunched
MAX_RESTARTS = 3
RESTART_GRACE_S = 45.0        # after a restart, give the new runner this long to claim the job
RESTART_EVENT = "runner process is gone; restarting from the last checkpoint"


# TuneRequest (what the edges build) is declared in tuneloop.spec beside the JobSpec it resolves into.


@dataclass
class Prepared:
    spec: JobSpec
    model: ModelRef
    staged: StageResult
    plan: Plan
    notes: list[str]
    validation: StageResult | None = None
    validation_split: float | None = None


@dataclass
class Outcome:
    kind: str                      # submitted | following | completed | dry_run | joined (a node > 0 of --nodes)
    job: dict[str, Any] | None
    plan: Plan | None = None
    spec: JobSpec | None = None
    notes: list[str] = field(default_factory=list)


def dataset_slug(source: str) -> str:
    """Name or file stem, lower case, [a-z0-9-], at most 20 characters (the seed's slug)."""
    base = source.split("?", 1)[0].rstrip("/")
    stem = base.rsplit("/", 1)[-1]
    for ext in (".gz", ".zst", ".jsonl", ".json", ".parquet", ".csv"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", stem.lower())).strip("-")
    return slug[:20].strip("-") or "dataset"


def _key(technique: str) -> str:
    return technique.upper()


class JobService:
    """The one service the CLI, the SDK and the API call."""

    def __init__(self, store: Store, settings: Settings, hardware: Hardware | None = None):
        self.store = store
        self.settings = settings
        self._hardware = hardware

    @property
    def hardware(self) -> Hardware:
        if self._hardware is None:
            self._hardware = detect_hardware()
        return self._hardware

    # ---- submission -------------------------------------------------------------------------
    def prepare(self, req: TuneRequest, *, dry_run: bool = False) -> Prepared:
        """Validate everything in the seed's order and stage the data; creates no job. A dry run
        checks the rewards' references but runs none of them."""
        project = resolve_project(req.project)
        technique = normalize_technique(req.technique)
        training_type = normalize_training_type(req.training_type)
        model = resolve(req.model, technique=technique, training_type=training_type, project=project,
                        lookups=self.model_lookups(), models_dir=self.settings.models_dir)
        check_generic(model, technique)
        notes = list(model.notes)
        rl = technique in RL_TECHNIQUES
        if rl:
            _check_reward_flags(technique, req)
        if model.entry is not None and model.entry.gated and not req.accept_eula:
            raise ValidationError(
                f'Model "{model.id}" is gated: its licence must be accepted before tuning.',
                hint="Read the model's licence on its Hugging Face page, then re-run with --accept-eula.",
                param="accept_eula")
        overrides = check_hyperparameters(req.hyperparameters, training_type, technique)
        mlflow_uri = req.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        if mlflow_uri is None and (req.mlflow_experiment or req.mlflow_run_name):
            raise ValidationError("--mlflow-experiment / --mlflow-run-name need an MLflow tracking server.",
                                  hint="Pass --mlflow-uri URI or set MLFLOW_TRACKING_URI.", param="mlflow_uri")
        seed = resolve_hyperparameters(technique, training_type, model_defaults(model, technique, training_type),
                                       overrides)["seed"]   # the planner's seed splits the validation rows too
        staging = self.settings.home / "staging" / uuid.uuid4().hex
        try:
            staged, validation = self._stage(req, technique, staging, seed)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        judge = None
        if rl:
            judge = req.judge_model or (model.entry.id if model.entry else model.base if model.adapter else model.id)
        spec = JobSpec.from_request(req, project=project, technique=technique, training_type=training_type,
                                    model=model.id, model_source=model.kind, hyperparameters=overrides,
                                    mlflow_uri=mlflow_uri, allow_row_rewards=list(req.allow_row_rewards),
                                    judge_model=judge, reward_base_dir=str(Path.cwd()) if rl else None)
        from tuneloop.tracking import OFF_MESSAGE

        notes.append(f"ℹ️  MLflow tracking: experiment {req.mlflow_experiment or f'tuneloop-{project}'} at {mlflow_uri}"
                     if mlflow_uri else OFF_MESSAGE)
        if technique == "rlaif" and not req.judge_model:
            notes.append(f"ℹ️  Judge: {spec.judge_model} (the base model; choose another with --judge-model)")
        try:
            if not dry_run:  # a GGUF is converted, a Hub model found in the cache, before any job exists
                model.load_path()
            plan = self.plan_for(spec, model, staged, convert=not dry_run)
            if plan.backend == "ray":   # the cluster's address, ray itself and the room, before any job exists
                from tuneloop.service.ray_backend import check_ray, plan_on_cluster

                notes.append(check_ray())
                plan = plan_on_cluster(plan, self.hardware.cpu_cores)
            if plan.nodes > 1:          # node 0's address and this machine's place, before any job exists
                from tuneloop.service.launch import node_rank, rendezvous

                host, port = rendezvous(plan.nodes)
                rank = node_rank(plan.nodes)
                notes.append(f"ℹ️  Node {rank} of {plan.nodes} (rendezvous at {host}:{port})"
                             + ("; this node owns the job" if rank == 0 else
                                "; node 0 owns the job: this command runs this machine's ranks until the job ends"))
            if rl:
                notes += self.row_reward_notes(spec, staged.path)
                if dry_run:
                    notes += self.check_rewards(spec, plan, staged.path)
                elif not req.skip_reward_validation:
                    notes += self.verify_rewards(spec, plan, staged.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Prepared(spec, model, staged, plan, notes + staged.notes + [f"⚠️  {w}" for w in staged.warnings],
                        validation, req.validation_split)

    def _stage(self, req: TuneRequest, technique: str, staging: Path,
               seed: int) -> tuple[StageResult, StageResult | None]:
        """Stage the training data (and validation data: a second source, or a deterministic
        --validation-split of the first) into `staging`; train.jsonl and validation.jsonl."""
        if req.validation_dataset and req.validation_split:
            raise ValidationError("Pass --validation-dataset or --validation-split, not both.",
                                  param="validation_split")
        if req.validation_split is not None and not 0.0 < req.validation_split < 1.0:
            raise ValidationError(f"--validation-split must be between 0 and 1, got {req.validation_split}.",
                                  hint="Example: --validation-split 0.1 keeps 10% of the rows for validation.",
                                  param="validation_split")
        lookup = self.store.get_dataset_version
        kwargs = dict(column_map=req.column_map, no_transform=req.no_transform, lookup=lookup,
                      reward_model=req.reward_function if technique == "rlvr" else
                      req.reward_prompt if technique == "rlaif" else None,
                      reward_check=self.row_reward_policy(req) if technique in RL_TECHNIQUES else None)
        staged = stage_dataset(req.dataset, technique, staging / "train.jsonl", take=req.take, **kwargs)
        validation = None
        if req.validation_dataset:
            validation = stage_dataset(req.validation_dataset, technique, staging / "validation.jsonl", **kwargs)
        elif req.validation_split:
            from tuneloop.data.stage import split_staged

            full = staging / "all.jsonl"
            staged.path.rename(full)
            train, validation = split_staged(full, 1.0 - req.validation_split, seed,
                                             staging / "train.jsonl", staging / "validation.jsonl",
                                             staged.columns, staged.format)
            full.unlink()
            staged.path, staged.rows, staged.sha256 = train.path, train.rows, train.sha256
            staged.notes = staged.notes + [f"ℹ️  Validation split: {validation.rows} of {train.rows + validation.rows} "
                                           f"rows held out (seed {seed})"]
        return staged, validation

    def plan_for(self, spec: JobSpec, model: ModelRef, staged: StageResult, convert: bool = True) -> Plan:
        """The planner on a prepared job's model and staged data (the API re-plans a scaled learning rate)."""
        folder = model.local_folder(convert=convert)   # a dry run plans a GGUF from its header
        parameters = model.entry.parameters if model.entry else 0
        shape = model_shape(folder, parameters, gguf=model.gguf)
        return make_plan(technique=spec.technique, training_type=spec.training_type, shape=shape,
                         data=token_stats(staged.path, spec.technique, folder), hw=self.hardware,
                         defaults=model_defaults(model, spec.technique, spec.training_type),
                         overrides=spec.hyperparameters)

    def model_lookups(self) -> ModelLookups:
        """Jobs, registered versions and deployed names for the model resolver (`--model sft`)."""
        return store_lookups(self.store)

    def row_reward_policy(self, req: TuneRequest):
        """What a row's reward_model may name in this job (tuneloop.rewards.policy)."""
        from tuneloop.rewards.functions import RefError, parse_ref
        from tuneloop.rewards.policy import RowRewardPolicy

        for ref in req.allow_row_rewards:
            try:
                parse_ref(ref)
            except RefError as e:
                raise ValidationError(f"--allow-row-rewards {ref!r}: {e}", param="allow_row_rewards") from None
        names = {row["name"] for row in self.store.evaluators.list()}
        return RowRewardPolicy.for_job(flags=[req.reward_function, req.reward_prompt],
                                       allowed=req.allow_row_rewards, evaluators=names)

    def row_reward_notes(self, spec: JobSpec, staged_path: Path) -> list[str]:
        """One line per reward the rows chose instead of the job's, with its row count."""
        from tuneloop.rewards.verify import rewards_in

        default = spec.reward_function if spec.technique == "rlvr" else spec.reward_prompt
        flag = "--reward-function" if spec.technique == "rlvr" else "--reward-prompt"
        notes = [f"ℹ️  Row rewards: {n} row{'s' if n != 1 else ''} use {ref}"
                 + (f" instead of {flag} {default}" if default else "")
                 for ref, n in sorted(rewards_in(staged_path).items()) if ref != default]
        if spec.allow_row_rewards:
            notes.append("ℹ️  Rows may also name: " + ", ".join(spec.allow_row_rewards) + " (--allow-row-rewards)")
        return notes

    def reward_context(self, spec: JobSpec, plan: Plan, **kwargs: Any):
        from tuneloop.rewards.functions import RewardContext

        return RewardContext(base_dir=spec.reward_base_dir, judge_model=spec.judge_model,
                             evaluator_lookup=self.store.get_evaluator_version, models_dir=self.settings.models_dir,
                             timeout_s=plan.reward_timeout_s or 10.0, unsafe_sandbox=spec.unsafe_reward_sandbox,
                             **kwargs)

    def check_rewards(self, spec: JobSpec, plan: Plan, staged_path: Path) -> list[str]:
        """--dry-run: every distinct reward of the rows resolves (files found, grader JSON parsed,
        URLs resolved and checked), none is run."""
        from tuneloop.rewards.functions import RefError
        from tuneloop.rewards.verify import rewards_in

        refs = sorted(rewards_in(staged_path))
        with self.reward_context(spec, plan, load_local_judges=False) as ctx:
            for ref in refs:
                try:
                    ctx.check(ref)
                except RefError as e:
                    raise ValidationError(f"Reward {ref!r} cannot be used: {e}", param="reward_function") from None
        return [f"ℹ️  Rewards checked, not run (dry run): {', '.join(refs)}"]

    def verify_rewards(self, spec: JobSpec, plan: Plan, staged_path: Path) -> list[str]:
        """Run each distinct reward of the staged rows on a few of them (SageMaker verifies reward
        functions before submitting); a broken one is a ValidationError: nothing is created."""
        from tuneloop.rewards.verify import failure_details, rows_by_reward, verify_rows

        rows = rows_by_reward(staged_path, per_reward=4)
        with self.reward_context(spec, plan, load_local_judges=False) as ctx:
            reports = verify_rows(ctx, rows, samples=4)
        bad = [r for r in reports if not r.ok]
        if bad:
            flag = "--reward-function" if spec.technique == "rlvr" else "--reward-prompt"
            raise ValidationError(
                f"Reward verification failed before submission: {', '.join(r.name for r in bad)} "
                f"{'does' if len(bad) == 1 else 'do'} not return a score on sample rows.",
                details=failure_details(bad),
                hint=f"Fix the reward ({flag} or the rows' reward_model), check it with:\n  tuneloop evaluators "
                     f"verify {shlex.quote(bad[0].ref)} --dataset {shlex.quote(spec.dataset)}\nor skip this check with "
                     "--skip-reward-validation.", param="reward_function")
        checked = ", ".join(f"{r.name} ({sum(1 for x in r.results if x.score.ok)} scored)" for r in reports)
        return [f"ℹ️  Rewards verified on sample rows: {checked}"]

    def submit(self, prep: Prepared, *, force: bool = False, dry_run: bool = False, launch: bool = True) -> Outcome:
        """Idempotency per technique, then create and start the job (unless dry_run)."""
        spec = prep.spec
        staging = prep.staged.path.parent
        if prep.plan.nodes > 1 and not dry_run:
            from tuneloop.service.launch import node_rank

            rank = node_rank(prep.plan.nodes)
            if rank > 0:
                return self.join(prep, rank)
        try:
            if not force:
                existing = self.store.latest_job(spec.project, spec.technique)
                if existing is not None:
                    return self._existing(existing, prep, dry_run)
            if dry_run:
                return Outcome("dry_run", None, prep.plan, spec, prep.notes)
            if force:
                self._supersede_active(spec.project, spec.technique)
            job = self._create(prep, staging)
            if job is None:  # lost a race: another submission of this technique won
                winner = self.store.latest_job(spec.project, spec.technique)
                return Outcome("following", winner, prep.plan, spec, prep.notes + ["another submission created this job"])
            if launch:
                self.launch(job["id"])
            return Outcome("submitted", job, prep.plan, spec, prep.notes)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _existing(self, job: dict[str, Any], prep: Prepared, dry_run: bool) -> Outcome:
        notes = list(prep.notes)
        if job["dataset"] != prep.spec.dataset or job["model"] != prep.spec.model:
            notes.append(f"ℹ️  The tracked {job['technique']} job {job['id']} was run on {job['model']} with "
                         f"{job['dataset']}; pass --force to start a new job with this model and dataset.")
        if job["state"] in ACTIVE_STATES:
            moved = self.relayout(job, prep.plan, dry_run=dry_run)
            if moved:
                notes.append(moved)
            if not dry_run:
                job = self.recover(self.get(job["id"]))
            return Outcome("following", job, prep.plan, prep.spec, notes)
        if job["state"] == "completed":
            return Outcome("completed", job, prep.plan, prep.spec, notes)
        raise JobFailedError(
            f"The last {job['technique']} job {job['id']} {job['state']}: {job['error'] or 'no reason recorded'}",
            hint=f"Fix the cause, then start a new job with --force:\n  tuneloop tune --technique "
                 f"{job['technique']} --dataset {shlex.quote(prep.spec.dataset)} --force")

    def relayout(self, job: dict[str, Any], plan: Plan, *, dry_run: bool = False) -> str | None:
        """A re-run of an active job's `tune` command with another --num-processes / --backend: a
        stale job (its processes gone; about to be resumed) takes the new layout at the same global
        batch and resumes its checkpoint on it (training/plan.py relayout; refused when the batch
        cannot stay the same); a job whose runner is alive keeps its layout. The note to print, or
        None when the layout did not change."""
        old = Plan(**job["plan"])
        new = relayout(old, plan, job["id"])
        if new is None:
            return None
        was, now = describe_layout(old), describe_layout(new)
        if not self.is_stale(job):
            return (f"ℹ️  Job {job['id']} is running on {was} and keeps that layout; re-run this command after it "
                    f"stops to resume it on {now}.")
        message = (f"layout changed on resume: {was} -> {now}, the same global batch {new.global_batch} "
                   f"({new.per_device_batch} per device x {new.grad_accum} accumulation x {new.world_size}); "
                   "training goes on from the last checkpoint")
        if dry_run:
            return f"ℹ️  Job {job['id']} would resume on {now} (it ran on {was}) at its global batch {new.global_batch}."
        self.store.update_job(job["id"], plan=new.to_dict())
        (Path(job["job_dir"]) / "plan.json").write_text(json.dumps(new.to_dict(), indent=2) + "\n")
        self.store.add_event(job["id"], message, level="warn",
                             data={"from": {f: getattr(old, f) for f in ("num_processes", "backend", "per_device_batch",
                                                                         "grad_accum", "threads")},
                                   "to": {f: getattr(new, f) for f in ("num_processes", "backend", "per_device_batch",
                                                                       "grad_accum", "threads")}})
        return f"ℹ️  Job {job['id']}: {message}."

    def join(self, prep: Prepared, rank: int) -> Outcome:
        """Node `rank` (> 0) of a job on several machines (`--nodes`): no job here (node 0's runner
        owns its record, events and output); this process runs this machine's ranks, joined to node
        0's rendezvous, on the same staged data and plan, in a folder of its own under
        TUNELOOP_HOME/nodes, and returns when they have exited."""
        from tuneloop.service.launch import ProcessesLost, launch_file, run_node

        spec = prep.spec
        staging = prep.staged.path.parent
        folder = self.settings.home / "nodes" / f"{spec.project}-{spec.technique}-node{rank}-{uuid.uuid4().hex[:8]}"
        try:
            (folder / "data").mkdir(parents=True, exist_ok=True)
            for f in staging.glob("*.jsonl"):
                shutil.move(str(f), folder / "data" / f.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        job = dict(id=folder.name, project=spec.project, technique=spec.technique, training_type=spec.training_type,
                   model=spec.model, dataset=spec.dataset, spec=spec_record(spec, _dataset_record(prep)),
                   plan=prep.plan.to_dict(), job_dir=str(folder), dataset_sha256=prep.staged.sha256,
                   dataset_rows=prep.staged.rows)
        model = prep.model
        path = launch_file(job, model_dir=model.adapter or model.load_path(), lora_targets=model.lora_targets,
                           models_dir=self.settings.models_dir)
        try:
            run_node(job, prep.plan, path, rank)
        except (ProcessesLost, RuntimeError) as e:
            raise JobFailedError(f"Node {rank}'s ranks stopped: {e}",
                                 hint="Node 0's `tuneloop status` says what happened to the job; its logs: "
                                      f"{folder / 'launch' / 'logs'}") from None
        return Outcome("joined", None, prep.plan, spec, prep.notes + [f"✅ Node {rank}'s ranks finished ({folder})"])

    def create_api_job(self, prep: Prepared, name: str) -> dict[str, Any]:
        """A queued job named `name` for the fine-tuning API: any number may be active per technique
        (no idempotency per technique: the API's own Idempotency-Key is its), the project's config
        state is left to `tune`, and no runner starts here (`tuneloop serve --workers` starts it)."""
        staging = prep.staged.path.parent
        try:
            job = self._create(prep, staging, name=name, active_key=None)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if job is None:
            raise ConflictError(f"A job named {name} exists already.", hint="Retry the request.")
        return job

    def _create(self, prep: Prepared, staging: Path, name: str | None = None,
                active_key: str | None | bool = True) -> dict[str, Any] | None:
        spec = prep.spec
        if name is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            base = f"{spec.project}-tune-{spec.technique}-{stamp}"
            name = base
            n = 1
            while self.store.get_job(name) is not None:
                n += 1
                name = f"{base}-{n}"
        job_dir = self.settings.jobs_dir(spec.project) / name
        (job_dir / "data").mkdir(parents=True, exist_ok=True)
        for f in staging.glob("*.jsonl"):
            shutil.move(str(f), job_dir / "data" / f.name)
        (job_dir / "plan.json").write_text(json.dumps(prep.plan.to_dict(), indent=2) + "\n")
        spec_dict = spec_record(spec, _dataset_record(prep))
        write_spec_file(job_dir / "spec.json", spec_dict)
        row = dict(id=name, project=spec.project, technique=spec.technique, training_type=spec.training_type,
                   model=spec.model, dataset=spec.dataset, spec=spec_dict,
                   plan=prep.plan.to_dict(), job_dir=str(job_dir), dataset_sha256=prep.staged.sha256,
                   dataset_rows=prep.staged.rows, total_steps=prep.plan.total_steps)
        if active_key is not True:
            row["active_key"] = active_key
        if not self.store.insert_job(row):
            shutil.rmtree(job_dir, ignore_errors=True)
            return None
        if active_key is not True:   # an API job: the per-technique config state stays the CLI's
            self.store.add_event(name, f"job created: {spec.technique} {spec.training_type} on {spec.model}, "
                                       f"{prep.staged.rows} rows ({prep.staged.sha256[:12]})")
            return self.store.get_job(name)
        slug = dataset_slug(spec.dataset)
        t = _key(spec.technique)
        self.store.set_config(spec.project, {
            f"TUNE_JOB_NAME_{t}": name, "TUNE_TECHNIQUE": spec.technique, "TUNE_TRAINING_TYPE": spec.training_type,
            f"TUNE_DATASET_{t}": spec.dataset, f"TUNE_DATASET_SLUG_{t}": slug, "TUNE_LAST_JOB_NAME": name,
            "TUNE_MODEL_ID": spec.model})
        version = f" {prep.staged.dataset_version}" if prep.staged.dataset_version else ""
        self.store.add_event(name, f"job created: {spec.technique} {spec.training_type} on {spec.model}, "
                                   f"{prep.staged.rows} rows{version} ({prep.staged.sha256[:12]})")
        return self.store.get_job(name)

    def _supersede_active(self, project: str, technique: str) -> None:
        job = self.store.latest_job(project, technique)
        if job and job["state"] in ACTIVE_STATES:
            self.store.update_job(job["id"], state="cancelled", cancel_requested=True,
                                  error="superseded by a --force submission")
            self.store.add_event(job["id"], "cancelled: superseded by a --force submission", level="warn")

    # ---- processes --------------------------------------------------------------------------
    def launch(self, job_id: str, expect_pid: int | None = None) -> int:
        """Start the runner detached in its own session; it outlives the CLI."""
        job = self.store.get_job(job_id)
        log_path = Path(job["job_dir"]) / "runner.log"
        cmd = [sys.executable, "-m", "tuneloop.service.runner", job_id]
        if expect_pid is not None:
            cmd += ["--expect-pid", str(expect_pid)]
        env = {**os.environ, "TUNELOOP_HOME": str(self.settings.home),
               "TUNELOOP_DATABASE_URL": self.settings.database_url,
               "TUNELOOP_MODELS_DIR": str(self.settings.models_dir)}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, close_fds=True)
        return proc.pid

    def recover(self, job: dict[str, Any]) -> dict[str, Any]:
        """Restart the runner of a stale job (it resumes from its last checkpoint); after
        MAX_RESTARTS restarts, fail the job with the end of its runner log instead of looping."""
        if not self.is_stale(job):
            return job
        restart_events = [e for e in self.store.list_events(job["id"]) if e["message"] == RESTART_EVENT]
        if restart_events and age_seconds(restart_events[-1]["created_at"]) < RESTART_GRACE_S:
            return job  # a restarted runner is still starting (imports take seconds)
        restarts = len(restart_events)
        if restarts >= MAX_RESTARTS:
            log = Path(job["job_dir"]) / "runner.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            self.store.update_job(job["id"], state="failed",
                                  error=f"the runner process died {restarts + 1} times; last lines of {log}: "
                                        + " | ".join(tail))
            self.store.add_event(job["id"], "job failed: its runner keeps dying", level="error")
        else:
            self.store.add_event(job["id"], RESTART_EVENT, level="warn")
            self.launch(job["id"], expect_pid=job["pid"])
        return self.get(job["id"])

    def is_stale(self, job: dict[str, Any]) -> bool:
        """True when the job is active but no runner is alive to advance it."""
        if job["state"] == "queued":
            age = age_seconds(job["created_at"])
            return job["pid"] is None and age is not None and age > QUEUED_GRACE_S
        if job["state"] != "running":
            return False
        if job["host"] == socket.gethostname() and job["pid"] and not pid_alive(job["pid"]):
            return True
        age = age_seconds(job["heartbeat_at"])
        return age is None or age > STALE_AFTER_S

    # ---- queries and control ----------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"No job named {job_id!r}.", hint="List jobs with: tuneloop status", param="job")
        return job

    def resolve_job(self, ref: str | None, project: str | None) -> dict[str, Any]:
        """A job name, a technique (its latest job in the project), or the project's last job."""
        project = resolve_project(project)
        if ref and ref.lower() in TECHNIQUES:
            job = self.store.latest_job(project, ref.lower())
        elif ref:
            return self.get(ref)
        else:
            found = self.store.find_jobs(project, limit=1)
            job = found[0] if found else None
        if job is None:
            raise NotFoundError(f"No {ref or ''} job in project {project!r}.".replace("  ", " "),
                                hint="Start one with: tuneloop tune --technique sft --dataset FILE")
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["state"] not in ACTIVE_STATES:
            return job
        self.store.update_job(job_id, cancel_requested=True)
        if job["state"] == "queued" or self.is_stale(job):
            self.store.update_job(job_id, state="cancelled", error="cancelled by user")
        self.store.add_event(job_id, "cancel requested by user", level="warn")
        return self.get(job_id)


def _check_reward_flags(technique: str, req: TuneRequest) -> None:
    if technique == "rlvr" and req.reward_prompt and not req.reward_function:
        raise ValidationError("--reward-prompt is for rlaif (an LLM judge); rlvr takes --reward-function.",
                              hint="Use --technique rlaif --reward-prompt ..., or --reward-function REF for rlvr.",
                              param="reward_prompt")
    if technique == "rlaif" and req.reward_function and not req.reward_prompt:
        raise ValidationError("--reward-function is for rlvr; rlaif takes --reward-prompt (and --judge-model).",
                              hint="Use --technique rlvr --reward-function ..., or --reward-prompt REF for rlaif.",
                              param="reward_function")


def _dataset_record(prep: Prepared) -> dict[str, Any]:
    """What the job trained on, exactly: kept in the job's spec (row and spec.json, then the manifest)."""
    out: dict[str, Any] = {"dataset_version": prep.staged.dataset_version, "dataset_sha256": prep.staged.sha256,
                           "dataset_rows": prep.staged.rows, "dataset_format": prep.staged.format,
                           "validation_split": prep.validation_split}
    if prep.validation is not None:
        out.update(validation_sha256=prep.validation.sha256, validation_rows=prep.validation.rows,
                   validation_dataset_version=prep.validation.dataset_version)
    return {k: v for k, v in out.items() if v is not None}

