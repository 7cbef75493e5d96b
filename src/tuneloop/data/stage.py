"""Stage a dataset: resolve the source, read every record, rename columns, recognise the record
format, flatten chat-format columns, validate, and write canonical JSONL. Nothing is written when
any record is bad; the whole source is checked in one streaming pass, in constant memory.

    from tuneloop.data.stage import stage_dataset
    result = stage_dataset("train.jsonl", "sft", Path("staged.jsonl"))
    result = stage_dataset("hf://org/name/train?file=*sft*", "sft", Path("staged.jsonl"))

The seed's order: download (sources.resolve) -> column rename -> detect chat format -> flatten ->
type validation -> write JSONL. No text is dropped silently: a column the record format does not
read whose non-empty values are mostly text (`validate.holds_text`; ids, sources, rewards and
reference answers aside) fails staging, naming it, its first line and the --column-map that maps
or drops it. `tuneloop tune`, `tuneloop datasets stage|create` and the SDK all
call this function.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from tuneloop.data import formats, limits, readers, sources
from tuneloop.data.limits import LimitExceeded, shell_arg
from tuneloop.data.schema import EXAMPLES, SCHEMAS
from tuneloop.data.transforms import parse_column_map, rename_columns
from tuneloop.data.validate import RecordProblem, holds_text, is_empty, is_metadata_column, suggest_column_map
from tuneloop.errors import DatasetError

MAX_SHOWN = 20

try:  # a 64-bit hash of each staged line, the same in every process (duplicate counting)
    from xxhash import xxh3_64_intdigest as _h64
except ImportError:  # pragma: no cover - xxhash comes with datasets
    def _h64(data: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
_FLUSH_ROWS = 4096


@dataclass
class StageResult:
    path: Path
    rows: int                                            # rows written
    sha256: str                                          # of the staged file's bytes
    columns: list[str]
    notes: list[str] = field(default_factory=list)       # auto-conversions, reported once each
    warnings: list[str] = field(default_factory=list)    # empty fields, duplicates
    rows_read: int = 0                                   # records read (blank lines not counted)
    empty_fields: int = 0                                # empty strings in canonical text fields
    empty_rows: int = 0                                  # rows with at least one of them
    duplicates: int = 0                                  # rows identical to an earlier staged row
    format: str = ""                                     # the record format recognised
    files: list[str] = field(default_factory=list)       # the source files read
    source: str = ""
    dataset_version: str | None = None                   # name@vN when the source is a registered dataset
    lengths: dict[str, Any] | None = None                # token lengths (tuneloop datasets stage --model)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows, "sha256": self.sha256, "columns": self.columns,
                "format": self.format, "rows_read": self.rows_read, "rows_written": self.rows,
                "empty_fields": self.empty_fields, "empty_rows": self.empty_rows, "duplicates": self.duplicates,
                "files": self.files, "source": self.source, "dataset_version": self.dataset_version,
                "notes": self.notes, "warnings": self.warnings, "lengths": self.lengths}


def stage_dataset(source: str, technique: str, output: Path, *, column_map: str | None = None,
                  no_transform: bool = False, take: int | None = None, reward_model: str | None = None,
                  lookup: Callable[[str], Any] | None = None, command: str | None = None,
                  max_line_bytes: int | None = None,
                  reward_check: Callable[[str], str | None] | None = None) -> StageResult:
    """Validate the whole source and write canonical JSONL to `output` (atomically: a
    `.partial` file renamed at the end, removed on any failure, Ctrl-C included). The source is
    read within `limits.current()`; `max_line_bytes` overrides the record limit.

    `lookup` resolves registered dataset names (the service layer passes the store's; None: names
    are not looked up); `command` is the
    command line that hints repeat (default `tuneloop tune --technique T`); `reward_model` fills
    RL rows that have no reward_model column (from --reward-function / --reward-prompt);
    `reward_check` refuses the rows whose own reward_model it does not allow (with their line)."""
    command = command or f"tuneloop tune --technique {technique}"
    mapping = parse_column_map(column_map)
    resolved = sources.resolve(source, lookup=lookup)
    if resolved.technique and resolved.technique != technique:
        raise DatasetError(f"Dataset {resolved.version} was staged for {resolved.technique}, not {technique}.",
                           hint=f"Use it with --technique {resolved.technique}, or register a {technique} dataset.",
                           param="dataset")

    def score(cols: set[str]) -> float:
        try:
            mapped = set(rename_columns({c: None for c in cols}, mapping))
        except ValueError:  # a collision: every row reports it
            mapped = set(cols)
        return max(sum(c in mapped for c in formats.FORMAT_COLUMNS[f]) / len(formats.FORMAT_COLUMNS[f])
                   for f in formats.ACCEPTED[technique])

    sources.check_divergence(resolved, score=score, command=command)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    budget = limits.Budget()
    try:
        result = _stage(resolved, technique, tmp, mapping=mapping, no_transform=no_transform, take=take,
                        reward_model=reward_model, reward_check=reward_check, command=command, column_map=column_map,
                        max_line_bytes=max_line_bytes or budget.limits.record_bytes, budget=budget)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    result.path = output
    return result


@contextlib.contextmanager
def open_records(f: sources.DataFile, max_line_bytes: int | None = None,
                 budget: limits.Budget | None = None) -> Iterator[tuple[str, Iterator]]:
    """(format, records iterator) of one data file; the format comes from the name or the bytes.
    Its decompressed bytes are charged to `budget` (a fresh one when None)."""
    budget = budget or limits.Budget()
    fmt, compression = readers.file_format(f.name)
    with f.open() as raw:
        fh = raw
        if fmt is None:
            head = raw.read(8)
            raw.seek(0)
            sniffed, compression = readers.sniff(head)
            fh = readers.decompress(raw, compression)
            if compression:
                fh = io.BufferedReader(fh) if not hasattr(fh, "peek") else fh
                sniffed = readers.sniff(fh.peek(16)[:16])[0]
            fmt = sniffed
            if fmt is None:
                raise DatasetError(f"Cannot tell the format of {f.label}.",
                                   hint="Name it .jsonl, .json, .parquet or .csv (optionally .gz or .zst).",
                                   param="dataset")
        else:
            fh = readers.decompress(raw, compression)
        if fmt != "parquet":  # parquet seeks; its reader charges each row group's size instead
            fh = readers.bounded(fh, budget)
        yield fmt, readers.reader_for(fmt, f.name)(fh, max_line_bytes=max_line_bytes, budget=budget)


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, EOFError, ValueError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


class _Pipeline:
    """The per-record work (rename -> format -> flatten -> validate -> serialise), shared by the
    sequential path and the parallel workers. Problems are kept as (file label, location, message)."""

    def __init__(self, technique: str, mapping: dict[str, str], no_transform: bool, reward_model: str | None,
                 take: int | None = None, reward_check: Callable[[str], str | None] | None = None):
        self.technique, self.mapping, self.no_transform = technique, mapping, no_transform
        self.reward_model, self.take, self.reward_check = reward_model, take, reward_check
        self.notes: dict[str, str] = {}
        self.fmt = ""
        self.convert: Callable[[dict], dict] | None = None
        self.text_cols: tuple[str, ...] = ()
        self.reads: set[str] | None = None      # the columns the format reads, and metadata seen (None: all kept)
        self.unread: dict[str, list] = {}       # column -> [non-empty rows, text rows, first text (label, fmt, loc, value)]
        self.rows = self.rows_read = self.empty_fields = self.empty_rows = 0
        self.hashes = array("Q")
        self.shown: list[tuple[str, str, int, str]] = []     # (label, file format, location, message)
        self.n_problems = 0
        self.done = False
        self.max_rows = limits.current().rows

    def problem(self, label: str, file_fmt: str, loc: int, msg: str) -> None:
        self.n_problems += 1
        if len(self.shown) < MAX_SHOWN:
            self.shown.append((label, file_fmt, loc, msg))

    def set_format(self, record: dict[str, Any]) -> list[str]:
        """Decide the record format from the first record; return the columns it misses."""
        fmt = formats.detect_format(record, self.technique, reward_model=self.reward_model) or ""
        missing = (formats.missing_for_format(record, fmt, reward_model=self.reward_model) if fmt
                   else list(SCHEMAS[self.technique]))
        if not missing:
            self.use_format(fmt)
        return missing

    def use_format(self, fmt: str) -> None:
        self.fmt = fmt
        self.convert = formats.make_converter(self.technique, fmt, no_transform=self.no_transform,
                                              reward_model=self.reward_model, notes=self.notes,
                                              reward_check=self.reward_check)
        self.text_cols = () if fmt in formats.STAGES_MESSAGES else tuple(
            c for c, kind in SCHEMAS[self.technique].items() if kind == "string" and c != "reward_model")
        reads = formats.FORMAT_READS[fmt]
        self.reads = None if reads is None else set(reads)

    def note_unread(self, record: dict[str, Any], label: str, file_fmt: str, loc: int) -> None:
        """Count the columns of `record` the format does not read: non-empty cells, and cells with text."""
        reads, unread = self.reads, self.unread
        for k, v in record.items():
            if k in reads:  # type: ignore[operator]
                continue
            if is_metadata_column(k):
                reads.add(k)  # type: ignore[union-attr]
                continue
            if is_empty(v):
                continue
            seen = unread.get(k)
            if seen is None:
                seen = unread[k] = [0, 0, None]
            seen[0] += 1
            if holds_text(v):
                seen[1] += 1
                if seen[2] is None:
                    seen[2] = (label, file_fmt, loc, v)

    def consume(self, records: Iterator, label: str, file_fmt: str, write: Callable[[list[bytes]], None],
                on_first: Callable[[dict, int, list[str]], None]) -> None:
        """Run every record of one file through the pipeline; `write` gets the staged lines in
        batches (without their newlines). Hot loop: counters are locals, written back at the end."""
        mapping, text_cols, convert = self.mapping, self.text_cols, self.convert
        dumps, encode_error, h64 = orjson.dumps, orjson.JSONEncodeError, _h64
        hashes_append = self.hashes.append
        take, max_rows = self.take, self.max_rows
        loc = 0
        rows, rows_read, empty_fields, empty_rows = self.rows, self.rows_read, self.empty_fields, self.empty_rows
        reads = self.reads
        pending: list[bytes] = []
        append = pending.append
        try:
            for loc, record, error in records:
                if error is not None:
                    self.problem(label, file_fmt, loc, error)
                    continue
                rows_read += 1
                if rows_read > max_rows:
                    raise LimitExceeded("rows", max_rows)
                if mapping:
                    try:
                        record = rename_columns(record, mapping)
                    except ValueError as e:
                        self.problem(label, file_fmt, loc, str(e))
                        continue
                if convert is None:  # the first record decides the format (the seed's detection)
                    missing = self.set_format(record)
                    if missing:
                        on_first(record, loc, missing)
                    text_cols, convert, reads = self.text_cols, self.convert, self.reads
                try:
                    row = convert(record)  # type: ignore[misc]
                except RecordProblem as e:
                    self.problem(label, file_fmt, loc, e.message)
                    continue
                if reads is not None and not record.keys() <= reads:
                    self.note_unread(record, label, file_fmt, loc)
                try:
                    line = dumps(row)
                except encode_error as e:
                    self.problem(label, file_fmt, loc, f"cannot be written as JSON ({e})")
                    continue
                if self.n_problems:
                    continue  # nothing will be written: validate only
                empty = 0
                if text_cols:
                    for c in text_cols:
                        v = row[c]
                        if not v or v.isspace():
                            empty += 1
                else:
                    for m in row.get("messages") or row.get("prompt") or ():
                        v = m["content"]
                        if not v or v.isspace():
                            empty += 1
                if empty:
                    empty_fields += empty
                    empty_rows += 1
                hashes_append(h64(line))
                append(line)
                rows += 1
                if len(pending) >= _FLUSH_ROWS:
                    write(pending)
                    pending.clear()
                if take is not None and rows >= take:
                    self.done = True
                    break
        except LimitExceeded as e:  # where: this row (rows), or the one being read (bytes)
            e.at = (label, file_fmt, loc if e.kind == "rows" else loc + 1)
            raise
        except _read_errors() as e:  # a broken compressed stream, a file that vanished...
            self.problem(label, "", 0, f"cannot read the file ({type(e).__name__}: {e}); the rest of it was not read")
        finally:
            self.rows, self.rows_read, self.empty_fields, self.empty_rows = rows, rows_read, empty_fields, empty_rows
        if pending:
            write(pending)


def _stage(resolved: sources.ResolvedSource, technique: str, tmp: Path, *, mapping: dict[str, str],
           no_transform: bool, take: int | None, reward_model: str | None, command: str,
           reward_check: Callable[[str], str | None] | None = None,
           column_map: str | None, max_line_bytes: int | None, workers: int | None = None,
           budget: limits.Budget | None = None) -> StageResult:
    budget = budget or limits.Budget()
    pipe = _Pipeline(technique, mapping, no_transform, reward_model, take, reward_check)
    digest = hashlib.sha256()
    all_jsonl = True
    workers = stage_workers() if workers is None else workers

    with open(tmp, "wb") as out:
        def write(lines: list[bytes]) -> None:
            blob = b"\n".join(lines) + b"\n"
            try:
                out.write(blob)
            except OSError as e:
                raise DatasetError(f"Cannot write the staged data to {tmp}: {e}") from None
            digest.update(blob)

        for f in resolved.files:
            if pipe.done:
                break

            def on_first(record: dict, loc: int, missing: list[str], f=f, file_fmt="jsonl") -> None:
                raise _column_mismatch(f.label, ("line " if file_fmt == "jsonl" else "row ") + str(loc), list(record),
                                       technique, pipe.fmt or formats.detect_format(record, technique) or "",
                                       resolved.source, command, missing)

            try:
                if workers > 1 and take is None and _parallel_ok(f, budget):
                    _stage_parallel(pipe, f, out, digest, workers, max_line_bytes, on_first, budget)
                    continue
                with open_records(f, max_line_bytes, budget) as (file_fmt, records):
                    all_jsonl = all_jsonl and file_fmt == "jsonl"
                    first = functools.partial(on_first, f=f, file_fmt=file_fmt)
                    pipe.consume(records, f.label, file_fmt, write, first)
            except formats.ChatFormatHalt as e:
                raise _no_transform_error(e, technique, resolved.source, command, column_map) from None
            except LimitExceeded as e:
                label, file_fmt, loc = getattr(e, "at", (f.label, "", 0))
                raise e.located(resolved.display, _where_label(label, file_fmt, loc), resolved.source,
                                command) from None

    fmt_name = pipe.fmt
    if pipe.n_problems:
        shown = [f"{_where_label(label, ff, loc)}: {msg}" for label, ff, loc, msg in pipe.shown]
        more = [f"... and {pipe.n_problems - len(shown)} more"] if pipe.n_problems > len(shown) else []
        expected = [f"Expected one JSON object per record ({formats.FORMAT_NAMES[fmt_name]}), e.g.:"
                    if fmt_name else "Expected one JSON object per line, e.g.:",
                    formats.FORMAT_EXAMPLES.get(fmt_name) or EXAMPLES[technique]]
        unit = "line(s)" if all_jsonl else "record(s)"
        raise DatasetError(
            f"Dataset {resolved.display} has {pipe.n_problems} invalid {unit} for {technique}.",
            details=shown + more + expected,
            hint="Fix the records above and run the command again.", param="dataset")
    dropped = _unread_text(pipe)
    if dropped:
        raise _unread_error(dropped, pipe.fmt, resolved.display, resolved.source, command, column_map)
    if pipe.rows == 0:
        raise DatasetError(f"Dataset {resolved.display} has no records.",
                           hint=f"Add one JSON object per line, e.g.:\n  {EXAMPLES[technique]}", param="dataset")
    duplicates = count_duplicates(pipe.hashes)
    warnings = []
    if pipe.empty_rows:
        warnings.append(f"{pipe.empty_rows} row(s) have an empty string in a required column "
                        f"({pipe.empty_fields} empty field(s))")
    if duplicates:
        warnings.append(f"{duplicates} row(s) are exact duplicates of an earlier row")
    note_list = [n for n in [formats.format_note(fmt_name)] if n] + list(pipe.notes.values())
    return StageResult(tmp, pipe.rows, digest.hexdigest(), formats.canonical_columns(technique, fmt_name), note_list,
                       warnings, rows_read=pipe.rows_read, empty_fields=pipe.empty_fields,
                       empty_rows=pipe.empty_rows, duplicates=duplicates, format=fmt_name,
                       files=[f.label for f in resolved.files], source=resolved.source,
                       dataset_version=resolved.version)


def _unread_text(pipe: _Pipeline) -> dict[str, list]:
    """The unread columns that are text columns: most of their non-empty cells hold text."""
    return {k: v for k, v in pipe.unread.items() if v[1] and 2 * v[1] >= v[0]}


def _unread_error(dropped: dict[str, list], fmt: str, display: str, source: str, command: str,
                  column_map: str | None) -> DatasetError:
    names = list(dropped)
    details = []
    for col, (nonempty, text, (label, file_fmt, loc, value)) in dropped.items():
        sample = value if type(value) is str else orjson.dumps(value).decode()
        sample = sample[:60] + "..." if len(sample) > 60 else sample
        details.append(f"{_where_label(label, file_fmt, loc)}: column '{col}' holds text ({text} of {nonempty} "
                       f"non-empty row(s)), e.g. {sample!r}")
    reads = sorted(formats.FORMAT_READS[fmt] or ())
    details.append(f"The {formats.FORMAT_NAMES[fmt]} format reads: {', '.join(reads)}")
    drop = ",".join(f"{c}:" for c in names)
    cmap = f"{column_map},{drop}" if column_map else drop
    hint = (f"To train on it, merge it into a column the format reads, or rename it onto one with --column-map "
            f"'{names[0]}:TARGET'. To leave it out on purpose, drop it explicitly:\n  {command} --dataset "
            f"{shell_arg(source)} --column-map {shell_arg(cmap, quoted=True)}")
    if fmt == formats.ALPACA and "system" in dropped:
        hint = ("The first row has no 'system' column, so the file is staged as prompt/completion; give the first "
                "row a \"system\" key (\"\" is fine) to stage conversations that keep the system prompt.\n" + hint)
    which = (f"column '{names[0]}' holds" if len(names) == 1
             else "columns " + ", ".join(f"'{c}'" for c in names) + " hold")
    return DatasetError(f"Dataset {display}: {which} text that the {formats.FORMAT_NAMES[fmt]} format does not "
                        "read; staging would drop it.", details=details, hint=hint, param="column_map")


def _where_label(label: str, file_fmt: str, loc: int) -> str:
    if not file_fmt:
        return label
    return f"{label}:{loc}" if file_fmt == "jsonl" else f"{label}: row {loc}"


# ---- parallel staging of one big local JSONL file ----------------------------------------------------
PARALLEL_MIN_BYTES = 32 * 1024 * 1024


def stage_workers() -> int:
    """Processes for big files: TUNELOOP_STAGE_WORKERS, else one per CPU core (at most 8)."""
    env = os.environ.get("TUNELOOP_STAGE_WORKERS")
    if env and env.isdigit():
        return max(1, int(env))
    return max(1, min(os.cpu_count() or 1, 8))


def _parallel_ok(f: sources.DataFile, budget: limits.Budget) -> bool:
    """A local uncompressed JSONL file of PARALLEL_MIN_BYTES or more that fits the byte budget
    (one that does not is read sequentially, which stops at the exact line)."""
    import multiprocessing

    if f.fs is not None or "fork" not in multiprocessing.get_all_start_methods():
        return False
    fmt, compression = readers.file_format(f.name)
    if fmt != "jsonl" or compression:
        return False
    try:
        return PARALLEL_MIN_BYTES <= os.path.getsize(f.path) <= budget.bytes_left
    except OSError:
        return False


class _Range(io.RawIOBase):
    """At most `length` bytes of a file from its current position."""

    def __init__(self, fh: Any, length: int):
        self.fh, self.left = fh, length

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.fh.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


def _boundaries(path: str, n: int) -> list[int]:
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as fh:
        for i in range(1, n):
            pos = max(size * i // n, cuts[-1])
            fh.seek(pos)
            while True:  # the next line start at or after pos
                chunk = fh.read(1 << 16)
                if not chunk:
                    pos = size
                    break
                nl = chunk.find(b"\n")
                if nl >= 0:
                    pos += nl + 1
                    break
                pos += len(chunk)
            if pos > cuts[-1] and pos < size:
                cuts.append(pos)
    return cuts + [size]


def _worker(args: tuple) -> dict[str, Any]:
    (path, start, end, part, technique, fmt, mapping, no_transform, reward_model, max_line_bytes, reward_check) = args
    pipe = _Pipeline(technique, mapping, no_transform, reward_model, reward_check=reward_check)
    pipe.max_rows = 1 << 62  # the parent adds up the parts and checks the limit
    pipe.use_format(fmt)
    stats: dict[str, int] = {}
    halt = None
    with open(path, "rb") as fh, open(part, "wb") as out:
        fh.seek(start)
        records = readers.read_jsonl(_Range(fh, end - start), max_line_bytes=max_line_bytes, stats=stats,
                                     strip_bom=start == 0)

        def write(lines: list[bytes]) -> None:
            out.write(b"\n".join(lines) + b"\n")

        try:
            pipe.consume(records, "", "jsonl", write, lambda *a: None)
        except formats.ChatFormatHalt as e:
            halt = (e.column, e.strategy)
    return {"rows": pipe.rows, "rows_read": pipe.rows_read, "empty_fields": pipe.empty_fields,
            "empty_rows": pipe.empty_rows, "hashes": pipe.hashes.tobytes(), "notes": pipe.notes,
            "shown": [(loc, msg) for _, _, loc, msg in pipe.shown], "n_problems": pipe.n_problems,
            "lines": stats.get("lines", 0), "halt": halt,
            "unread": {k: (n, t, first and first[2:]) for k, (n, t, first) in pipe.unread.items()}}


def _stage_parallel(pipe: _Pipeline, f: sources.DataFile, out: Any, digest: Any, workers: int,
                    max_line_bytes: int | None, on_first: Callable, budget: limits.Budget) -> None:
    """Stage one big local JSONL file in `workers` processes, each on a range of whole lines, then
    append their parts in order. Same output, counts, messages and limits as the sequential path."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if pipe.convert is None:  # decide the format from the file's first record, as the sequential path does
        with open(f.path, "rb") as fh:
            for loc, record, _ in readers.read_jsonl(fh, max_line_bytes=max_line_bytes):
                if record is not None:
                    try:
                        record = rename_columns(record, pipe.mapping) if pipe.mapping else record
                    except ValueError:
                        break  # the sequential path below reports it on every row
                    missing = pipe.set_format(record)
                    if missing:
                        on_first(record, loc, missing, f=f, file_fmt="jsonl")
                    break
        if pipe.convert is None:  # no valid record at all: the sequential path reports every line
            with open_records(f, max_line_bytes, budget) as (file_fmt, records):
                pipe.consume(records, f.label, file_fmt, lambda lines: None, lambda *a: None)
            return
    budget.charge(os.path.getsize(f.path))  # fits: _parallel_ok checked
    rows_before = pipe.rows_read
    cuts = _boundaries(f.path, workers)
    parts = [Path(str(out.name) + f".part{i}") for i in range(len(cuts) - 1)]
    jobs = [(f.path, cuts[i], cuts[i + 1], str(parts[i]), pipe.technique, pipe.fmt, pipe.mapping, pipe.no_transform,
             pipe.reward_model, max_line_bytes, pipe.reward_check) for i in range(len(cuts) - 1)]
    try:
        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_worker, jobs))
        offset = 0
        for res in results:
            if res["halt"]:
                raise formats.ChatFormatHalt(*res["halt"])
            for loc, msg in res["shown"]:
                pipe.problem(f.label, "jsonl" if loc else "", loc + offset if loc else 0, msg)
            pipe.n_problems += res["n_problems"] - len(res["shown"])
            for col, (n, t, first) in res["unread"].items():
                seen = pipe.unread.setdefault(col, [0, 0, None])
                seen[0] += n
                seen[1] += t
                if seen[2] is None and first:
                    seen[2] = (f.label, "jsonl", first[0] + offset, first[1])
            offset += res["lines"]
            for col, note in res["notes"].items():
                pipe.notes.setdefault(col, note)
            pipe.rows_read += res["rows_read"]
            if pipe.n_problems:
                continue
            pipe.rows += res["rows"]
            pipe.empty_fields += res["empty_fields"]
            pipe.empty_rows += res["empty_rows"]
            pipe.hashes.frombytes(res["hashes"])
        if pipe.rows_read > pipe.max_rows:
            e = LimitExceeded("rows", pipe.max_rows)
            e.at = (f.label, "jsonl", _line_of_record(f.path, pipe.max_rows - rows_before + 1, max_line_bytes))
            raise e
        if not pipe.n_problems:
            for part in parts:
                with open(part, "rb") as fh:
                    while True:
                        blob = fh.read(1 << 22)
                        if not blob:
                            break
                        out.write(blob)
                        digest.update(blob)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)


