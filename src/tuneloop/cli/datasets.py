"""tuneloop datasets stage|create|list|show|versions|split|delete: validate, stage and register data.

    tuneloop datasets stage --technique dpo --dataset "hf://org/name?file=*pref*" --output staged.jsonl
    tuneloop datasets create support-sft --dataset data/ --technique sft
    tuneloop datasets split support-sft --ratio 0.9 --seed 0
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from tuneloop.cli.common import handle_errors, print_json

app = typer.Typer(help="Validate, stage and register datasets (named, versioned by content).",
                  no_args_is_help=True)


def _assets():
    from tuneloop.cli.common import services

    return services().datasets


def _technique(technique: str) -> str:
    from tuneloop.catalog import normalize_technique

    return normalize_technique(technique)


def _reward(technique: str, reward_function: str | None, reward_prompt: str | None) -> str | None:
    return reward_function if technique == "rlvr" else reward_prompt if technique == "rlaif" else None


def _lengths(staged, technique: str, model: str, max_seq_length: int | None) -> dict[str, Any]:
    """Token lengths with the model's tokenizer.json: built-ins are built locally, catalog models
    only when they are in the local Hugging Face cache."""
    from tuneloop.data.lengths import token_lengths
    from tuneloop.models.resolve import resolve
    from tuneloop.service.models import model_defaults
    from tuneloop.settings import load_settings

    kind = technique if technique in ("sft", "dpo") else "sft"
    resolved = resolve(model, technique=kind, training_type="lora", models_dir=load_settings().models_dir)
    folder = resolved.local_folder()
    max_len = max_seq_length or model_defaults(resolved, kind, "lora").get("dataset_max_len")
    if folder is None or not (folder / "tokenizer.json").is_file():
        return {"model": resolved.id, "available": False, "max_length": max_len,
                "reason": f"the tokenizer of {resolved.id} is not on this machine (not in the local Hugging Face "
                          "cache); token lengths need it"}
    return {"model": resolved.id, "available": True} | token_lengths(staged.path, technique, folder, max_len)


def _render_stage(staged, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    data = staged.to_dict() | (extra or {})
    if as_json:
        return print_json(data)
    for note in staged.notes:
        print(note, file=sys.stderr)
    for w in staged.warnings:
        print(f"⚠️  {w}", file=sys.stderr)
    if extra:
        for k, v in extra.items():
            print(f"{k}: {v}")
    print(f"Staged {staged.rows} row(s) to {staged.path}")
    print(f"  format        {staged.format} -> {', '.join(staged.columns)}")
    print(f"  rows          read {staged.rows_read}, written {staged.rows}")
    print(f"  empty fields  {staged.empty_fields} (in {staged.empty_rows} row(s))")
    print(f"  duplicates    {staged.duplicates}")
    print(f"  sha256        {staged.sha256}")
    if len(staged.files) > 1:
        print(f"  files         {len(staged.files)}: " + ", ".join(f.rsplit('/', 1)[-1] for f in staged.files))
    lengths = staged.lengths
    if lengths:
        if not lengths.get("available"):
            print(f"  tokens        not measured: {lengths['reason']}")
        else:
            print(f"  tokens        ({lengths['model']}{', chat template' if lengths.get('chat_template') else ''}) "
                  f"min {lengths['min']}, p50 {lengths['p50']}, p90 {lengths['p90']}, p99 {lengths['p99']}, "
                  f"max {lengths['max']}, mean {lengths['mean']}")
            if lengths.get("max_length"):
                print(f"  too long      {lengths['over_max']} row(s) longer than {lengths['max_length']} tokens"
                      + (" (they will be truncated)" if lengths["over_max"] else ""))


@app.command("stage")
@handle_errors
def stage(
    technique: str = typer.Option(..., "--technique", help="sft | dpo | rlvr | rlaif"),
    dataset: str = typer.Option(..., "--dataset", help="File, folder, fsspec URL, hf://org/name/split?file=PATTERN, or NAME / NAME@vN."),
    output: Path = typer.Option(..., "--output", help="Where to write the canonical JSONL."),
    column_map: Optional[str] = typer.Option(None, "--column-map", help='"src:dst,..." or "dst=src,..."'),
    no_transform: bool = typer.Option(False, "--no-transform", help="Halt instead of flattening chat-format columns."),
    take: Optional[int] = typer.Option(None, "--take", min=1, help="Only the first N rows."),
    model: Optional[str] = typer.Option(None, "--model", help="Measure token lengths with this model's tokenizer."),
    max_seq_length: Optional[int] = typer.Option(None, "--max-seq-length", help="Count rows longer than this (tokens)."),
    reward_function: Optional[str] = typer.Option(None, "--reward-function", help="RLVR rows without reward_model get this."),
    reward_prompt: Optional[str] = typer.Option(None, "--reward-prompt", help="RLAIF rows without reward_model get this."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Validate every record of a dataset and write canonical JSONL (the pipeline `tune` uses)."""
    from tuneloop.data.limits import shell_arg
    from tuneloop.data.stage import stage_dataset
    from tuneloop.service.app import registered_dataset_lookup

    t = _technique(technique)
    staged = stage_dataset(dataset, t, output, column_map=column_map, no_transform=no_transform, take=take,
                           reward_model=_reward(t, reward_function, reward_prompt), lookup=registered_dataset_lookup(),
                           command=f"tuneloop datasets stage --technique {t} --output {shell_arg(str(output))}")
    if model:
        staged.lengths = _lengths(staged, t, model, max_seq_length)
    _render_stage(staged, as_json)


