"""The SDK's trainers, after SageMaker V3's trainer classes: SFTTrainer, DPOTrainer, RLVRTrainer,
RLAIFTrainer build a TuneRequest and submit it through the job service, as `tuneloop tune` does.

    from tuneloop import DPOTrainer, TrainingType
    job = DPOTrainer(model="tuneloop/tiny-qwen3", training_type=TrainingType.LORA,
                     model_package_group="my-models", training_dataset="prefs.jsonl").train(wait=True)
    print(job.status, job.output_path, job.model_package_version)
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from tuneloop.errors import JobFailedError
from tuneloop.sdk.common import job_service as _service


class TrainingType(str, Enum):
    LORA = "lora"
    FULL = "full-rank"


class CustomizationTechnique(str, Enum):
    SFT = "sft"
    DPO = "dpo"
    RLVR = "rlvr"
    RLAIF = "rlaif"


def list_supported_models() -> list[dict[str, Any]]:
    """Catalog models: id, family, provider, parameters, techniques with their training types."""
    from tuneloop.catalog import load_catalog

    return [{"id": m.id, "family": m.family, "provider": m.provider, "parameters": m.parameters,
             "gated": m.gated, "builtin": m.builtin,
             "techniques": {t: list(e.training_types) for t, e in m.techniques.items()}}
            for m in load_catalog().models.values()]


class TrainingJob:
    """A handle on a tune job: refresh(), wait(), status, output_path, model_package_version."""

    def __init__(self, name: str, service=None):
        self.name = name
        self._service = service or _service()
        self._row: dict[str, Any] = self._service.get(name)

    def refresh(self) -> "TrainingJob":
        self._row = self._service.get(self.name)
        return self

    @property
    def status(self) -> str:
        return self._row["state"]

    @property
    def output_path(self) -> str | None:
        return self._row["output_path"]

    @property
    def output_type(self) -> str | None:
        return self._row["output_type"]

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self._row["metrics"] or {})

    @property
    def failure_reason(self) -> str | None:
        return self._row["error"]

    @property
    def model_package_version(self) -> int | None:
        pkg = self._service.store.package_for_job(self.name)
        return pkg["version"] if pkg else None

    def wait(self, poll: float = 1.0, timeout: float | None = None) -> "TrainingJob":
        """Block until the job ends; raises JobFailedError when it failed or was cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().status in ("queued", "running"):
            self._row = self._service.recover(self._row)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.name} still {self.status} after {timeout} s")
            time.sleep(poll)
        if self.status != "completed":
            raise JobFailedError(f"Job {self.name} {self.status}: {self.failure_reason}",
                                 hint="Inspect it with: tuneloop logs " + self.name)
        return self

    def __repr__(self) -> str:
        return f"TrainingJob(name={self.name!r}, status={self.status!r})"


