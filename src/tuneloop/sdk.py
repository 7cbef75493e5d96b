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


def _service():
    from tuneloop.service.jobs import JobService
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    settings = load_settings()
    return JobService(open_store(settings.database_url), settings)


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
    technique: CustomizationTechnique

    def __init__(self, model: str | None = None, training_type: TrainingType | str = TrainingType.LORA,
                 model_package_group: str | None = None, training_dataset: str | None = None,
                 validation_dataset: str | None = None, *, project: str | None = None,
                 hyperparameters: dict[str, Any] | None = None, accept_eula: bool = False,
                 column_map: str | None = None, output_path: str | None = None, **kwargs: Any):
        from tuneloop.errors import ValidationError

        model_package_group = model_package_group or kwargs.pop("model_package_group_name", None)
        output_path = output_path or kwargs.pop("s3_output_path", None)
        if kwargs:
            raise ValidationError(f"Unknown argument(s) for {type(self).__name__}: {', '.join(sorted(kwargs))}.",
                                  param=next(iter(kwargs)))
        self.model = model
        self.training_type = TrainingType(training_type).value
        self.model_package_group = model_package_group
        self.training_dataset = training_dataset
        self.validation_dataset = validation_dataset
        self.project = project
        self.hyperparameters = dict(hyperparameters or {})
        self.accept_eula = accept_eula
        self.column_map = column_map
        self.output_path = output_path

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
                          model_package_group=self.model_package_group, accept_eula=self.accept_eula)
        outcome = service.submit(service.prepare(req), force=force)
        job = TrainingJob(outcome.job["id"], service)
        return job.wait() if wait else job


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
        from tuneloop.data.assets import DatasetAssets
        from tuneloop.settings import load_settings
        from tuneloop.store import open_store

        settings = load_settings()
        return DatasetAssets(open_store(settings.database_url), settings)

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
