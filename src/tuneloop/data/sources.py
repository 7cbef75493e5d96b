"""Dataset sources: where the files of a `--dataset` value are, and which of them to read.

    local file or directory     train.jsonl, ./data/, file:///abs/train.parquet
    any fsspec URL              s3://bucket/prefix/train.jsonl (s3fs, the usual AWS credentials), memory://...
    Hugging Face Hub            hf://org/name[/split][?file=pattern]   (huggingface_hub, HF_TOKEN)
    a registered dataset        name or name@vN                          (tuneloop datasets create)

A directory, a URL prefix or a Hub repository can hold several data files. Its split comes from
the file layout (`data/train-00000-of-00002.parquet`, `train.jsonl`, `train/...`; `train` when no
split is named and the layout has one), `?file=` narrows the files (a pattern with `*`, `?` or `[`
is an fnmatch glob on the file name, anything else a substring of it), and files with different
column sets are refused with the seed's "Schema divergence" message. Resolution only lists and
downloads; `stage.py` reads.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from tuneloop.data import limits, readers
from tuneloop.data.limits import shell_arg
from tuneloop.errors import DatasetError

SPLIT_WORDS = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}
_SPLIT_RE = re.compile(r"(?:^|[-._ /0-9])(" + "|".join(sorted(SPLIT_WORDS, key=len, reverse=True))
                       + r")(?=[-._ /0-9]|$)")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
REF_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]{0,99})(?:@v(?P<version>\d+))?$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass
class DataFile:
    """One file to read. `fs` is an fsspec filesystem, or None for a local path."""

    name: str                 # path relative to the source root (what ?file= and messages name)
    path: str                 # what fs.open / open takes
    label: str                # where problems are reported: a local path or a URL
    fs: Any = None

    def open(self) -> IO[bytes]:
        return open(self.path, "rb") if self.fs is None else self.fs.open(self.path, "rb")

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass
class ResolvedSource:
    source: str               # as the user gave it
    display: str              # how messages name the dataset: org/name, a folder, a URL
    files: list[DataFile]
    version: str | None = None        # name@vN when the source is a registered dataset
    technique: str | None = None      # the registered dataset's technique
    notes: list[str] = field(default_factory=list)


def split_query(source: str) -> tuple[str, str | None]:
    """`hf://org/name/train?file=*call*` -> ("hf://org/name/train", "*call*")."""
    if "?file=" in source:
        base, _, pattern = source.partition("?file=")
        return base, pattern
    return source, None


def resolve(source: str, *, lookup: Callable[[str], Any] | None = None) -> ResolvedSource:
    """Find the files of `source` (see the module docstring). `lookup(ref)` resolves a registered
    dataset name to its version row (`path`, `ref`, `technique`) or returns None."""
    base, pattern = split_query(source.strip())
    if pattern is not None and not pattern:
        raise DatasetError("?file= needs a pattern.", hint='Example: --dataset "hf://org/name?file=*train*"',
                           param="dataset")
    if "::" in base and "://" in base:
        raise DatasetError(f"Chained fsspec URLs are not accepted ({base!r}).", param="dataset",
                           hint="Pass the data's own URL (s3://bucket/key, https://host/file.jsonl) or a local copy.")
    if base.startswith("hf://"):
        return _resolve_hf(source, base, pattern)
    if base.startswith("file://"):
        return _resolve_local(source, Path(base[len("file://"):]).expanduser(), pattern)
    if _SCHEME.match(base):
        return _resolve_fsspec(source, base, pattern)
    path = Path(base).expanduser()
    if path.exists():
        return _resolve_local(source, path, pattern)
    m = REF_RE.match(base)
    if m and lookup is not None and not readers.is_data_file(base):
        row = lookup(base)
        if row is not None:
            f = Path(row["path"])
            return ResolvedSource(source, row["ref"], [DataFile(f.name, str(f), f"{row['ref']} ({f})")],
                                  version=row["ref"], technique=row["technique"])
        raise DatasetError(f"No dataset file or registered dataset named {base!r}.",
                           hint="Pass a file, a folder or a URL, or list registered datasets with: "
                                "tuneloop datasets list", param="dataset")
    raise DatasetError(f"Dataset file not found: {path}", hint="Check the path passed to --dataset.",
                       param="dataset")


# ---- local files and folders -----------------------------------------------------------------------
def _resolve_local(source: str, path: Path, pattern: str | None) -> ResolvedSource:
    if not path.exists():
        raise DatasetError(f"Dataset file not found: {path}", hint="Check the path passed to --dataset.",
                           param="dataset")
    if path.is_file():
        files = [DataFile(path.name, str(path), str(path))]
        return ResolvedSource(source, str(path), _select(files, None, pattern, str(path), False))
    found = []
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and not _hidden(rel) and readers.is_data_file(f.name):
            found.append(DataFile(rel, str(f), str(f)))
    if not found:
        raise DatasetError(f"Folder {path} has no data files.",
                           hint="Put .jsonl, .json, .parquet or .csv files (optionally .gz or .zst) in it.",
                           param="dataset")
    return ResolvedSource(source, str(path), _select(found, None, pattern, str(path), True))


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/"))


# ---- fsspec URLs (s3://, gs://, memory://, ...) ----------------------------------------------------
def _resolve_fsspec(source: str, url: str, pattern: str | None) -> ResolvedSource:
    import fsspec

    if url.lower().startswith(("http://", "https://")):
        from tuneloop.netguard import check_url

        check_url(url, what="dataset URL")
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise DatasetError(f"Reading {url.split('://')[0]}:// URLs needs a package that is not installed ({e}).",
                           hint="Install the fsspec backend for it, e.g. pip install s3fs for s3://.",
                           param="dataset") from None
    except ValueError as e:
        raise DatasetError(f"Unsupported dataset URL {url!r}: {e}", param="dataset",
                           hint="Use a local path, an fsspec URL such as s3://bucket/key, or hf://org/name.") from None
    protocol = url.split("://", 1)[0]
    try:
        is_dir = fs.isdir(root)
        if not is_dir and not fs.isfile(root):
            raise DatasetError(f"Dataset not found: {url}", hint="Check the URL and your credentials for it.",
                               param="dataset")
        if not is_dir:
            files = [DataFile(root.rsplit("/", 1)[-1], root, url, fs)]
            return ResolvedSource(source, url, _select(files, None, pattern, url, False))
        found = []
        prefix = root.rstrip("/") + "/"
        for p in sorted(fs.find(root)):
            rel = p[len(prefix):] if p.startswith(prefix) else p.rsplit("/", 1)[-1]
            if not _hidden(rel) and readers.is_data_file(rel):
                found.append(DataFile(rel, p, f"{protocol}://{p}", fs))
    except DatasetError:
        raise
    except (PermissionError, OSError) as e:
        raise DatasetError(f"Cannot read {url}: {e}", hint="Check the URL and your credentials for it "
                           "(for s3://: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL).",
                           param="dataset") from None
    if not found:
        raise DatasetError(f"{url} has no data files.",
                           hint="Point --dataset at a .jsonl, .json, .parquet or .csv file or a prefix holding some.",
                           param="dataset")
    return ResolvedSource(source, url, _select(found, None, pattern, url, True))


# ---- Hugging Face Hub ---------------------------------------------------------------------------------
def _resolve_hf(source: str, base: str, pattern: str | None) -> ResolvedSource:
    parts = [p for p in base[len("hf://"):].split("/") if p]
    if parts and parts[0] == "datasets":
        parts = parts[1:]
    if len(parts) < 2:
        raise DatasetError(f"{source!r} does not name a dataset repository.",
                           hint="Write hf://org/name, hf://org/name/split or hf://org/name?file=pattern.",
                           param="dataset")
    name, _, revision = parts[1].partition("@")
    repo_id = f"{parts[0]}/{name}"
    sub = "/".join(parts[2:])
    token = os.environ.get("HF_TOKEN") or None
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.hf_api import RepoFile

    try:
        sizes = {f.path: f.size or 0 for f in HfApi(token=token).list_repo_tree(
            repo_id, recursive=True, repo_type="dataset", revision=revision or None) if isinstance(f, RepoFile)}
    except Exception as e:
        raise _hf_error(e, repo_id) from None
    all_files = list(sizes)
    data = [f for f in sorted(all_files) if readers.is_data_file(f) and not _hidden(f)]
    if not data:
        raise DatasetError(f"Hugging Face dataset {repo_id} has no data files.",
                           details=[f"Files: {', '.join(sorted(all_files)) or '(none)'}"], param="dataset")
    files = [DataFile(f, f, f"hf://{repo_id}/{f}") for f in data]
    if sub and sub in data:
        chosen = [f for f in files if f.name == sub]
    elif sub and any(f.name.startswith(sub.rstrip("/") + "/") for f in files):
        chosen = [f for f in files if f.name.startswith(sub.rstrip("/") + "/")]
    else:
        chosen = files
    split = sub if sub and chosen is files else None
    chosen = _select(chosen, split, pattern, repo_id, True)
    _check_download(repo_id, chosen, sizes)
    local = []
    for f in chosen:
        try:
            path = hf_hub_download(repo_id, f.name, repo_type="dataset", revision=revision or None, token=token)
        except Exception as e:
            raise _hf_error(e, repo_id, f.name) from None
        local.append(DataFile(f.name, path, f.label))
    return ResolvedSource(source, repo_id, local)


def _check_download(repo_id: str, chosen: list[DataFile], sizes: dict[str, int]) -> None:
    """Refuse, before downloading, files already bigger than the dataset limit (compressed ones
    are checked again while they are read)."""
    limit, total = limits.current().dataset_bytes, sum(sizes.get(f.name, 0) for f in chosen)
    if total > limit:
        raise DatasetError(
            f"Hugging Face dataset {repo_id}: the files to read are {limits.size(total)}, more than the limit of "
            f"{limits.size(limit)} for one dataset; nothing was downloaded.",
            details=[f"{f.name}: {limits.size(sizes.get(f.name, 0))}" for f in chosen[:20]],
            hint="Pick fewer files with ?file=<pattern>, or raise the limit for data you trust: "
                 f"TUNELOOP_MAX_DATASET_BYTES={total}", param="dataset")


def _hf_error(e: Exception, repo_id: str, filename: str | None = None) -> DatasetError:
    kind = type(e).__name__
    what = f"{repo_id}/{filename}" if filename else repo_id
    if kind == "OfflineModeIsEnabled" or "offline" in str(e).lower():
        return DatasetError(f"Cannot fetch hf://{what}: HF_HUB_OFFLINE is set.",
                            hint="Unset HF_HUB_OFFLINE (or set it to 0) to download from the Hugging Face Hub.",
                            param="dataset")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if kind in ("GatedRepoError",) or status in (401, 403):
        return DatasetError(f"Access to Hugging Face dataset {repo_id} was refused.",
                            hint="Set HF_TOKEN to a token that can read it (and accept its terms on the Hub).",
                            param="dataset")
    if kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError",
                "RemoteEntryNotFoundError") or status == 404:
        return DatasetError(f"Hugging Face dataset {what} was not found.",
                            hint="Check the name (hf://org/name); private datasets need HF_TOKEN.", param="dataset")
    return DatasetError(f"Cannot fetch Hugging Face dataset {what}: {kind}: {str(e).splitlines()[0] if str(e) else ''}",
                        hint="Check the network and HF_ENDPOINT; private datasets need HF_TOKEN.", param="dataset")


# ---- split and ?file= selection ---------------------------------------------------------------------
def strip_extensions(name: str) -> str:
    """"train.jsonl.zst" -> "train"."""
    lower = name.lower()
    for ext in readers._COMPRESSED:
        if lower.endswith(ext):
            name, lower = name[: -len(ext)], lower[: -len(ext)]
            break
    for ext in readers._EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def file_split(name: str) -> str | None:
    """The split a file belongs to by its path: data/train-0000.parquet, train.jsonl, test/x.csv."""
    stem = strip_extensions(name.lower())
    m = _SPLIT_RE.search(stem)
    return SPLIT_WORDS[m.group(1)] if m else None


def match(pattern: str, f: DataFile) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(f.basename, pattern) or fnmatch.fnmatchcase(f.name, pattern)
    return pattern in f.basename


def _select(files: list[DataFile], split: str | None, pattern: str | None, display: str,
            multi: bool) -> list[DataFile]:
    pool = files
    if multi and len(files) > 1:
        splits = {f.name: file_split(f.name) for f in files}
        if split:
            want = SPLIT_WORDS.get(split.lower(), split.lower())
            pool = [f for f in files if splits[f.name] == want
                    or want in f.name.lower().split("/")[:-1] or f.basename.lower().startswith(want)]
            if not pool:
                available = sorted({s for s in splits.values() if s})
                raise DatasetError(f"No files for split {split!r} in {display}.",
                                   details=[f"Available splits: {', '.join(available) or '(none detected)'}",
                                            "Files:"] + [f"  {f.name}" for f in files],
                                   hint="Name one of the splits above, or pick files with ?file=<pattern>.",
                                   param="dataset")
        elif any(s == "train" for s in splits.values()):
            pool = [f for f in files if splits[f.name] == "train"]
            if pattern and not any(match(pattern, f) for f in pool):
                pool = files  # the pattern names files of another split: look at them all
    if pattern is not None:
        chosen = [f for f in pool if match(pattern, f)]
        if not chosen:
            raise DatasetError(f"No files in {display} match ?file={pattern}.",
                               details=["Available files:"] + [f"  {f.name}" for f in files],
                               hint="A pattern with *, ? or [ is a glob on the file name; anything else must be "
                                    "part of the file name.", param="dataset")
        pool = chosen
    return pool


def columns_of(f: DataFile) -> list[str]:
    """A file's column set: the parquet schema, the CSV header, or the keys of its first record."""
    fmt, compression = readers.file_format(f.name)
    with f.open() as raw:
        if fmt is None:
            head = raw.read(8)
            raw.seek(0)
            fmt, compression = readers.sniff(head)
        fh = readers.decompress(raw, compression)
        if fmt != "parquet":
            fh = readers.bounded(fh, limits.Budget())
        if fmt == "parquet":
            return readers.parquet_columns(fh)
        if fmt == "csv":
            return readers.csv_columns(fh, "\t" if ".tsv" in f.name.lower() else ",")
        read = readers.reader_for(fmt or "jsonl", f.name)
        for i, (_, record, _) in enumerate(read(fh)):
            if record is not None:
                return list(record)
            if i >= 100:
                break
    return []