def _line_of_record(path: str, n: int, max_line_bytes: int | None) -> int:
    """The line of the n-th record of a JSONL file (where the rows limit was crossed)."""
    with open(path, "rb") as fh:
        for loc, record, _ in readers.read_jsonl(fh, max_line_bytes=max_line_bytes):
            n -= record is not None
            if n <= 0:
                return loc
    return 0


def count_duplicates(hashes: array) -> int:
    """Rows whose serialised form equals an earlier row's (64-bit hashes, 8 bytes a row)."""
    if len(hashes) < 2:
        return 0
    import numpy as np

    a = np.frombuffer(hashes, dtype=np.uint64).copy()
    a.sort()
    return int(np.count_nonzero(a[1:] == a[:-1]))


def _column_mismatch(path: str, where: str, columns: list[str], technique: str, fmt: str, source: str, command: str,
                     missing: list[str]) -> DatasetError:
    required = list(formats.FORMAT_COLUMNS[fmt]) if fmt else list(SCHEMAS[technique])
    suggestion = suggest_column_map(columns, technique) if not fmt or fmt in (
        formats.PROMPT_COMPLETION, formats.PREFERENCE, formats.RL_PROMPT) else {}
    hint = "Rename the columns in the file, or map them with --column-map SOURCE:TARGET."
    if missing == ["reward_model"]:
        hint = ("Add a reward_model column, or give one for every row with --reward-function (rlvr) or "
                "--reward-prompt (rlaif).")
    elif suggestion:
        cmap = ",".join(f"{s}:{d}" for s, d in suggestion.items())
        hint = (f"Map your columns onto the expected ones:\n  {command} --dataset {shell_arg(source)} "
                f"--column-map {shell_arg(cmap, quoted=True)}")
    accepted = ", ".join(formats.FORMAT_NAMES[f] for f in formats.ACCEPTED[technique])
    error = DatasetError(
        f"Dataset {path} does not have the columns {technique} needs ({where}).",
        details=[f"Required: {', '.join(required)}", f"Detected: {', '.join(columns) or '(none)'}",
                 f"Missing:  {', '.join(missing)}", f"Accepted formats: {accepted}"],
        hint=hint, param="dataset")
    error.missing = list(missing)   # for callers that try several techniques (tuneloop eval)
    return error


