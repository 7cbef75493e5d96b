"""What an evaluator version freezes: the checks of a reward reference given as an evaluator's
source, the content its version is keyed by, and the files copied beside it. Pure: the
evaluator service (service/evaluators.py) stores the version (store/assets.py) and writes the
files to `$TUNELOOP_HOME/evaluators/<name>/v<N>/`.

    frozen = materialize("reward-function", "rewards.py:score", Path.cwd())
    frozen.kind, frozen.target, frozen.sha256     # "file", "{folder}/rewards.py:score", ...
    frozen.files                                  # {"rewards.py": b"..."}: written into {folder}

Built-ins, modules and URLs are kept as references (no files).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.netguard import check_url
from tuneloop.rewards.functions import RefError, parse_ref, ref_hint
from tuneloop.rewards.graders import GraderConfigError, builtin_names, check_grader
from tuneloop.rewards.policy import module_problem
from tuneloop.rewards.prompts import PromptError, load_prompt

TYPES = ("reward-function", "reward-prompt")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ValidationError(f"Evaluator name {name!r} is not valid.",
                              hint="Use up to 128 letters, digits, '-' and '_', starting with a letter or digit.",
                              param="name")
    return name


def normalize_type(value: str | None, source: str) -> str:
    """'reward-function' | 'reward-prompt' from the names SageMaker and users write; inferred when None."""
    if value is None:
        try:
            return "reward-prompt" if parse_ref(source).kind == "prompt" else "reward-function"
        except RefError as e:
            raise ValidationError(str(e), hint=ref_hint(), param="source") from None
    key = re.sub(r"[^a-z]", "", str(getattr(value, "value", value)).lower())
    found = {"rewardfunction": "reward-function", "function": "reward-function",
             "rewardprompt": "reward-prompt", "prompt": "reward-prompt"}.get(key)
    if found is None:
        raise ValidationError(f"Unknown evaluator type {value!r}.", hint="Use --type reward-function or reward-prompt.",
                              param="type")
    return found


@dataclass(frozen=True)
class Frozen:
    """What a version holds: its kind, what runs (`{folder}` stands for the version's folder),
    the content its sha256 is of, and the files to write into the folder."""

    kind: str
    target: str
    content: bytes
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def placed(self, folder: Path) -> str:
        """The target once the files are in `folder`."""
        return self.target.replace("{folder}", str(folder))


def materialize(kind_type: str, source: str, base: Path) -> Frozen:
    """Check `source` as an evaluator of `kind_type` (files read relative to `base`) and what its
    version freezes."""
    return Frozen(*_materialize(kind_type, source, base))


def _materialize(kind_type: str, source: str, base: Path) -> tuple[str, str, bytes, dict[str, bytes]]:
    """(kind, target with {folder} for frozen copies, content to hash, files to write)."""
    try:
        r = parse_ref(source)
    except RefError as e:
        raise ValidationError(str(e), hint=ref_hint(), param="source") from None
    if r.kind == "evaluator":
        raise ValidationError(f"{source!r} is not a file, module, URL, built-in, grader or prompt.",
                              hint=ref_hint(), param="source")
    if r.kind == "module" and module_problem(r.value):
        raise ValidationError(f"Refusing {source!r}: {module_problem(r.value)}.", param="source")
    if r.kind == "http":
        check_url(r.value, what="reward endpoint")
    if kind_type == "reward-prompt":
        if r.kind != "prompt":
            raise ValidationError(f"{source!r} is a reward function ({r.kind}), not a reward prompt.",
                                  hint="Use --type reward-function, or give Builtin.<Name>, a template file or "
                                       "text with {{ completion }}.", param="source")
        try:
            prompt = load_prompt(source, base)
        except PromptError as e:
            raise ValidationError(str(e), param="source") from None
        if source.startswith("Builtin."):
            return "prompt", prompt.name, prompt.name.encode(), {}
        return "prompt", "{folder}/prompt.txt", prompt.template.encode(), {"prompt.txt": prompt.template.encode()}
    if r.kind == "prompt":
        raise ValidationError(f"{source!r} reads as a reward prompt, not a reward function.",
                              hint="Use --type reward-prompt.", param="source")
    if r.kind == "file":
        path = (base / r.value) if not Path(r.value).is_absolute() else Path(r.value)
        if not path.is_file():
            raise ValidationError(f"Reward function file {r.value} not found.", param="source")
        data = path.read_bytes()
        return "file", f"{{folder}}/{path.name}:{r.function}", data + b"\0" + r.function.encode(), \
            {path.name: data}
    if r.kind == "grader":
        text = r.value
        if not text.startswith("{"):
            path = (base / text) if not Path(text).is_absolute() else Path(text)
            if not path.is_file():
                raise ValidationError(f"Grader file {text} not found.", param="source")
            text = path.read_text(encoding="utf-8")
        try:
            spec = json.loads(text)
            check_grader(spec)
        except (ValueError, GraderConfigError) as e:
            raise ValidationError(f"Invalid grader: {e}", param="source") from None
        data = json.dumps(spec, indent=2, sort_keys=True).encode()
        return "grader", "{folder}/grader.json", data, {"grader.json": data}
    if r.kind == "builtin":
        if r.value not in builtin_names():
            raise ValidationError(f"Unknown built-in grader {r.value!r}.",
                                  hint="Built-ins: " + ", ".join(builtin_names()), param="source")
    return r.kind, source, source.encode(), {}   # builtin, module, http: kept as references


def frozen_content(row: dict[str, Any]) -> str | None:
    """A version's frozen file's text (code, grader JSON or prompt), when it has one."""
    target = row["target"].rsplit(":", 1)[0] if row["kind"] == "file" else row["target"]
    path = Path(target)
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
