"""The one typed job spec: built from CLI flags, SDK arguments or an API body, validated once,
resolved by the planner, and saved whole as `spec.json` beside every artifact."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.errors import ValidationError


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter's type and bounds (SageMaker's typed hyperparameter spec)."""

    type: type
    min: float | None = None
    max: float | None = None
    lora_only: bool = False
    help: str = ""
    techniques: tuple[str, ...] = ()   # empty: every technique

    def check(self, name: str, value: Any) -> Any:
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
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ValidationError(
                f"Hyperparameter {name}={value} is out of range [{self.min}, {self.max}].",
                hint=f"{name}: {self.help}", param=name,
            )
        return self.type(value)


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "learning_rate": Hyperparameter(float, 1e-9, 1.0, help="peak learning rate, e.g. 2e-4"),
    "max_epochs": Hyperparameter(int, 1, 1000, help="passes over the training data"),
    "global_batch_size": Hyperparameter(int, 1, 65536, help="samples per optimizer step, all devices"),
    "max_steps": Hyperparameter(int, 1, 10_000_000, help="stop after this many optimizer steps"),
    "save_steps": Hyperparameter(int, 1, 10_000_000, help="checkpoint every N optimizer steps"),
    "warmup_steps": Hyperparameter(int, 0, 10_000_000, help="linear warm-up steps"),
    "weight_decay": Hyperparameter(float, 0.0, 1.0, help="AdamW weight decay"),
    "lora_rank": Hyperparameter(int, 1, 1024, lora_only=True, help="LoRA rank r, e.g. 16"),
    "lora_alpha": Hyperparameter(int, 1, 4096, lora_only=True, help="LoRA scaling alpha, e.g. 32"),
    "dataset_max_len": Hyperparameter(int, 8, 1_048_576, help="maximum tokens per example"),
    "beta": Hyperparameter(float, 0.0, 100.0, help="DPO temperature beta, e.g. 0.1"),
    "seed": Hyperparameter(int, 0, 2**31 - 1, help="random seed"),
    # RL (rlvr, rlaif): GRPO on TRL
    "max_prompt_length": Hyperparameter(int, 8, 1_048_576, help="prompt tokens kept (left-truncated)",
                                        techniques=RL_TECHNIQUES),
    "max_response_length": Hyperparameter(int, 1, 1_048_576, help="tokens generated per completion",
                                          techniques=RL_TECHNIQUES),
    "num_generations": Hyperparameter(int, 2, 1024, help="completions sampled per prompt (GRPO group size)",
                                      techniques=RL_TECHNIQUES),
    "temperature": Hyperparameter(float, 0.01, 10.0, help="sampling temperature, e.g. 1.0",
                                  techniques=RL_TECHNIQUES),
    "kl_loss_coef": Hyperparameter(float, 0.0, 100.0, help="KL penalty to the starting model, e.g. 0.001",
                                   techniques=RL_TECHNIQUES),
    "clip_ratio": Hyperparameter(float, 0.0, 10.0, help="PPO-style ratio clipping epsilon, e.g. 0.2",
                                 techniques=RL_TECHNIQUES),
    "reward_failure_threshold": Hyperparameter(float, 0.0, 1.0, help="share of a step's rewards that may fail "
                                               "before the job stops, e.g. 0.2", techniques=RL_TECHNIQUES),
    "reward_timeout": Hyperparameter(float, 0.1, 3600.0, help="seconds one reward call may take, e.g. 10",
                                     techniques=RL_TECHNIQUES),
}


def check_hyperparameters(values: dict[str, Any], training_type: str, technique: str | None = None) -> dict[str, Any]:
    """Validate user-given hyperparameters by name; None values are dropped (= use the default)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        hp = HYPERPARAMETERS.get(name)
        if hp is None:
            raise ValidationError(
                f"Unknown hyperparameter {name!r}.",
                hint="Known hyperparameters: " + ", ".join(sorted(HYPERPARAMETERS)), param=name,
            )
        if hp.lora_only and training_type != "lora":
            flag = "--" + name.replace("_", "-")
            raise ValidationError(
                f"{flag} only applies when --training-type lora (this job is {training_type}).",
                hint=f"Remove {flag}, or use --training-type lora.", param=name,
            )
        if technique and hp.techniques and technique not in hp.techniques:
            flag = "--" + name.replace("_", "-")
            raise ValidationError(
                f"{name} only applies to {' and '.join(hp.techniques)} jobs (this job is {technique}).",
                hint=f"Remove {flag} (or {name} from the hyperparameters).", param=name,
            )
        out[name] = hp.check(name, value)
    return out


@dataclass
class JobSpec:
    """Everything a job needs, resolved: the runner reads nothing else."""

    project: str
    technique: str
    training_type: str
    model: str                      # catalog id, built-in id, or absolute local folder
    model_source: str               # "catalog" | "builtin" | "local"
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
    reward_base_dir: str | None = None      # where relative reward paths and modules resolve (submit's cwd)
    mlflow_uri: str | None = None           # MLflow tracking URI (--mlflow-uri, else MLFLOW_TRACKING_URI at submit)
    mlflow_experiment: str | None = None    # default: tuneloop-<project>
    mlflow_run_name: str | None = None      # default: the job name
    allow_row_rewards: list[str] = field(default_factory=list)   # rewards rows may name besides the defaults
    unsafe_reward_sandbox: bool = False     # run user reward code without namespace isolation (--unsafe-reward-sandbox)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def group(self) -> str:
        return self.model_package_group or f"{self.project}-tune-models"
