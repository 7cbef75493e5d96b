"""Evaluator assets: named, versioned reward functions and reward prompts (SageMaker V3's
`Evaluator.create(name, type=RewardFunction|RewardPrompt, source)`), usable anywhere a reward
reference goes as `name` (the latest version) or `name@vN`.

    assets = EvaluatorAssets(store, settings)
    row, added = assets.create("colour-match", "reward-function", "rewards.py:score")
    row["ref"]      # "colour-match@v1"

A version freezes what it runs: a Python file, grader JSON or prompt template is copied to
`$TUNELOOP_HOME/evaluators/<name>/v<N>/`, so editing the original later does not change it.
Built-ins, modules and URLs are kept as references. Creating the same content again returns the
existing version; different content becomes the next version.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.rewards.functions import RefError, parse_ref, ref_hint
from tuneloop.rewards.policy import module_problem

TYPES = ("reward-function", "reward-prompt")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


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


class EvaluatorAssets:
    def __init__(self, store, settings):
        self.store, self.settings = store, settings

    def folder(self, name: str, version: int) -> Path:
        return self.settings.home / "evaluators" / name / f"v{version}"

    def create(self, name: str, type: str | None, source: str, description: str | None = None,
               base_dir: Path | None = None) -> tuple[dict[str, Any], bool]:
        if not _NAME.match(name or ""):
            raise ValidationError(f"Evaluator name {name!r} is not valid.",
                                  hint="Use up to 128 letters, digits, '-' and '_', starting with a letter or digit.",
                                  param="name")
        kind_type = normalize_type(type, source)
        existing = self.store.get_evaluator(name)
        if existing is not None and existing["type"] != kind_type:
            raise ValidationError(f"Evaluator {name} is a {existing['type']}; a new version cannot be a {kind_type}.",
                                  hint="Pick another name.", param="type")
        base = Path(base_dir or Path.cwd())
        kind, target, content, files = self._materialize(kind_type, source, base)
        sha = hashlib.sha256(content).hexdigest()
        staged = {"kind": kind, "source": source, "target": target, "sha256": sha}
        row, added = self.store.add_evaluator_version(name, kind_type, staged, description)
        if added and files:  # freeze the content next to the version, then point the version at it
            dest = self.folder(name, row["version"])
            dest.mkdir(parents=True, exist_ok=True)
            for filename, data in files.items():
                (dest / filename).write_bytes(data)
            frozen = target.replace("{folder}", str(dest))
            with self.store.engine.begin() as conn:
                from sqlalchemy import update

                from tuneloop.store.db import evaluator_versions

                conn.execute(update(evaluator_versions).where(evaluator_versions.c.id == row["id"])
                             .values(target=frozen))
            row = self.store.get_evaluator_version(row["ref"])
        return row, added

    def _materialize(self, kind_type: str, source: str, base: Path) -> tuple[str, str, bytes, dict[str, bytes]]:
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
            from tuneloop.netguard import check_url

            check_url(r.value, what="reward endpoint")
        if kind_type == "reward-prompt":
            if r.kind != "prompt":
                raise ValidationError(f"{source!r} is a reward function ({r.kind}), not a reward prompt.",
                                      hint="Use --type reward-function, or give Builtin.<Name>, a template file or "
                                           "text with {{ completion }}.", param="source")
            from tuneloop.rewards.prompts import PromptError, load_prompt

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
            from tuneloop.rewards.graders import GraderConfigError, check_grader

            try:
                spec = json.loads(text)
                check_grader(spec)
            except (ValueError, GraderConfigError) as e:
                raise ValidationError(f"Invalid grader: {e}", param="source") from None
            data = json.dumps(spec, indent=2, sort_keys=True).encode()
            return "grader", "{folder}/grader.json", data, {"grader.json": data}
        if r.kind == "builtin":
            from tuneloop.rewards.graders import builtin_names

            if r.value not in builtin_names():
                raise ValidationError(f"Unknown built-in grader {r.value!r}.",
                                      hint="Built-ins: " + ", ".join(builtin_names()), param="source")
        return r.kind, source, source.encode(), {}   # builtin, module, http: kept as references

    def get(self, ref: str) -> dict[str, Any]:
        row = self.store.get_evaluator_version(ref)
        if row is None:
            raise NotFoundError(f"No evaluator {ref!r}.", hint="List them with: tuneloop evaluators list",
                                param="evaluator")
        return row

    def versions(self, name: str) -> list[dict[str, Any]]:
        rows = self.store.list_evaluator_versions(name)
        if not rows:
            raise NotFoundError(f"No evaluator {name!r}.", hint="List them with: tuneloop evaluators list",
                                param="evaluator")
        return rows

    def list(self) -> list[dict[str, Any]]:
        """The latest version of each evaluator."""
        latest: dict[str, dict[str, Any]] = {}
        for row in self.store.list_evaluator_versions():
            latest[row["name"]] = row
        return list(latest.values())

    def content(self, row: dict[str, Any]) -> str | None:
        """The frozen file's text (code, grader JSON or prompt), when the version has one."""
        target = row["target"].rsplit(":", 1)[0] if row["kind"] == "file" else row["target"]
        path = Path(target)
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