class _Trainer:
    """Hyperparameters go in `hyperparameters={...}` or as keyword arguments named after
    tuneloop.spec's registry (`SFTTrainer(learning_rate=1e-3)`); both are checked against it here,
    with the messages the CLI gives."""

    technique: CustomizationTechnique

    def __init__(self, model: str | None = None, training_type: TrainingType | str = TrainingType.LORA,
                 model_package_group: str | None = None, training_dataset: str | None = None,
                 validation_dataset: str | None = None, *, project: str | None = None,
                 hyperparameters: dict[str, Any] | None = None, accept_eula: bool = False,
                 column_map: str | None = None, output_path: str | None = None, mlflow_uri: str | None = None,
                 mlflow_experiment_name: str | None = None, mlflow_run_name: str | None = None, **kwargs: Any):
        from tuneloop.errors import ValidationError
        from tuneloop.spec import HYPERPARAMETERS, check_hyperparameters

        model_package_group = model_package_group or kwargs.pop("model_package_group_name", None)
        output_path = output_path or kwargs.pop("s3_output_path", None)
        # SageMaker's names: mlflow_resource_arn (here: a tracking URI), mlflow_experiment_name, mlflow_run_name
        self.mlflow_uri = mlflow_uri or kwargs.pop("mlflow_resource_arn", None)
        self.mlflow_experiment_name = mlflow_experiment_name or kwargs.pop("mlflow_experiment", None)
        self.mlflow_run_name = mlflow_run_name
        knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in HYPERPARAMETERS}
        hyperparameters = {**(hyperparameters or {}), **knobs}
        self.training_type = TrainingType(training_type).value
        check_hyperparameters(hyperparameters, self.training_type, self.technique.value)
        if kwargs:
            raise ValidationError(f"Unknown argument(s) for {type(self).__name__}: {', '.join(sorted(kwargs))}.",
                                  param=next(iter(kwargs)))
        self.model = model
        self.model_package_group = model_package_group
        self.training_dataset = training_dataset
        self.validation_dataset = validation_dataset
        self.project = project
        self.hyperparameters = dict(hyperparameters or {})
        self.accept_eula = accept_eula
        self.column_map = column_map
        self.output_path = output_path

    @classmethod
    def hyperparameter_names(cls) -> list[str]:
        """The knobs this trainer takes (for its technique), in the registry's order."""
        from tuneloop.spec import HYPERPARAMETERS

        return [n for n, hp in HYPERPARAMETERS.items() if hp.applies(cls.technique.value, None)]

    def train(self, training_dataset: str | None = None, validation_dataset: str | None = None,
              wait: bool = True, force: bool = False) -> TrainingJob:
        """Submit (idempotent per technique, like the CLI) and return the job handle."""
        from tuneloop.errors import ValidationError
        from tuneloop.service.jobs import TuneRequest

        dataset = training_dataset or self.training_dataset
        dataset = str(dataset) if dataset is not None else None  # a DataSet is its name@vN
        validation = validation_dataset or self.validation_dataset
        validation = str(validation) if validation is not None else None
        if not dataset:
            raise ValidationError("No training dataset given.", hint="Pass training_dataset='train.jsonl'.",
                                  param="training_dataset")
        service = _service()
        req = TuneRequest(technique=self.technique.value, dataset=dataset, training_type=self.training_type,
                          model=self.model, project=self.project, hyperparameters=self.hyperparameters,
                          validation_dataset=validation,
                          column_map=self.column_map, output_uri=self.output_path,
                          model_package_group=self.model_package_group, accept_eula=self.accept_eula,
                          mlflow_uri=self.mlflow_uri, mlflow_experiment=self.mlflow_experiment_name,
                          mlflow_run_name=self.mlflow_run_name, **self._reward_request())
        outcome = service.submit(service.prepare(req), force=force)
        job = TrainingJob(outcome.job["id"], service)
        return job.wait() if wait else job

    def _reward_request(self) -> dict[str, Any]:
        """TuneRequest fields of RL trainers (rewards, judge); none for SFT and DPO."""
        return {}


class SFTTrainer(_Trainer):
    technique = CustomizationTechnique.SFT


class DPOTrainer(_Trainer):
    technique = CustomizationTechnique.DPO


# ---- RL: RLVR (verifiable rewards) and RLAIF (an LLM judge), GRPO underneath ---------------------------------
class _RLTrainer(_Trainer):
    def __init__(self, *args: Any, skip_reward_validation: bool = False, allow_row_rewards: list[str] | None = None,
                 unsafe_reward_sandbox: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.skip_reward_validation = skip_reward_validation
        self.allow_row_rewards, self.unsafe_reward_sandbox = list(allow_row_rewards or []), unsafe_reward_sandbox

    def _safety(self) -> dict[str, Any]:
        return {"skip_reward_validation": self.skip_reward_validation, "allow_row_rewards": self.allow_row_rewards,
                "unsafe_reward_sandbox": self.unsafe_reward_sandbox}


class RLVRTrainer(_RLTrainer):
    """GRPO with a verifiable reward: `custom_reward_function` is an Evaluator or any reward
    reference (builtin:NAME, file.py:FUNC, module:FUNC, an http(s) URL, grader JSON)."""

    technique = CustomizationTechnique.RLVR

    def __init__(self, *args: Any, custom_reward_function: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.custom_reward_function = custom_reward_function

    def _reward_request(self) -> dict[str, Any]:
        fn = self.custom_reward_function
        return {"reward_function": str(fn) if fn is not None else None, **self._safety()}


class RLAIFTrainer(_RLTrainer):
    """GRPO with an LLM judge: `reward_model_id` is the judge (catalog id, model folder, or
    openai:MODEL@BASE_URL), `reward_prompt` a Builtin.<Name>, a template, or an Evaluator."""

    technique = CustomizationTechnique.RLAIF

    def __init__(self, *args: Any, reward_model_id: str | None = None, reward_prompt: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reward_model_id, self.reward_prompt = reward_model_id, reward_prompt

    def _reward_request(self) -> dict[str, Any]:
        prompt = self.reward_prompt
        prompt = getattr(prompt, "value", prompt)
        return {"reward_prompt": str(prompt) if prompt is not None else None, "judge_model": self.reward_model_id,
                **self._safety()}
