"""The OpenAI fine-tuning API over the job service: files, `fine_tuning.job`s, their events and
checkpoints, the `ft:` models they make, and the workers that start queued jobs.

    svc = FineTuningService(store, settings, jobs)
    f = svc.files.upload("team-a", "train.jsonl", "fine-tune", stream)      # FileObject dict
    job = svc.create("team-a", {"model": "tuneloop/tiny-qwen3", "training_file": f["id"]})
    svc.dispatch(workers=1)          # `tuneloop serve --workers N` calls this every second

A job is a tuneloop job whose id is the `ftjob-...` id (same runner, resume, registry); its
`fine_tuning_jobs` record keeps what the API was asked (method, suffix, metadata, files) and a
failure found while validating the files, when no tuneloop job was made. Objects are shaped as
the official client's types (openai-python `types/fine_tuning`, `types/file_object.py`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable

from tuneloop.errors import DatasetError, NotFoundError, RequestTooLargeError, TuneloopError, ValidationError
from tuneloop.service.server_paths import MODEL_HINT, refuse_server_path
from tuneloop.settings import Settings
from tuneloop.spec import TuneRequest, check_hyperparameters
from tuneloop.store.db import utcnow
from tuneloop.store.repo import API_JOB_PREFIX, Store

FT_PREFIX = API_JOB_PREFIX
FT_MODEL_PREFIX = "ft:"                       # the models the jobs make: ft:BASE:PROJECT:SUFFIX:ID[:ckpt-step-N]
FILE_PURPOSES = ("fine-tune",)
DEFAULT_MAX_UPLOAD_BYTES = 1024 ** 3          # 1 GiB; TUNELOOP_MAX_UPLOAD_BYTES changes it
CHECKED_LINES = 100                           # lines parsed at upload; all of them when a job validates it
METHODS = {"supervised": "sft", "dpo": "dpo", "reinforcement": "rlvr"}
# OpenAI's hyperparameter -> tuneloop's knob (learning_rate_multiplier scales the planner's learning rate)
KNOBS = {"n_epochs": "max_epochs", "batch_size": "global_batch_size", "beta": "beta"}
OPENAI_ONLY = ("compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort")  # only "auto" here
STATUS = {"queued": "queued", "running": "running", "completed": "succeeded", "failed": "failed",
          "cancelled": "cancelled"}


def _unix(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.replace(tzinfo=timezone.utc).timestamp())


def max_upload_bytes() -> int:
    return int(os.environ.get("TUNELOOP_MAX_UPLOAD_BYTES") or DEFAULT_MAX_UPLOAD_BYTES)


# ---- files -----------------------------------------------------------------------------------------------
class FileService:
    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings

    def folder(self, project: str) -> Path:
        return self.settings.home / "files" / project

    def receive(self, project: str) -> "Upload":
        """Where an upload's bytes go while they arrive (api/uploads.py writes them)."""
        return Upload(self.folder(project), max_upload_bytes())

    def create(self, project: str, upload: "Upload", filename: str, purpose: str) -> dict[str, Any]:
        """Record an upload the HTTP edge has written: the purpose, JSON lines (the first ones) checked."""
        try:
            if purpose not in FILE_PURPOSES:
                raise ValidationError(f"purpose {purpose!r} is not served here; this server takes "
                                      f"{', '.join(FILE_PURPOSES)} files.", param="purpose",
                                      hint='Upload training data with purpose="fine-tune".')
            if upload.size == 0:
                raise ValidationError(f"{filename} is empty.", param="file", hint="Upload a JSONL file, one JSON "
                                      "object per line.")
            lines = check_jsonl_head(upload.path, filename)
            file_id = "file-" + uuid.uuid4().hex[:24]
            final = upload.path.with_name(file_id + ".jsonl")
            upload.path.replace(final)
        except BaseException:
            upload.discard()
            raise
        row = self.store.finetuning.add_file(dict(id=file_id, project=project, filename=filename[:255],
                                                  purpose=purpose, bytes=upload.size, sha256=upload.sha256,
                                                  lines=lines, path=str(final)))
        return file_object(row)

    def get(self, project: str, file_id: str) -> dict[str, Any]:
        row = self.store.finetuning.get_file(project, file_id)
        if row is None:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id",
                                hint="List your files with client.files.list().")
        return row

    def list(self, project: str, purpose: str | None, after: str | None, limit: int, order: str) -> dict[str, Any]:
        rows = self.store.finetuning.list_files(project, purpose, after, limit + 1, newest_first=order != "asc")
        return page([file_object(r) for r in rows[:limit]], len(rows) > limit)

    def delete(self, project: str, file_id: str) -> dict[str, Any]:
        row = self.get(project, file_id)
        self.store.finetuning.delete_file(project, file_id)
        Path(row["path"]).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}