@app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., help="Dataset name: lower-case letters, digits, '.', '_', '-'."),
    dataset: str = typer.Option(..., "--dataset", help="Source: file, folder, fsspec URL, hf://..., or NAME / NAME@vN."),
    technique: str = typer.Option(..., "--technique", help="sft | dpo | rlvr | rlaif"),
    column_map: Optional[str] = typer.Option(None, "--column-map"),
    no_transform: bool = typer.Option(False, "--no-transform"),
    take: Optional[int] = typer.Option(None, "--take", min=1),
    description: Optional[str] = typer.Option(None, "--description"),
    reward_function: Optional[str] = typer.Option(None, "--reward-function"),
    reward_prompt: Optional[str] = typer.Option(None, "--reward-prompt"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Stage a dataset and store it as a new version of NAME (identical content adds no version)."""
    t = _technique(technique)
    row, staged = _assets().create(name, dataset, t, column_map=column_map, no_transform=no_transform, take=take,
                                   reward_model=_reward(t, reward_function, reward_prompt), description=description,
                                   command=f"tuneloop datasets create {name} --technique {t}")
    if as_json:
        return print_json(_public(row))
    for note in staged.notes:
        print(note, file=sys.stderr)
    for w in staged.warnings:
        print(f"⚠️  {w}", file=sys.stderr)
    verb = "Created" if row["created"] else "Unchanged: identical content is already"
    print(f"{verb} {row['ref']} ({row['rows']} rows, {row['technique']}, sha256 {row['sha256'][:12]})")


@app.command("list")
@handle_errors
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered datasets (latest version of each)."""
    rows = _assets().list()
    if as_json:
        return print_json([_public(r) for r in rows])
    if not rows:
        print("No datasets yet. Create one: tuneloop datasets create NAME --dataset FILE --technique sft")
        return
    print(f"{'NAME':<32}{'LATEST':<8}{'VERSIONS':<10}{'TECHNIQUE':<11}{'ROWS':>8}  CREATED")
    for r in rows:
        print(f"{r['name']:<32}{'v' + str(r['version']):<8}{r['versions']:<10}{r['technique']:<11}{r['rows']:>8}  "
              f"{r['created_at']:%Y-%m-%d %H:%M}")


@app.command("versions")
@handle_errors
def versions(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version of a dataset."""
    rows = _assets().versions(name)
    if as_json:
        return print_json([_public(r) for r in rows])
    print(f"{'VERSION':<10}{'ROWS':>8}  {'SHA256':<14}{'FORMAT':<22}{'CREATED':<18}SOURCE")
    for r in rows:
        print(f"{r['ref']:<10}{r['rows']:>8}  {r['sha256'][:12]:<14}{r['format']:<22}{r['created_at']:%Y-%m-%d %H:%M}  "
              f"{r['source']}")


@app.command("show")
@handle_errors
def show(ref: str = typer.Argument(..., help="NAME or NAME@vN"),
         rows: int = typer.Option(3, "--rows", help="Sample rows to print."),
         model: Optional[str] = typer.Option(None, "--model", help="Also measure token lengths with this model."),
         max_seq_length: Optional[int] = typer.Option(None, "--max-seq-length"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Schema, counts, sample rows and lengths of a dataset version."""
    assets = _assets()
    row = assets.get(ref)
    data = _public(row) | {"sample": assets.sample(row, rows)}
    if model:
        from tuneloop.data.stage import StageResult

        data["token_lengths"] = _lengths(StageResult(Path(row["path"]), row["rows"], row["sha256"], row["columns"]),
                                         row["technique"], model, max_seq_length)
    if as_json:
        return print_json(data)
    stats = row["stats"] or {}
    print(f"{row['ref']}  ({row['technique']}, {row['rows']} rows, format {row['format']})")
    print(f"  columns     {', '.join(row['columns'])}")
    print(f"  source      {row['source']}" + (f"  (split from {row['parent']})" if row["parent"] else ""))
    print(f"  sha256      {row['sha256']}")
    print(f"  path        {row['path']}")
    print(f"  counts      read {stats.get('rows_read', row['rows'])}, empty fields {stats.get('empty_fields', 0)}, "
          f"duplicates {stats.get('duplicates', 0)}")
    for col, s in (stats.get("lengths") or {}).items():
        print(f"  chars       {col}: min {s['min']}, p50 {s['p50']}, p90 {s['p90']}, max {s['max']}")
    tl = data.get("token_lengths")
    if tl:
        if tl.get("available"):
            print(f"  tokens      p50 {tl['p50']}, p90 {tl['p90']}, max {tl['max']}; "
                  f"{tl.get('over_max', 0)} row(s) longer than {tl.get('max_length')}")
        else:
            print(f"  tokens      not measured: {tl['reason']}")
    import json

    for i, sample in enumerate(data["sample"], start=1):
        text = json.dumps(sample, ensure_ascii=False)
        print(f"  row {i}      {text[:200]}{'...' if len(text) > 200 else ''}")


@app.command("split")
@handle_errors
def split(ref: str = typer.Argument(..., help="NAME or NAME@vN"),
          ratio: float = typer.Option(0.9, "--ratio", help="Share of rows for training."),
          seed: int = typer.Option(0, "--seed", help="Same seed, same split."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Split a version into NAME-train and NAME-validation (deterministic for a seed)."""
    train, val = _assets().split(ref, ratio=ratio, seed=seed)
    if as_json:
        return print_json({"train": _public(train), "validation": _public(val)})
    for r in (train, val):
        print(f"{'Created' if r['created'] else 'Unchanged'} {r['ref']} ({r['rows']} rows, from {r['parent']})")


@app.command("delete")
@handle_errors
def delete(ref: str = typer.Argument(..., help="NAME (all versions) or NAME@vN"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Delete a dataset version, or a dataset with all its versions."""
    gone = _assets().delete(ref)
    if as_json:
        return print_json([r["ref"] for r in gone])
    print("Deleted " + ", ".join(r["ref"] for r in gone))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("ref", "name", "version", "technique", "format", "rows", "sha256", "columns", "source", "column_map",
            "path", "parent", "stats", "created_at", "created", "versions")
    return {k: row[k] for k in keep if k in row}