def _no_transform_error(e: formats.ChatFormatHalt, technique: str, source: str, command: str,
                        column_map: str | None) -> DatasetError:
    cmap = f" --column-map {shell_arg(column_map, quoted=True)}" if column_map else ""
    return DatasetError(
        f"Column '{e.column}' contains chat-format data (detected: {e.strategy}) but --no-transform is active.",
        hint=f"Remove --no-transform to enable automatic conversion:\n  {command} --dataset {shell_arg(source)}{cmap}",
        param="no_transform")


# ---- deterministic split ----------------------------------------------------------------------
def split_staged(path: Path, ratio: float, seed: int, train_out: Path, validation_out: Path,
                 columns: list[str] | None = None, fmt: str = "") -> tuple[StageResult, StageResult]:
    """Split a staged file into train (`ratio` of the rows) and validation, the same way for the
    same file and seed: a seeded permutation picks the validation rows; row order is kept."""
    import numpy as np

    if not 0.0 < ratio < 1.0:
        raise DatasetError(f"Split ratio must be between 0 and 1, got {ratio}.", param="ratio",
                           hint="Example: --ratio 0.9 keeps 90% of the rows for training.")
    with open(path, "rb") as fh:
        n = sum(1 for _ in fh)
    n_val = int(round(n * (1.0 - ratio)))
    if n < 2 or n_val < 1 or n_val >= n:
        raise DatasetError(f"Cannot split {n} row(s) with ratio {ratio}: both parts need at least one row.",
                           hint="Use more rows or a ratio closer to 0.5.", param="ratio")
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    outs = {True: (validation_out, hashlib.sha256()), False: (train_out, hashlib.sha256())}
    counts = {True: 0, False: 0}
    for p, _ in outs.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmps = {v: p.with_name(p.name + ".partial") for v, (p, _) in outs.items()}
    try:
        with open(path, "rb") as fh, open(tmps[False], "wb") as tr, open(tmps[True], "wb") as va:
            files = {True: va, False: tr}
            for i, line in enumerate(fh):
                v = bool(is_val[i])
                files[v].write(line)
                outs[v][1].update(line)
                counts[v] += 1
        for v, (p, _) in outs.items():
            os.replace(tmps[v], p)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise
    cols = columns or []
    return (StageResult(train_out, counts[False], outs[False][1].hexdigest(), cols, format=fmt),
            StageResult(validation_out, counts[True], outs[True][1].hexdigest(), cols, format=fmt))