class Upload:
    """An upload being written to disk: bounded, hashed as it arrives, never held in memory."""

    def __init__(self, folder: Path, limit: int):
        import hashlib

        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f".upload-{uuid.uuid4().hex}"
        self.limit, self.size = limit, 0
        self._hash = hashlib.sha256()
        self._out: BinaryIO | None = open(self.path, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise RequestTooLargeError(f"The file is larger than this server's upload limit of {self.limit} bytes.",
                                       param="file", hint="Split the file, or raise TUNELOOP_MAX_UPLOAD_BYTES "
                                       "where the server runs.")
        self._hash.update(chunk)
        self._out.write(chunk)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def check_jsonl_head(path: Path, filename: str) -> int:
    """The first CHECKED_LINES lines are JSON objects (the rest is checked when a job validates the
    file); returns the number of lines."""
    n = checked = 0
    with open(path, "rb") as f:
        for raw in f:
            n += 1
            if checked >= CHECKED_LINES or not raw.strip():
                continue
            checked += 1
            try:
                value = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise ValidationError(f"{filename} is not JSONL: line {n} is not JSON ({e}).", param="file",
                                      hint="Upload one JSON object per line (JSON Lines), e.g. "
                                           '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}.') \
                    from None
            if not isinstance(value, dict):
                raise ValidationError(f"{filename} is not JSONL of objects: line {n} is a {type(value).__name__}.",
                                      param="file", hint="Each line must be one JSON object.")
    return n


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": _unix(row["created_at"]),
            "filename": row["filename"], "purpose": row["purpose"], "status": "processed", "expires_at": None,
            "status_details": None}


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