def check_divergence(resolved: ResolvedSource, *, score: Callable[[set[str]], float], command: str) -> None:
    """Refuse files with different column sets (the seed's message and a ?file= suggestion);
    `score(columns)` says how well a column set fits the technique, to pick the files to suggest."""
    if len(resolved.files) < 2:
        return
    cols = {f.name: columns_of(f) for f in resolved.files}
    if len({frozenset(c) for c in cols.values()}) == 1:
        return
    details = []
    for f in resolved.files:
        details += [f"📄 {f.name}", f"   Columns: {', '.join(sorted(cols[f.name])) or '(none)'}"]
    groups: dict[frozenset, list[DataFile]] = {}
    for f in resolved.files:
        groups.setdefault(frozenset(cols[f.name]), []).append(f)

    def fit(item):
        colset, members = item
        return (score(set(colset)), len(members))

    _, best = max(groups.items(), key=fit)
    suggestion = suggest_pattern(best, [f for f in resolved.files if f not in best])
    base, _ = split_query(resolved.source)
    return_cmd = f"{command} --dataset {shell_arg(f'{base}?file={suggestion}', quoted=True)}"
    raise DatasetError(f"Schema divergence detected across files in {resolved.display}.", details=details,
                       hint=f"Files have different column sets. Use ?file=<pattern> to select compatible files:\n"
                            f"  {return_cmd}", param="dataset")


def suggest_pattern(group: list[DataFile], others: list[DataFile]) -> str:
    """A ?file= glob that picks `group` and none of `others`."""
    names = [f.basename for f in group]
    other_names = [f.basename for f in others]
    tokens = sorted({t for t in re.split(r"[-_. ]+", names[0].split(".")[0]) if len(t) >= 3 and not t.isdigit()},
                    key=lambda t: (-len(t), names[0].find(t)))
    for t in tokens:
        if all(t in n for n in names) and not any(t in n for n in other_names):
            return f"*{t}*"
    prefix = os.path.commonprefix(names)
    if prefix and not any(n.startswith(prefix) for n in other_names):
        return prefix + "*"
    return names[0]
