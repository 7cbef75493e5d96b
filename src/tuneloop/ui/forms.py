"""The new-job form: its fields (the advanced ones generated from `tuneloop.spec`'s knob registry,
like the CLI's `tune` options), the `TuneRequest` a filled form becomes, and the `tuneloop tune`
command that asks for the same job."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.catalog import TECHNIQUES, TRAINING_TYPES, load_catalog
from tuneloop.errors import CatalogError, ValidationError
from tuneloop.rewards.policy import RowRewardPolicy
from tuneloop.service.server_paths import DATASET_HINT, MODEL_HINT, refuse_server_path
from tuneloop.spec import HYPERPARAMETERS, TuneRequest

# the form's own fields besides the knobs, in the command's order: name -> `tune`'s flag
FIELDS = {"technique": "--technique", "dataset": "--dataset", "training_type": "--training-type", "model": "--model",
          "validation_split": "--validation-split", "take": "--take", "reward_function": "--reward-function",
          "reward_prompt": "--reward-prompt", "judge_model": "--judge-model"}


ONLY_FOR = {"reward_function": ("rlvr",), "reward_prompt": ("rlaif",), "judge_model": ("rlaif",)}


@dataclass(frozen=True)
class Knob:
    """One advanced field: a registry hyperparameter as a form control."""

    name: str
    flag: str
    help: str
    scope: str
    kind: str                  # int | float | choice
    min: float
    max: float
    choices: tuple[str, ...]
    default: Any               # for the chosen technique and training type (None: the planner decides)
    applies: bool


def knobs(technique: str, training_type: str, model: str | None = None) -> list[Knob]:
    """Every registry knob with the default this job would get: the model's catalog value, else the
    generic one (None where the planner derives it from the data)."""
    entry = load_catalog().get(model or load_catalog().default_model().id)
    try:
        own = entry.default_hyperparameters(technique, training_type) if entry else {}
    except CatalogError:
        own = {}
    out = []
    for hp in HYPERPARAMETERS.values():
        applies = hp.applies(technique, training_type)
        kind = "choice" if hp.choices else hp.type.__name__
        default = own.get(hp.name, hp.default_for(technique, training_type)) if applies else None
        out.append(Knob(hp.name, hp.cli_flag, hp.help, hp.scope, kind, hp.min, hp.max, hp.choices, default, applies))
    return out


def values_of(form: dict[str, str]) -> dict[str, str]:
    """The form's non-empty values, stripped (fields and knobs by name; `model_other` and
    `dataset_other` win over the lists)."""
    vals = {k: v.strip() for k, v in form.items() if isinstance(v, str) and v.strip()}
    for key in ("model", "dataset"):
        if vals.get(f"{key}_other"):
            vals[key] = vals[f"{key}_other"]
    vals.setdefault("technique", "sft")
    vals.setdefault("training_type", "lora")
    return vals


def _number(name: str, flag: str, text: str, kind: str) -> int | float:
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise ValidationError(f"{flag} must be {'an integer' if kind == 'int' else 'a number'}, got {text!r}.",
                              hint=f"Correct the field {name} ({flag}).", param=name) from None


def tune_request(vals: dict[str, str], project: str) -> TuneRequest:
    """The request the CLI's `tune` builds from the same flags (its checks run in `prepare`)."""
    if vals.get("technique") not in TECHNIQUES:
        raise ValidationError(f"Pick a technique: {', '.join(TECHNIQUES)}.", param="technique")
    if vals.get("training_type") not in TRAINING_TYPES:
        raise ValidationError(f"Pick a training type: {', '.join(TRAINING_TYPES)}.", param="training_type")
    if not vals.get("dataset"):
        raise ValidationError("Pick a dataset.", hint="Upload one on the Datasets page, or give a file path on this "
                              "machine.", param="dataset")
    hyper: dict[str, Any] = {}
    for hp in HYPERPARAMETERS.values():
        text = vals.get(hp.name)
        if text is not None:
            hyper[hp.name] = text if hp.choices else _number(hp.name, hp.cli_flag, text, hp.type.__name__)
    t = vals["technique"]
    split = vals.get("validation_split")
    take = vals.get("take")
    return TuneRequest(
        technique=t, dataset=vals["dataset"], training_type=vals["training_type"], model=vals.get("model"),
        project=project, hyperparameters=hyper,
        validation_split=_number("validation_split", "--validation-split", split, "float") if split else None,
        take=int(_number("take", "--take", take, "int")) if take else None,
        **{name: vals.get(name) if t in ONLY_FOR[name] else None for name in ONLY_FOR})


def refuse_server_paths(vals: dict[str, str], models_dir: Path, uploads: Path) -> None:
    """The fine-tuning API's rule for a viewer with a project key (service/server_paths.py): the
    models are ids or lie under the models dir; the dataset is a registered one (uploaded on the
    Datasets page), an hf:// dataset or a file under the UI's uploads; the reward is what a dataset
    row may name (rewards/policy.py: builtin:, a registered evaluator) or grader JSON, and the
    reward prompt no file of the server's."""
    for name in ("model", "judge_model"):
        if vals.get(name):
            refuse_server_path(vals[name], param=name, roots=(models_dir,), hint=MODEL_HINT)
    if vals.get("dataset"):
        refuse_server_path(vals["dataset"], param="dataset", roots=(uploads,), urls=("hf://",), hint=DATASET_HINT)
    fn = vals.get("reward_function")
    if fn and not fn.lstrip().startswith("{"):           # grader JSON: python graders run in the sandbox
        if RowRewardPolicy.for_job()(fn) is not None:     # what a dataset row may name: no file, module or URL
            raise ValidationError(f"reward_function {fn!r} would run code or reach a URL of this server's choosing; "
                                  "with a project key it is a builtin: reward, grader JSON or a registered evaluator.",
                                  param="reward_function", hint="Pick builtin:NAME, paste a grader, or ask the "
                                  "server's user to register the reward (tuneloop evaluators create).")
    if vals.get("reward_prompt"):                         # a template file, else inline text or Builtin.*
        refuse_server_path(vals["reward_prompt"], param="reward_prompt", roots=(),
                           hint="Use a Builtin.* prompt, inline text or a registered evaluator.")


def command(vals: dict[str, str], project: str, force: bool = False) -> str:
    """`tuneloop tune ...` with the same flags, in the form's order (only what was given)."""
    parts = ["tuneloop", "tune"]
    t = vals.get("technique")
    for name, flag in FIELDS.items():
        value = vals.get(name)
        if value is None or (name == "training_type" and value == "lora"):
            continue
        if name in ONLY_FOR and t not in ONLY_FOR[name]:   # what tune_request drops for this technique
            continue
        parts += [flag, value]
    for hp in HYPERPARAMETERS.values():
        if vals.get(hp.name) is not None:
            parts += [hp.cli_flag, vals[hp.name]]
    if project != "default":
        parts += ["--project", project]
    if force:
        parts.append("--force")
    return " ".join(shlex.quote(p) for p in parts)
