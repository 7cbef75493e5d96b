"""The Python SDK, after SageMaker V3's trainer classes. Same service as the CLI underneath.

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


class TrainingType(str, Enum):
    LORA = "lora"
    FULL = "full-rank"


class CustomizationTechnique(str, Enum):
    SFT = "sft"
    DPO = "dpo"
    RLVR = "rlvr"
    RLAIF = "rlaif"


def _services():
    from tuneloop.service.app import open_services

    return open_services()


def _service():
    return _services().jobs


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


class DataSet:
    """A registered, versioned dataset (SageMaker V3's DataSet, self-hosted).

        ds = DataSet.create(name="support-sft", source="data/train.jsonl",
                            customization_technique=CustomizationTechnique.SFT)
        train, validation = ds.split(train_split_ratio=0.9)
        SFTTrainer(training_dataset=train, validation_dataset=validation).train()

    `str(ds)` is `name@vN`, which every dataset argument (CLI, SDK) accepts."""

    def __init__(self, row: dict[str, Any]):
        self._row = dict(row)

    name = property(lambda self: self._row["name"])
    version = property(lambda self: self._row["version"])
    ref = property(lambda self: self._row["ref"])
    source = property(lambda self: self._row["source"])
    sha256 = property(lambda self: self._row["sha256"])
    rows = property(lambda self: self._row["rows"])
    columns = property(lambda self: list(self._row["columns"]))
    path = property(lambda self: self._row["path"])
    format = property(lambda self: self._row["format"])
    parent = property(lambda self: self._row.get("parent"))
    created_time = property(lambda self: self._row["created_at"])
    stats = property(lambda self: dict(self._row.get("stats") or {}))

    @property
    def arn(self) -> str:
        return f"tuneloop:dataset/{self.ref}"

    @property
    def customization_technique(self) -> CustomizationTechnique:
        return CustomizationTechnique(self._row["technique"])

    @staticmethod
    def _assets():
        return _services().datasets

    @classmethod
    def create(cls, name: str, source: str, customization_technique: CustomizationTechnique | str | None = None,
               wait: bool = True, description: str = "", *, column_map: str | None = None,
               no_transform: bool = False, take: int | None = None, **kwargs: Any) -> "DataSet":
        """Validate and stage `source`, then store it as the next version of `name` (identical
        content returns the existing version). `data_location` is accepted for `source`."""
        from tuneloop.errors import ValidationError

        source = source or kwargs.pop("data_location", None)
        if kwargs:
            raise ValidationError(f"Unknown argument(s) for DataSet.create: {', '.join(sorted(kwargs))}.",
                                  param=next(iter(kwargs)))
        if customization_technique is None:
            raise ValidationError("DataSet.create needs customization_technique (SFT, DPO, RLVR or RLAIF).",
                                  param="customization_technique")
        technique = CustomizationTechnique(str(getattr(customization_technique, "value", customization_technique))
                                           .lower()).value
        row, _ = cls._assets().create(name, str(source), technique, column_map=column_map,
                                      no_transform=no_transform, take=take, description=description or None)
        return cls(row)

    @classmethod
    def get(cls, name: str) -> "DataSet":
        """`name` (latest version) or `name@vN`."""
        return cls(cls._assets().get(name))

    @classmethod
    def get_all(cls, max_results: int | None = None) -> list["DataSet"]:
        rows = cls._assets().list()
        return [cls(r) for r in rows[:max_results] if r] if max_results else [cls(r) for r in rows]

    def get_versions(self) -> list["DataSet"]:
        return [DataSet(r) for r in self._assets().versions(self.name)]

    def split(self, train_split_ratio: float = 0.8, seed: int = 0) -> tuple["DataSet", "DataSet"]:
        """Deterministic split into `<name>-train` and `<name>-validation` datasets."""
        train, val = self._assets().split(self.ref, ratio=train_split_ratio, seed=seed)
        return DataSet(train), DataSet(val)

    def delete(self) -> None:
        self._assets().delete(self.ref)

    def refresh(self) -> "DataSet":
        self._row = self._assets().get(self.ref)
        return self

    def __str__(self) -> str:
        return self.ref

    def __repr__(self) -> str:
        return (f"DataSet(name={self.name!r}, version={self.version}, technique={self._row['technique']!r}, "
                f"rows={self.rows}, sha256={self.sha256[:12]!r}, source={self.source!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataSet) and other.ref == self.ref and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash((self.ref, self.sha256))


class SFTTrainer(_Trainer):
    technique = CustomizationTechnique.SFT


class DPOTrainer(_Trainer):
    technique = CustomizationTechnique.DPO


# ---- RL: RLVR, RLAIF and evaluators (SageMaker V3 names) -----------------------------------------------
class EvaluatorType(str, Enum):
    RewardFunction = "reward-function"
    RewardPrompt = "reward-prompt"
    REWARD_FUNCTION = "reward-function"
    REWARD_PROMPT = "reward-prompt"


class Evaluator:
    """A registered, versioned reward function or reward prompt.

        ev = Evaluator.create(name="colour-match", type=EvaluatorType.RewardFunction, source="rewards.py:score")
        ev.verify("data/train.jsonl").ok
        RLVRTrainer(custom_reward_function=ev, training_dataset="data/train.jsonl").train()

    `str(ev)` is `name@vN`, which every reward argument (CLI, SDK) accepts."""

    def __init__(self, row: dict[str, Any]):
        self._row = dict(row)

    name = property(lambda self: self._row["name"])
    version = property(lambda self: self._row["version"])
    ref = property(lambda self: self._row["ref"])
    type = property(lambda self: self._row["type"])
    source = property(lambda self: self._row["source"])
    sha256 = property(lambda self: self._row["sha256"])
    created_time = property(lambda self: self._row["created_at"])

    @property
    def arn(self) -> str:
        return f"tuneloop:evaluator/{self.ref}"

    @staticmethod
    def _service():
        return _services().evaluators

    @classmethod
    def create(cls, name: str, type: EvaluatorType | str | None = None, source: str | None = None,
               description: str | None = None, wait: bool = True, **kwargs: Any) -> "Evaluator":
        """Register `source` (a reward reference) as the next version of `name`; the same content
        returns the existing version. `reward_function`/`prompt` are accepted for `source`."""
        from tuneloop.errors import ValidationError

        source = source or kwargs.pop("reward_function", None) or kwargs.pop("prompt", None)
        if kwargs:
            raise ValidationError(f"Unknown argument(s) for Evaluator.create: {', '.join(sorted(kwargs))}.",
                                  param=next(iter(kwargs)))
        if not source:
            raise ValidationError("Evaluator.create needs a source (a reward function or prompt reference).",
                                  param="source")
        row, _ = cls._service().create(name, str(source), type=type, description=description)
        return cls(row)

    @classmethod
    def get(cls, name: str) -> "Evaluator":
        """`name` (latest version) or `name@vN`."""
        return cls(cls._service().assets.get(name))

    @classmethod
    def get_all(cls, max_results: int | None = None) -> list["Evaluator"]:
        rows = cls._service().assets.list()
        return [cls(r) for r in (rows[:max_results] if max_results else rows)]

    def get_versions(self) -> list["Evaluator"]:
        return [Evaluator(r) for r in self._service().assets.versions(self.name)]

    def verify(self, dataset: str, samples: int = 8, judge_model: str | None = None):
        """Run it on sample rows of `dataset`; the result has `.ok`, `.reports` and `.to_dict()`."""
        return self._service().verify(self.ref, str(dataset), samples=samples, judge_model=judge_model)

    def __str__(self) -> str:
        return self.ref

    def __repr__(self) -> str:
        return f"Evaluator(name={self.name!r}, version={self.version}, type={self.type!r}, source={self.source!r})"


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


# ---- Evaluation (SageMaker V3 names): benchmark, custom scorer, LLM-as-judge ------------------------------
class EvaluationResult:
    """What an evaluator's `evaluate()` returns: it has run (evaluation is synchronous here), so
    `wait()` returns at once. `results` holds the metrics of the model (and base), `output_path` the
    folder with results.json, report.md and metrics.png."""

    def __init__(self, result: dict[str, Any]):
        self.results = result
        self.status = "Completed"
        self.output_path = result["output"]

    def wait(self) -> "EvaluationResult":
        return self

    def refresh(self) -> "EvaluationResult":
        return self

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.results["model"])

    @property
    def base_metrics(self) -> dict[str, float] | None:
        return dict(self.results["base"]) if self.results.get("base") else None

    def show_results(self) -> None:
        from pathlib import Path

        print(Path(self.output_path, "report.md").read_text())


class _Evaluation:
    def __init__(self, model: Any, dataset: Any, *, evaluate_base_model: bool = False, s3_output_path: str | None = None,
                 output_path: str | None = None, project: str | None = None, max_new_tokens: int = 64,
                 samples: int | None = None):
        self.model = str(getattr(model, "output_path", None) or model)   # a TrainingJob, a reference or a folder
        self.dataset = str(dataset) if dataset is not None else None
        self.evaluate_base_model = evaluate_base_model
        self.output = output_path or s3_output_path
        self.project, self.max_new_tokens, self.samples = project, max_new_tokens, samples

    def _run(self, **kwargs: Any) -> EvaluationResult:
        from tuneloop.errors import ValidationError
        from tuneloop.evaluation.run import EvalRequest, evaluate

        if not self.dataset:
            raise ValidationError("No evaluation dataset given.", hint="Pass dataset='eval.jsonl'.", param="dataset")
        req = EvalRequest(model=self.model, dataset=self.dataset, compare_base=self.evaluate_base_model,
                          output=self.output, project=self.project, max_new_tokens=self.max_new_tokens,
                          samples=self.samples, **kwargs)
        services = _services()
        return EvaluationResult(evaluate(req, lookups=services.jobs.model_lookups(),
                                         dataset_lookup=services.dataset_lookup()))


class CustomScorerEvaluator(_Evaluation):
    """Score a model's answers with a reward function: an Evaluator, or any reward reference
    (builtin:NAME, file.py:FUNC, an http(s) URL, grader JSON).

        CustomScorerEvaluator(evaluator="builtin:exact_match", dataset="val.jsonl", model=job,
                              evaluate_base_model=True).evaluate().metrics"""

    def __init__(self, evaluator: Any, dataset: Any, model: Any, **kwargs: Any):
        super().__init__(model, dataset, **kwargs)
        self.evaluators = [str(e) for e in (evaluator if isinstance(evaluator, (list, tuple)) else [evaluator])]

    def evaluate(self) -> EvaluationResult:
        return self._run(evaluators=self.evaluators, technique="rlvr")


class LLMAsJudgeEvaluator(_Evaluation):
    """A judge model scores the answers on built-in metrics (Correctness, Helpfulness, Harmlessness,
    Conciseness, Summarize) and custom rubric prompts; with evaluate_base_model=True it also
    compares the model's and the base model's answers pairwise for a win rate.

        LLMAsJudgeEvaluator(model=job, evaluator_model="openai:gpt-4o-mini@http://host/v1",
                            dataset="prompts.jsonl", builtin_metrics=["Correctness"]).evaluate()"""

    def __init__(self, model: Any, evaluator_model: str, dataset: Any, builtin_metrics: list[str] | None = None,
                 custom_metrics: list[Any] | None = None, **kwargs: Any):
        super().__init__(model, dataset, **kwargs)
        names = [m if str(m).startswith("Builtin.") else f"Builtin.{str(m).capitalize()}" for m in builtin_metrics or []]
        self.evaluators = names + [str(getattr(m, "ref", m)) for m in custom_metrics or []]
        if not self.evaluators and not self.evaluate_base_model:
            self.evaluators = ["Builtin.Correctness"]
        self.judge = evaluator_model

    def evaluate(self) -> EvaluationResult:
        return self._run(evaluators=self.evaluators, judge=self.judge, technique="rlvr")


class BenchMarkEvaluator(_Evaluation):
    """A standard benchmark (e.g. "mmlu", "gsm8k", "hellaswag") through EleutherAI's lm-eval, when it
    and the benchmark's data are available; otherwise a clear error saying what is missing."""

    def __init__(self, benchmark: Any, model: Any, **kwargs: Any):
        super().__init__(model, None, **kwargs)
        self.benchmark = str(getattr(benchmark, "value", benchmark)).lower()

    def evaluate(self) -> EvaluationResult:
        from tuneloop.evaluation.benchmark import run_benchmark

        return EvaluationResult(run_benchmark(self.benchmark, self.model, project=self.project, samples=self.samples,
                                              output=self.output, lookups=_service().model_lookups()))