# ---- jobs ------------------------------------------------------------------------------------------------
class FineTuningService:
    def __init__(self, store: Store, settings: Settings, jobs):
        self.store, self.settings, self.jobs = store, settings, jobs
        self.files = FileService(store, settings)
        self._launched: dict[str, float] = {}

    # ---- create -----------------------------------------------------------------------------------------
    def create(self, project: str, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """A job from OpenAI's create body. What is wrong with the request is a 400 and creates
        nothing; what is wrong inside the files fails the job in validating_files, as OpenAI's does."""
        if idempotency_key:
            found = self.store.finetuning.by_idempotency_key(project, idempotency_key[:128])
            if found is not None:
                return self.retrieve(project, found["id"])
        method = parse_method(body)
        technique, overrides, multiplier, grader = method["technique"], method["overrides"], method["lr"], \
            method["grader"]
        model = _text(body, "model", required=True)
        training = self.files.get(project, _text(body, "training_file", required=True))
        validation_id = _text(body, "validation_file")
        validation = self.files.get(project, validation_id) if validation_id else None
        suffix = _text(body, "suffix")
        if suffix is not None and (len(suffix) > 64 or not suffix.replace("-", "").replace("_", "").isalnum()):
            raise ValidationError("suffix must be at most 64 letters, digits, '-' or '_'.", param="suffix")
        seed = body.get("seed")
        if seed is not None:
            if type(seed) is not int:
                raise ValidationError("seed must be an integer.", param="seed")
            overrides["seed"] = seed
        metadata = _metadata(body.get("metadata"))
        mlflow = _integrations(body.get("integrations"))
        job_id = FT_PREFIX + uuid.uuid4().hex[:24]
        base = self._base_model(project, model)
        request = TuneRequest(technique=technique, training_type="lora", dataset=training["path"], model=base,
                              project=project, hyperparameters=overrides, validation_dataset=
                              validation["path"] if validation else None, reward_function=grader,
                              skip_reward_validation=False, **mlflow)
        record = dict(id=job_id, project=project, status="validating_files", model=model,
                      training_file=training["id"], validation_file=validation_id, method=method["echo"],
                      suffix=suffix, seed=seed, metadata=metadata, idempotency_key=(idempotency_key or None) and
                      idempotency_key[:128],
                      fine_tuned_model=f"ft:{model}:{project}:{suffix or ''}:{job_id[len(FT_PREFIX):][:8]}")
        if self.store.finetuning.add_job(record) is None:     # a retry of this idempotency key won the race
            return self.retrieve(project, self.store.finetuning.by_idempotency_key(project, idempotency_key)["id"])
        try:
            prep = self.jobs.prepare(request)
            if multiplier is not None:   # the planner's learning rate, scaled
                spec = replace(prep.spec, hyperparameters={**prep.spec.hyperparameters,
                                                           "learning_rate": prep.plan.learning_rate * multiplier})
                prep.spec, prep.plan = spec, self.jobs.plan_for(spec, prep.model, prep.staged)
        except DatasetError as e:          # the file's content: the job fails, its message says where
            message = e.render()
            for f in (training, validation):   # name the uploaded file, not where this server keeps it
                if f is not None:
                    message = message.replace(f["path"], f"{f['id']} ({f['filename']})")
            which = "validation_file" if validation is not None and validation["path"] in e.render() else \
                "training_file"
            self.store.finetuning.update_job(job_id, status="failed", finished_at=utcnow(), error={
                "code": f"invalid_{which}", "message": message, "param": which})
            return self.retrieve(project, job_id)
        except BaseException as e:         # the request: nothing is left behind
            self.store.finetuning.delete_job(job_id)
            if isinstance(e, TuneloopError) and e.param in ("dataset", "validation_dataset"):
                e.param = "training_file" if e.param == "dataset" else "validation_file"
            elif isinstance(e, TuneloopError) and e.param in ("reward_function", "reward_prompt"):
                e.param = "method.reinforcement.grader"
            raise
        try:
            self.jobs.create_api_job(prep, job_id)
        except BaseException:
            self.store.finetuning.delete_job(job_id)
            raise
        self.store.finetuning.update_job(job_id, status="submitted")
        self.store.add_event(job_id, "Validating training file: done; job queued" +
                             (f" (n_epochs {prep.plan.epochs}, batch_size {prep.plan.global_batch}, learning rate "
                              f"{prep.plan.learning_rate:g})"))
        return self.retrieve(project, job_id)

    def _base_model(self, project: str, model: str) -> str:
        """`model` as the resolver takes it: an `ft:` model of this project continues from its output.
        A request comes from a key holder, not from this machine's user: it names models (catalog,
        built-in or Hub ids), never a folder or file on the server, except under the models dir
        (service/server_paths.py, the rule the UI applies to a viewer with a project key too)."""
        if not model.startswith(FT_MODEL_PREFIX):
            refuse_server_path(model, param="model", roots=(self.settings.models_dir,), hint=MODEL_HINT)
            return model
        found = self.served(model, project)
        if found is None or found[1] != "adapter":
            raise NotFoundError(f"The model {model!r} does not exist or you do not have access to it.",
                                param="model", hint="List your models with client.models.list().")
        return found[0]

    # ---- read ---------------------------------------------------------------------------------------------
    def _record(self, project: str, job_id: str) -> dict[str, Any]:
        row = self.store.finetuning.get_job(project, job_id)
        if row is None:
            raise NotFoundError(f"Could not find fine-tune: {job_id}", param="fine_tuning_job_id",
                                hint="List your jobs with client.fine_tuning.jobs.list().")
        return row

    def retrieve(self, project: str, job_id: str) -> dict[str, Any]:
        found = self.store.finetuning.get_with_job(project, job_id)
        if found is None:
            self._record(project, job_id)      # raises the 404
        rec, job = found
        return job_object(rec, job if rec["status"] in ("submitted", "paused") else None)

    def list(self, project: str, after: str | None, limit: int, metadata: dict[str, str] | None) -> dict[str, Any]:
        limit = _limit(limit)
        rows = self.store.finetuning.list_with_jobs(project, after, limit + 1, metadata)
        objs = [job_object(r, j if r["status"] in ("submitted", "paused") else None) for r, j in rows[:limit]]
        return page(objs, len(rows) > limit)

    def cancel(self, project: str, job_id: str) -> dict[str, Any]:
        rec = self._record(project, job_id)
        if rec["status"] == "paused":        # a paused (or pausing) job is cancelled for good
            self.store.finetuning.update_job(job_id, status="submitted")
            if self.jobs.get(job_id)["state"] not in ("queued", "running"):
                self.store.add_event(job_id, "cancelled by user while paused", level="warn")
                return self.retrieve(project, job_id)
        elif rec["status"] != "submitted":
            raise ValidationError(f"Job {job_id} has already {rec['status']}; it cannot be cancelled.",
                                  param="fine_tuning_job_id")
        job = self.jobs.get(job_id)
        if job["state"] not in ("queued", "running"):
            raise ValidationError(f"Job {job_id} has already {STATUS[job['state']]}; it cannot be cancelled.",
                                  param="fine_tuning_job_id")
        self.jobs.cancel(job_id)
        return self.retrieve(project, job_id)

    def pause(self, project: str, job_id: str) -> dict[str, Any]:
        """Stop a queued or running job at its next step, keeping that step as a checkpoint
        (status pausing, then paused); `resume` goes on from it."""
        rec = self._record(project, job_id)
        job = self.store.get_job(job_id) if rec["status"] == "submitted" else None
        if job is None or job["state"] not in ("queued", "running"):
            raise ValidationError(f"Job {job_id} is not running; only a queued or running job can be paused.",
                                  param="fine_tuning_job_id")
        self.store.finetuning.update_job(job_id, status="paused")
        self.store.update_job(job_id, cancel_requested=True)
        if job["state"] == "queued" or self.jobs.is_stale(job):
            self.store.update_job(job_id, state="cancelled", error="paused")
        self.store.add_event(job_id, "pause requested: the job stops at its next step and keeps it as a checkpoint",
                             level="warn")
        return self.retrieve(project, job_id)

    def resume(self, project: str, job_id: str) -> dict[str, Any]:
        """Queue a paused job again; its runner resumes from the last checkpoint."""
        rec = self._record(project, job_id)
        job = self.store.get_job(job_id) if rec["status"] == "paused" else None
        if job is None or job["state"] != "cancelled":
            raise ValidationError(f"Job {job_id} is not paused" + (" yet (it is still pausing)" if job else "") +
                                  "; only a paused job can be resumed.", param="fine_tuning_job_id")
        self.store.update_job(job_id, state="queued", pid=None, host=None, cancel_requested=False, error=None,
                              finished_at=None, active_key=None)
        self.store.finetuning.update_job(job_id, status="submitted")
        self.store.add_event(job_id, "resumed: queued again, training goes on from the last checkpoint")
        return self.retrieve(project, job_id)

    def events(self, project: str, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        rec = self._record(project, job_id)
        rows = list(reversed(self.store.list_events(job_id))) if rec["status"] in ("submitted", "paused") else []
        evs = [event_object(e) for e in rows]
        if rec["error"]:
            evs.insert(0, {"id": f"ftevent-{job_id}-error", "object": "fine_tuning.job.event",
                           "created_at": _unix(rec["finished_at"]) or _unix(rec["created_at"]), "level": "error",
                           "message": rec["error"]["message"], "data": None, "type": "message"})
        return _after(evs, after, _limit(limit))

    def checkpoints(self, project: str, job_id: str, after: str | None, limit: int) -> dict[str, Any]:
        rec = self._record(project, job_id)
        job = self.store.get_job(job_id) if rec["status"] in ("submitted", "paused") else None
        out = [] if job is None else [checkpoint_object(rec, c) for c in job_checkpoints(self.store, job)]
        return _after(out, after, _limit(limit))

    # ---- what the server serves ------------------------------------------------------------------------
    def served(self, name: str, project: str | None = None) -> tuple[str, str, str] | None:
        """(folder, kind, project) of an `ft:` model or checkpoint (`...:ckpt-step-N`) that exists;
        None when there is none (or it is another project's, when `project` is given)."""
        base, _, step = name.rpartition(":ckpt-step-")
        rec = self.store.finetuning.by_model(base if step.isdigit() else name)
        if rec is None or (project is not None and rec["project"] != project) or \
                rec["status"] not in ("submitted", "paused"):
            return None
        job = self.store.get_job(rec["id"])
        if job is None:
            return None
        if step.isdigit():
            for c in job_checkpoints(self.store, job):
                if c["step"] == int(step):
                    return str(c["path"]), "adapter" if job["training_type"] == "lora" else "model", rec["project"]
            return None
        if job["state"] != "completed" or not job["output_path"]:
            return None
        return job["output_path"], "adapter" if job["output_type"] == "adapter" else "model", rec["project"]

    def served_names(self, project: str) -> list[str]:
        """The project's succeeded `ft:` models (for /v1/models)."""
        return [rec["fine_tuned_model"] for rec, job in self.store.finetuning.list_with_jobs(project, limit=10000)
                if rec["status"] in ("submitted", "paused") and job is not None and job["state"] == "completed"]

    # ---- workers ------------------------------------------------------------------------------------------
    def dispatch(self, workers: int) -> list[str]:
        """One pass of `tuneloop serve --workers N`: recover API jobs whose runner died, then start
        queued ones while fewer than N run; returns the ids started. A runner claims its job
        atomically (Store.claim_job), so two servers dispatching at once start one runner per job."""
        started = []
        now = time.monotonic()
        running = self.store.finetuning.running_training()
        for job in running:
            if self.jobs.is_stale(job):
                self.jobs.recover(job)
        pending = [j for j, t in self._launched.items() if now - t < 60]
        queued = self.store.finetuning.queued_training()
        self._launched = {j: t for j, t in self._launched.items() if j in pending and
                          any(q["id"] == j for q in queued)}
        free = workers - len(running) - len(self._launched)
        for job in queued:
            if free <= 0:
                break
            if job["id"] in self._launched:
                continue
            self.jobs.launch(job["id"])
            self._launched[job["id"]] = now
            started.append(job["id"])
            free -= 1
        return started


def parse_method(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `method` (or the deprecated top-level `hyperparameters`) as tuneloop's technique and
    knob overrides; "auto" leaves a knob to the planner. Unknown or bad values are a 400 naming the field."""
    method = body.get("method")
    if method is None:
        method = {"type": "supervised", "supervised": {"hyperparameters": body.get("hyperparameters") or {}}}
    elif body.get("hyperparameters"):
        raise ValidationError("Pass hyperparameters inside method, not also at the top level.",
                              param="hyperparameters")
    if not isinstance(method, dict) or method.get("type") not in METHODS:
        raise ValidationError(f"method.type must be one of {', '.join(METHODS)}.", param="method.type")
    kind = method["type"]
    inner = method.get(kind) or {}
    if not isinstance(inner, dict):
        raise ValidationError(f"method.{kind} must be an object.", param=f"method.{kind}")
    hp = inner.get("hyperparameters") or {}
    if not isinstance(hp, dict):
        raise ValidationError(f"method.{kind}.hyperparameters must be an object.", param=f"method.{kind}.hyperparameters")
    overrides: dict[str, Any] = {}
    lr = None
    allowed = {"n_epochs", "batch_size", "learning_rate_multiplier"} | ({"beta"} if kind == "dpo" else set()) | \
        (set(OPENAI_ONLY) if kind == "reinforcement" else set())
    for key, value in hp.items():
        param = f"method.{kind}.hyperparameters.{key}"
        if key not in allowed:
            raise ValidationError(f"Unknown hyperparameter {key!r} for {kind}.", param=param,
                                  hint=f"{kind} takes: {', '.join(sorted(allowed))}.")
        if value == "auto" or value is None:
            continue
        if key in OPENAI_ONLY:
            raise ValidationError(f"{key} is not supported by this server; pass \"auto\" or leave it out.", param=param)
        if key == "learning_rate_multiplier":
            if type(value) not in (int, float) or not 0 < value <= 100:
                raise ValidationError(f"learning_rate_multiplier must be a number in (0, 100], got {value!r}.",
                                      param=param)
            lr = float(value)
            continue
        if key in ("n_epochs", "batch_size") and (type(value) is not int or value < 1):
            raise ValidationError(f"{key} must be a positive integer or \"auto\", got {value!r}.", param=param)
        if key == "beta" and (type(value) not in (int, float) or value <= 0):
            raise ValidationError(f"beta must be a positive number or \"auto\", got {value!r}.", param=param)
        overrides[KNOBS[key]] = value
    grader = None
    if kind == "reinforcement":
        g = inner.get("grader")
        if not isinstance(g, dict) or "type" not in g:
            raise ValidationError("method.reinforcement.grader is required: an OpenAI grader object such as "
                                  '{"type": "string_check", ...}.', param="method.reinforcement.grader")
        grader = json.dumps(g)
    try:
        check_hyperparameters(overrides, "lora", METHODS[kind])
    except ValidationError as e:
        inverse = {v: k for k, v in KNOBS.items()}
        e.param = f"method.{kind}.hyperparameters.{inverse.get(e.param, e.param)}"
        raise
    echo = {"type": kind, kind: {k: v for k, v in inner.items() if k != "hyperparameters"} |
            {"hyperparameters": dict(hp)}}
    return {"technique": METHODS[kind], "overrides": overrides, "lr": lr, "grader": grader, "echo": echo}


def job_object(rec: dict[str, Any], job: dict[str, Any] | None) -> dict[str, Any]:
    """The `fine_tuning.job` object of a record and its tuneloop job (None: it never got one)."""
    kind = rec["method"]["type"]
    status, error, finished, trained, estimate, model = rec["status"], rec["error"], rec["finished_at"], None, None, None
    hp: dict[str, Any] = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    if job is not None:
        status = STATUS[job["state"]]
        if rec["status"] == "paused":   # OpenAI's pausing/paused (newer than this openai client's types)
            status = "pausing" if job["state"] in ("queued", "running") else "paused"
        finished = job["finished_at"]
        plan = job["plan"] or {}
        asked = rec["method"][kind].get("hyperparameters") or {}
        mult = asked.get("learning_rate_multiplier")
        hp = {"n_epochs": plan.get("epochs"), "batch_size": plan.get("global_batch"),
              "learning_rate_multiplier": float(mult) if mult not in (None, "auto") else 1.0}
        if kind == "dpo":
            hp["beta"] = plan.get("beta")
        if job["state"] == "failed":
            error = {"code": "job_failed", "message": job["error"] or "the job failed", "param": None}
        if job["state"] == "completed":
            model = rec["fine_tuned_model"]
            trained = (job["metrics"] or {}).get("final_num_tokens")   # TRL's count of the tokens trained on
            trained = int(trained) if isinstance(trained, (int, float)) else None
        if job["state"] in ("queued", "running") and plan.get("est_time_s"):
            started = _unix(job["started_at"]) or int(time.time())
            estimate = started + int(plan["est_time_s"])
    elif status == "submitted":   # the tuneloop job was removed under it
        status = "failed"
        error = {"code": "job_missing", "message": "This job's record outlived its training job.", "param": None}
    method = {**rec["method"], kind: dict(rec["method"][kind])}   # a copy of what changes: the hyperparameters
    method[kind]["hyperparameters"] = {k: v for k, v in hp.items()} if job is not None else \
        method[kind].get("hyperparameters") or {}
    return {
        "id": rec["id"], "object": "fine_tuning.job", "created_at": _unix(rec["created_at"]),
        "error": error, "fine_tuned_model": model, "finished_at": _unix(finished),
        "hyperparameters": {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "model": rec["model"], "organization_id": f"org-{rec['project']}", "result_files": [],
        "seed": rec["seed"] if rec["seed"] is not None else (job["plan"] or {}).get("seed", 0) if job else 0,
        "status": status, "trained_tokens": trained, "training_file": rec["training_file"],
        "validation_file": rec["validation_file"], "estimated_finish": estimate, "integrations": None,
        "metadata": rec["metadata"], "method": method,
    }


def event_object(e: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"ftevent-{e['id']}", "object": "fine_tuning.job.event", "created_at": _unix(e["created_at"]),
            "level": e["level"] if e["level"] in ("info", "warn", "error") else "info", "message": e["message"],
            "data": e["data"], "type": "metrics" if e["type"] == "metrics" else "message"}


def job_checkpoints(store: Store, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's checkpoints still on disk, newest first, each with the metrics logged at or before it."""
    folder = Path(job["job_dir"]) / "checkpoints"
    saved = {int(p.name.rsplit("-", 1)[1]): p for p in folder.glob("checkpoint-*")
             if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()} if folder.is_dir() else {}
    if not saved:
        return []
    metrics = [e for e in store.list_events(job["id"], type="metrics") if isinstance(e["data"], dict)]
    saves = {e["data"].get("step"): e for e in store.list_events(job["id"])
             if e["message"].startswith("checkpoint saved") and isinstance(e["data"], dict)}
    out = []
    for step in sorted(saved, reverse=True):
        logged = [m["data"] for m in metrics if (m["data"].get("step") or 0) <= step and "loss" in m["data"]]
        last = logged[-1] if logged else {}
        when = saves.get(step, {}).get("created_at") or job["created_at"]
        out.append({"step": step, "path": saved[step], "created_at": when, "metrics": {
            "step": float(step), "train_loss": last.get("loss"),
            "train_mean_token_accuracy": last.get("mean_token_accuracy"),
            "valid_loss": last.get("eval_loss"), "valid_mean_token_accuracy": last.get("eval_mean_token_accuracy"),
            "full_valid_loss": None, "full_valid_mean_token_accuracy": None}})
    return out


def checkpoint_object(rec: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"ftckpt-{rec['id'][len(FT_PREFIX):]}-{c['step']}", "object": "fine_tuning.job.checkpoint",
            "created_at": _unix(c["created_at"]), "fine_tuned_model_checkpoint":
            f"{rec['fine_tuned_model']}:ckpt-step-{c['step']}", "fine_tuning_job_id": rec["id"],
            "metrics": c["metrics"], "step_number": c["step"]}


def _after(objs: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    if after:
        ids = [o["id"] for o in objs]
        objs = objs[ids.index(after) + 1:] if after in ids else objs
    return page(objs[:limit], len(objs) > limit)


def _limit(limit: int | None) -> int:
    if limit is None:
        return 20
    if not 1 <= limit <= 100:
        raise ValidationError(f"limit must be between 1 and 100, got {limit}.", param="limit")
    return limit


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationError(f"Missing required parameter: {key!r}.", param=key)
        return None
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise ValidationError(f"{key} must be a non-empty string.", param=key)
    return value


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in value.items()):
        raise ValidationError("metadata must be at most 16 string keys (64 characters) with string values "
                              "(512 characters).", param="metadata")
    return dict(value)


def _integrations(value: Any) -> dict[str, Any]:
    """`integrations` as MLflow tracking: a `wandb` integration's project and name become the MLflow
    experiment and run (MLflow at MLFLOW_TRACKING_URI where the server runs), `mlflow` names its own."""
    if not value:
        return {}
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise ValidationError("integrations must be a list of one integration object.", param="integrations")
    item = value[0]
    kind = item.get("type")
    conf = item.get(kind) if isinstance(item.get(kind), dict) else {}
    if kind == "wandb":
        out = {"mlflow_experiment": conf.get("project"), "mlflow_run_name": conf.get("name")}
    elif kind == "mlflow":
        out = {"mlflow_uri": conf.get("tracking_uri"), "mlflow_experiment": conf.get("experiment"),
               "mlflow_run_name": conf.get("run_name")}
    else:
        raise ValidationError(f"integrations[0].type {kind!r} is not supported: use \"mlflow\" (or \"wandb\", "
                              "tracked in MLflow).", param="integrations")
    if not (out.get("mlflow_uri") or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ValidationError("This server has no MLflow tracking server for integrations.", param="integrations",
                              hint="Set MLFLOW_TRACKING_URI where tuneloop serve runs, or pass "
                                   '{"type": "mlflow", "mlflow": {"tracking_uri": ...}}.')
    return {k: v for k, v in out.items() if isinstance(v, str) and v}


def run_workers(service_factory: Callable[[], FineTuningService], workers: int, stop, interval_s: float = 1.0,
                log: Callable[[str], None] = print) -> None:
    """The dispatch loop a server runs in a thread until `stop` (a threading.Event) is set."""
    svc = service_factory()
    while not stop.wait(interval_s):
        try:
            for job_id in svc.dispatch(workers):
                log(f"started {job_id}")
        except Exception as e:  # noqa: BLE001 - a busy database must not stop the workers
            log(f"⚠️  dispatch: {type(e).__name__}: {e}")
