"""The SDK's registered assets: DataSet (named, versioned datasets) and Evaluator (reward
functions and reward prompts), over the dataset and evaluator services.

    ds = DataSet.create(name="support-sft", source="data/train.jsonl", customization_technique="sft")
    ev = Evaluator.create(name="colour-match", type=EvaluatorType.RewardFunction, source="rewards.py:score")
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from tuneloop.sdk.common import services as _services
from tuneloop.sdk.train import CustomizationTechnique


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
        return cls(cls._service().get(name))

    @classmethod
    def get_all(cls, max_results: int | None = None) -> list["Evaluator"]:
        rows = cls._service().list()
        return [cls(r) for r in (rows[:max_results] if max_results else rows)]

    def get_versions(self) -> list["Evaluator"]:
        return [Evaluator(r) for r in self._service().versions(self.name)]

    def verify(self, dataset: str, samples: int = 8, judge_model: str | None = None):
        """Run it on sample rows of `dataset`; the result has `.ok`, `.reports` and `.to_dict()`."""
        return self._service().verify(self.ref, str(dataset), samples=samples, judge_model=judge_model)

    def __str__(self) -> str:
        return self.ref

    def __repr__(self) -> str:
        return f"Evaluator(name={self.name!r}, version={self.version}, type={self.type!r}, source={self.source!r})"
