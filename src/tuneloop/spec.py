"""The one typed job spec and the registry of the knobs it carries.

Each hyperparameter is declared once, in `HYPERPARAMETERS`: its type, bounds, help, CLI flag, the
TRL / TrainingArguments field it becomes, which techniques and training types it applies to, and
its generic default. The CLI's `tune` options, the SDK's keyword arguments, validation and the
generic defaults table are all read from it (TRL's config dataclasses carry their `help` the same
way). A request (`TuneRequest`) is validated and resolved into a frozen `JobSpec`, which the runner
reads and which is saved once beside the job's outputs (`spec_record`).

    overrides = check_hyperparameters({"kl_loss_coef": 0.0}, "lora", "rlvr")
    hp = resolve_hyperparameters("rlvr", "lora", model=entry_defaults, user=overrides)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tuneloop.catalog import RL_TECHNIQUES, TECHNIQUES, TRAINING_TYPES
from tuneloop.errors import ValidationError


def _by_technique(*, sft: Any, dpo: Any, rl: Any) -> dict[str, Any]:
    return {"sft": sft, "dpo": dpo, **dict.fromkeys(RL_TECHNIQUES, rl)}


@dataclass(frozen=True)
class Hyperparameter:
    """One knob: type and bounds (SageMaker's typed hyperparameter spec), help, CLI flag, TRL name,
    where it applies, and its generic default (a catalog model's own value wins over it)."""

    name: str
    type: type
    min: float
    max: float
    help: str
    default: Any                       # one value, or {technique: value}; None: the planner derives it
    flag: str = ""                     # default: --name-with-dashes
    trl: str = ""                      # the TRL / PEFT / TrainingArguments field it becomes, if one
    full_rank_default: Any = None      # full-rank's value where it differs (the learning rate)
    techniques: tuple[str, ...] = ()   # empty: every technique
    training_types: tuple[str, ...] = ()   # empty: every training type
    choices: tuple[str, ...] = ()      # a str knob: its values (min and max unused)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def scope(self) -> str:
        """What the CLI help says about where the knob applies: "lora only", "RL" or ""."""
        if self.training_types == ("lora",):
            return "lora only"
        return "RL" if self.techniques == RL_TECHNIQUES else "/".join(self.techniques)

    def applies(self, technique: str | None, training_type: str | None) -> bool:
        return ((technique is None or not self.techniques or technique in self.techniques)
                and (training_type is None or not self.training_types or training_type in self.training_types))

    def default_for(self, technique: str, training_type: str) -> Any:
        value = self.full_rank_default if training_type == "full-rank" and self.full_rank_default is not None \
            else self.default
        return value.get(technique) if isinstance(value, dict) else value

    def check(self, value: Any) -> Any:
        name = self.name
        if self.choices:
            if value not in self.choices:
                raise ValidationError(f"Hyperparameter {name} must be one of {', '.join(self.choices)}, got {value!r}.",
                                      hint=f"{name}: {self.help}", param=name)
            return value
        if self.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            self.type is int and not isinstance(value, int)
        ):
            raise ValidationError(
                f"Hyperparameter {name} must be {'an integer' if self.type is int else 'a number'}, got {value!r}.",
                hint=f"{name}: {self.help}", param=name,
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(f"Hyperparameter {name} must be finite, got {value!r}.", param=name)
        if value < self.min or value > self.max:
            raise ValidationError(
                f"Hyperparameter {name}={value} is out of range [{self.min}, {self.max}].",
                hint=f"{name}: {self.help}", param=name,
            )
        return self.type(value)


_RL = {"techniques": RL_TECHNIQUES}
_LORA = {"training_types": ("lora",)}
_SCALE = {"techniques": ("sft", "dpo")}   # where the scale-out launchers are tested (RL stays one process)
_REGISTRY = [
    Hyperparameter("max_epochs", int, 1, 1000, "passes over the training data", _by_technique(sft=3, dpo=1, rl=1),
                   flag="--epochs", trl="num_train_epochs (the planner turns epochs into max_steps)"),
    Hyperparameter("learning_rate", float, 1e-9, 1.0, "peak learning rate, e.g. 2e-4",
                   _by_technique(sft=2e-4, dpo=5e-5, rl=1e-5), trl="learning_rate",
                   full_rank_default=_by_technique(sft=1e-5, dpo=5e-7, rl=1e-6)),
    Hyperparameter("dataset_max_len", int, 8, 1_048_576, "maximum tokens per example", 2048,
                   flag="--max-seq-length", trl="max_length"),
    Hyperparameter("lora_rank", int, 1, 1024, "LoRA rank r, e.g. 16", 16, trl="LoraConfig.r", **_LORA),
    Hyperparameter("lora_alpha", int, 1, 4096, "LoRA scaling alpha, e.g. 32", 32, trl="LoraConfig.lora_alpha",
                   **_LORA),
    # RL: 16 completions, 2 prompts x 8 per step (TRL's default is 8, one prompt): a small prompt set gets updates
    Hyperparameter("global_batch_size", int, 1, 65536, "samples per optimizer step, all devices",
                   _by_technique(sft=8, dpo=8, rl=16), flag="--batch-size",
                   trl="per_device_train_batch_size x gradient_accumulation_steps x devices (planned)"),
    Hyperparameter("max_steps", int, 1, 10_000_000, "stop after this many optimizer steps (overrides epochs)",
                   None, trl="max_steps"),
    Hyperparameter("save_steps", int, 1, 10_000_000, "checkpoint every N optimizer steps", None,
                   trl="save_steps"),
    Hyperparameter("warmup_steps", int, 0, 10_000_000, "linear warm-up steps", 0, trl="warmup_steps"),
    Hyperparameter("weight_decay", float, 0.0, 1.0, "AdamW weight decay", 0.0, trl="weight_decay"),
    Hyperparameter("beta", float, 0.0, 100.0, "DPO temperature beta, e.g. 0.1", 0.1, trl="DPOConfig.beta",
                   techniques=("dpo",)),
    Hyperparameter("seed", int, 0, 2**31 - 1, "random seed (training and --validation-split)", 42,
                   trl="seed, data_seed"),
    # scale-out: where the job runs (service/launch.py, service/ray_backend.py); the planner splits the
    # global batch across the processes
    Hyperparameter("num_processes", int, 1, 4096, "training processes (DDP ranks: gloo on CPU, NCCL one per GPU); "
                   "the global batch is split across them", 1,
                   trl="torchrun --nproc-per-node / ScalingConfig.num_workers", **_SCALE),
    Hyperparameter("nodes", int, 1, 1024, "machines the job spans, --num-processes on each (torchrun's "
                   "rendezvous): run the same command on every machine with TUNELOOP_MASTER_ADDR=HOST:PORT of "
                   "node 0 and TUNELOOP_NODE_RANK=0..nodes-1", 1, trl="torchrun --nnodes", **_SCALE),
    Hyperparameter("backend", str, 0, 0, "where the processes run: local (this machine, torch.distributed) or "
                   "ray (Ray Train workers on the cluster at $TUNELOOP_RAY_ADDRESS)", "local",
                   trl="ray.train.torch.TorchTrainer for ray", choices=("local", "ray"), **_SCALE),
    # how the ranks hold the model (training/plan.py choose_sharding): DDP replicates it, FSDP2 shards
    # parameters, gradients and optimizer states over the ranks; auto asks the planner's memory estimate
    Hyperparameter("sharding", str, 0, 0, "how --num-processes ranks hold the model: ddp (a full copy each), "
                   "fsdp (parameters, gradients and optimizer states sharded over the ranks) or auto (fsdp "
                   "only when the model's weights, gradients and optimizer states do not fit one device)", "auto",
                   trl="TrainingArguments.fsdp + fsdp_config (FSDP2) for fsdp", choices=("auto", "ddp", "fsdp"),
                   techniques=("sft",)),
    # RL (rlvr, rlaif): GRPO on TRL
    Hyperparameter("max_prompt_length", int, 8, 1_048_576, "prompt tokens kept (left-truncated)", 1024,
                   trl="GRPOConfig.max_prompt_length", **_RL),
    Hyperparameter("max_response_length", int, 1, 1_048_576, "tokens generated per completion", 1024,
                   trl="GRPOConfig.max_completion_length", **_RL),
    Hyperparameter("num_generations", int, 2, 1024, "completions sampled per prompt (GRPO group size)", 8,
                   trl="GRPOConfig.num_generations", **_RL),
    Hyperparameter("temperature", float, 0.01, 10.0, "sampling temperature, e.g. 1.0", 1.0,
                   trl="GRPOConfig.temperature", **_RL),
    # 0, TRL's GRPO default (GRPOConfig.beta): no reference model, no reference forward pass per step
    Hyperparameter("kl_loss_coef", float, 0.0, 100.0, "KL penalty to the starting model, e.g. 0.001", 0.0,
                   flag="--kl-coef", trl="GRPOConfig.beta", **_RL),
    Hyperparameter("clip_ratio", float, 0.0, 10.0, "PPO-style ratio clipping epsilon, e.g. 0.2", 0.2,
                   trl="GRPOConfig.epsilon", **_RL),
    Hyperparameter("reward_failure_threshold", float, 0.0, 1.0,
                   "share of a step's rewards that may fail before the job stops, e.g. 0.2", 0.2, **_RL),
    Hyperparameter("reward_timeout", float, 0.1, 3600.0, "seconds one reward call may take, e.g. 10", 10.0, **_RL),
]
HYPERPARAMETERS: dict[str, Hyperparameter] = {hp.name: hp for hp in _REGISTRY}


def generic_defaults(technique: str, training_type: str) -> dict[str, Any]:
    """The generic defaults of one technique and training type, from the registry: the values a
    model outside the catalog gets, and the ones a catalog entry does not set."""
    out = {}
    for hp in HYPERPARAMETERS.values():
        value = hp.default_for(technique, training_type) if hp.applies(technique, training_type) else None
        if value is not None:
            out[hp.name] = value
    return out


# The one defaults table: DEFAULTS[technique][training_type] -> {knob: value}.
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    t: {tt: generic_defaults(t, tt) for tt in TRAINING_TYPES} for t in TECHNIQUES
}


def resolve_hyperparameters(technique: str, training_type: str, model: dict[str, Any] | None = None,
                            user: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every knob's value for a job: the user's > the model's (its catalog entry) > the generic table."""
    base = DEFAULTS.get(technique, {}).get(training_type) or generic_defaults(technique, training_type)
    return {**base, **(model or {}), **(user or {})}


def unknown_hyperparameter(name: str) -> ValidationError:
    """The one message for a knob the registry does not know (CLI, SDK and API alike)."""
    return ValidationError(f"Unknown hyperparameter {name!r}.",
                           hint="Known hyperparameters: " + ", ".join(sorted(HYPERPARAMETERS)), param=name)


def check_hyperparameters(values: dict[str, Any], training_type: str, technique: str | None = None) -> dict[str, Any]:
    """Validate user-given hyperparameters by name; None values are dropped (= use the default)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        hp = HYPERPARAMETERS.get(name)
        if hp is None:
            raise unknown_hyperparameter(name)
        if not hp.applies(None, training_type):
            raise ValidationError(
                f"{hp.cli_flag} only applies when --training-type lora (this job is {training_type}).",
                hint=f"Remove {hp.cli_flag}, or use --training-type lora.", param=name,
            )
        if not hp.applies(technique, None):
            raise ValidationError(
                f"{name} only applies to {' and '.join(hp.techniques)} jobs (this job is {technique}).",
                hint=f"Remove {hp.cli_flag} (or {name} from the hyperparameters).", param=name,
            )
        out[name] = hp.check(value)
    return out


# ---- request and spec ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _JobFields:
    """The fields a request and its spec share, declared once."""

    technique: str
    training_type: str = "lora"
    dataset: str                    # the source as the user gave it
    hyperparameters: dict[str, Any] = field(default_factory=dict)   # user overrides only
    validation_dataset: str | None = None
    column_map: str | None = None
    no_transform: bool = False
    take: int | None = None
    output_uri: str | None = None   # where outputs are copied besides TUNELOOP_HOME (--output-bucket)
    model_package_group: str | None = None
    reward_function: str | None = None
    reward_prompt: str | None = None
    accept_eula: bool = False
    judge_model: str | None = None          # RLAIF judge: catalog/built-in id, folder, openai:MODEL@URL
    mlflow_uri: str | None = None           # MLflow tracking URI (--mlflow-uri, else MLFLOW_TRACKING_URI at submit)
    mlflow_experiment: str | None = None    # default: tuneloop-<project>
    mlflow_run_name: str | None = None      # default: the job name
    allow_row_rewards: list[str] = field(default_factory=list)   # rewards rows may name besides the defaults
    unsafe_reward_sandbox: bool = False     # run user reward code without namespace isolation (--unsafe-reward-sandbox)


@dataclass(frozen=True, kw_only=True)
class TuneRequest(_JobFields):
    """What an edge (CLI, SDK, API) asks for; `JobService.prepare` validates and resolves it."""

    model: str | None = None                # default: the catalog's default model
    project: str | None = None              # default: $TUNELOOP_PROJECT, else "default"
    validation_split: float | None = None   # carve this share of the rows out as validation data
    skip_reward_validation: bool = False    # RL: do not run the rewards on sample rows before submitting


@dataclass(frozen=True, kw_only=True)
class JobSpec(_JobFields):
    """Everything a job needs, resolved: the runner reads nothing else."""

    project: str
    model: str                      # catalog id, built-in id, or absolute local folder
    model_source: str               # "catalog" | "builtin" | "local"
    reward_base_dir: str | None = None      # where relative reward paths and modules resolve (submit's cwd)

    @classmethod
    def from_request(cls, req: TuneRequest, **resolved: Any) -> "JobSpec":
        """The request's shared fields, with what `prepare` resolved (project, model, ...) on top."""
        shared = {f.name: getattr(req, f.name) for f in fields(_JobFields)}
        return cls(**(shared | resolved))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSpec":
        """Old jobs' stored specs load: keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def group(self) -> str:
        return self.model_package_group or f"{self.project}-tune-models"


def spec_record(spec: JobSpec, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's spec as it is saved (the job row, spec.json, the output's tuneloop_spec.json and
    manifest): the spec plus what the job trained on (dataset version, hash, rows)."""
    return spec.to_dict() | (extra or {})


def spec_file(record: dict[str, Any]) -> str:
    """The text of a spec file: the one format of spec.json and tuneloop_spec.json."""
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def write_spec_file(path: Path, record: dict[str, Any]) -> Path:
    """Write `record` as the spec file `path` (the job's spec.json, the output's
    tuneloop_spec.json), atomically: a reader sees the whole file or none."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(spec_file(record))
    tmp.replace(path)
    return path
