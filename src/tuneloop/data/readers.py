"""File formats: stream records out of JSONL (plain, gzip, zstd), JSON, parquet and CSV files.

Every reader yields `(location, record, problem)`: `location` is a 1-based line number (JSONL)
or row number (JSON, parquet, CSV); exactly one of `record` (a dict) and `problem` (what is wrong
there, in words) is set. Readers hold one chunk or one batch in memory, never the file (JSON
arrays excepted: they are parsed whole; JSONL is the format for big files).

    with open_binary(path) as fh:
        for loc, record, problem in read_jsonl(fh):
            ...

JSONL lines are parsed with orjson; a line orjson refuses is parsed again by the standard
library to say precisely what is wrong (invalid UTF-8 and its byte, NaN/Infinity, duplicate keys,
the JSON error and its column) or to accept what only it accepts (integers beyond 64 bits).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from typing import IO, Any, Iterator

import orjson

Row = tuple[int, "dict[str, Any] | None", "str | None"]

MAX_LINE_BYTES = 64 * 1024 * 1024     # one record; a longer line is an error, not a memory blow-up
CHUNK_BYTES = 1 << 20
BATCH_ROWS = 2048

FORMATS = ("jsonl", "json", "parquet", "csv")
_COMPRESSED = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".json": "json",
               ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}
DATA_SUFFIXES = tuple(_EXTENSIONS) + tuple(e + c for e in _EXTENSIONS for c in _COMPRESSED)


class _DuplicateKey(ValueError):
    pass


def file_format(name: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name: "train.jsonl.zst" -> ("jsonl", "zstd")."""
    lower = name.lower()
    compression = None
    for ext, kind in _COMPRESSED.items():
        if lower.endswith(ext):
            compression, lower = kind, lower[: -len(ext)]
            break
    for ext, fmt in _EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt, compression
    return None, compression


def is_data_file(name: str) -> bool:
    return file_format(name)[0] is not None


def sniff(head: bytes) -> tuple[str | None, str | None]:
    """(format, compression) from a file's first bytes, for names without a known extension."""
    if head.startswith(b"\x1f\x8b"):
        return None, "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return None, "zstd"
    if head.startswith(b"PAR1"):
        return "parquet", None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return "jsonl", None
    if text.startswith(b"["):
        return "json", None
    return None, None


def decompress(fh: IO[bytes], compression: str | None) -> IO[bytes]:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=fh, mode="rb")
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
    return fh


# ---- JSONL ------------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; write null or a finite number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return out


_CONSTANT = re.compile(r"(?<![\w\"])(NaN|-?Infinity)(?![\w\"])")


BLANK = object()  # what diagnose_line returns for a blank line


def diagnose_line(raw: bytes) -> tuple[Any, str | None]:
    """Parse one line the slow, exact way: (value, None) or (None, problem); (BLANK, None) if blank."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"column {e.start + 1}: invalid UTF-8 byte 0x{raw[e.start]:02x}; save the file as UTF-8"
    if not text.strip():
        return BLANK, None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_pairs), None
    except json.JSONDecodeError as e:
        return None, f"column {e.colno}: invalid JSON ({e.msg})"
    except _DuplicateKey as e:
        return None, (f"duplicate key '{e.args[0]}' in one object (JSON parsers keep only one of the values); "
                      "remove or rename one")
    except RecursionError:
        return None, "nested too deeply to be a dataset record"
    except ValueError as e:  # NaN / Infinity
        m = _CONSTANT.search(text)
        return None, (f"column {m.start() + 1}: " if m else "") + str(e)


def _needle(key: str, cache: dict[str, bytes]) -> bytes:
    n = cache.get(key)
    if n is None:
        try:
            n = orjson.dumps(key)
        except TypeError:  # a key with a lone surrogate (only the exact parser accepts those)
            n = json.dumps(key).encode()
        cache[key] = n
    return n


def read_jsonl(fh: IO[bytes], *, max_line_bytes: int | None = None, stats: dict[str, int] | None = None,
               strip_bom: bool = True) -> Iterator[Row]:
    """Stream a JSONL byte stream in fixed-size chunks; blank lines are skipped. When given,
    `stats["lines"]` is set to the number of lines read once the stream is exhausted."""
    limit = max_line_bytes or MAX_LINE_BYTES
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    needles: dict[str, bytes] = {}
    line_no = 0
    pending: list[bytes] = []      # pieces of a line that spans chunks
    pending_len = 0
    skipping = False               # inside a line already reported as too long
    first = True
    while True:
        chunk = fh.read(CHUNK_BYTES)
        if first:
            first = False
            if strip_bom and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        if not chunk:
            break
        nl = chunk.find(b"\n")
        if nl < 0:  # no line ends in this chunk
            if skipping:
                continue
            pending.append(chunk)
            pending_len += len(chunk)
            if pending_len > limit:
                line_no += 1
                yield line_no, None, _too_long(limit)
                pending, pending_len, skipping = [], 0, True
            continue
        lines = chunk.split(b"\n")
        if skipping:
            lines[0] = b""  # the end of the over-long line: already reported
            line_no -= 1    # ... and counted
            skipping = False
        elif pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending, pending_len = [], 0
        last = lines.pop()
        if last:
            pending, pending_len = [last], len(last)
        for raw in lines:
            line_no += 1
            if len(raw) > limit:
                yield line_no, None, _too_long(limit)
                continue
            try:
                record = loads(raw)
            except decode_error:
                record, problem = diagnose_line(raw)
                if problem is not None:
                    yield line_no, None, problem
                    continue
                if record is BLANK:
                    continue
            if type(record) is not dict:
                yield line_no, None, f"expected a JSON object, got {type(record).__name__}"
                continue
            # orjson keeps the last of duplicate keys silently: a key's quoted name appearing more
            # than once in the raw line sends it to the exact parser, which says which key.
            for key in record:
                needle = needles.get(key)
                if needle is None:
                    needle = _needle(key, needles)
                if raw.count(needle) > 1:
                    again, problem = diagnose_line(raw)
                    if problem is not None:
                        record = None
                        yield line_no, None, problem
                    break
            if record is not None:
                yield line_no, record, None
    if pending and not skipping:
        raw = b"".join(pending)
        line_no += 1
        if len(raw) > limit:
            yield line_no, None, _too_long(limit)
        else:
            record, problem = diagnose_line(raw)
            if problem is not None:
                yield line_no, None, problem
            elif record is not BLANK:
                if type(record) is not dict:
                    yield line_no, None, f"expected a JSON object, got {type(record).__name__}"
                else:
                    yield line_no, record, None
    if stats is not None:
        stats["lines"] = line_no


def _too_long(limit: int) -> str:
    return (f"line is longer than {limit // (1024 * 1024)} MiB, the limit for one record; "
            "split the record or check that the file has one JSON object per line")


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null", dict: "object"}.get(
        type(value), "number")


# ---- JSON (array or {"data": [...]}) ---------------------------------------------------------------
def read_json(fh: IO[bytes], *, max_line_bytes: int | None = None) -> Iterator[Row]:
    data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        stripped = data.lstrip()
        if stripped.startswith(b"{") and b"\n" in stripped.strip():  # JSONL saved as .json
            yield from read_jsonl(io.BytesIO(data), max_line_bytes=max_line_bytes)
            return
        try:
            doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_pairs)
        except UnicodeDecodeError as e:
            yield 1, None, f"byte {e.start + 1}: invalid UTF-8 byte 0x{data[e.start]:02x}; save the file as UTF-8"
            return
        except json.JSONDecodeError as e:
            yield e.lineno, None, f"line {e.lineno} column {e.colno}: invalid JSON ({e.msg})"
            return
        except _DuplicateKey as e:
            yield 1, None, f"duplicate key '{e.args[0]}' in one object; remove or rename one"
            return
        except (ValueError, RecursionError) as e:
            yield 1, None, str(e) if isinstance(e, ValueError) else "nested too deeply"
            return
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    elif isinstance(doc, dict):
        yield 1, doc, None  # one record
        return
    if not isinstance(doc, list):
        yield 1, None, f'expected an array of objects or {{"data": [...]}}, got {_json_type(doc)}'
        return
    for i, record in enumerate(doc, start=1):
        if type(record) is not dict:
            yield i, None, f"expected a JSON object, got {type(record).__name__}"
        else:
            yield i, record, None


# ---- parquet ----------------------------------------------------------------------------------
def read_parquet(fh: IO[bytes], *, max_line_bytes: int | None = None) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a broken file
        yield 1, None, f"not a readable parquet file ({e})"
        return
    row = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS):
        for record in batch.to_pylist():
            row += 1
            yield row, record, None


def parquet_columns(fh: IO[bytes]) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(fh).schema_arrow.names)


# ---- CSV --------------------------------------------------------------------------------------
_SURROGATE = re.compile(r"[\udc80-\udcff]")


def _cell(value: str | None) -> Any:
    """CSV has no nesting: a cell holding a JSON array or object of chat messages is decoded."""
    if value and value[0] in "[{" and value[-1] in "]}":
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if isinstance(parsed, list) and parsed and all(isinstance(m, dict) for m in parsed):
            return parsed
        if isinstance(parsed, dict) and ("content" in parsed or "messages" in parsed):
            return parsed
    return value


def read_csv(fh: IO[bytes], *, max_line_bytes: int | None = None, delimiter: str = ",") -> Iterator[Row]:
    csv.field_size_limit(max_line_bytes or MAX_LINE_BYTES)
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        yield 1, None, f"unreadable CSV header ({e})"
        return
    width = len(header)
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield row + 1, None, f"unreadable CSV (line {reader.line_num}: {e}); the rest of the file was not read"
            return
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        row += 1
        bad = next((c for c in cells if _SURROGATE.search(c)), None)
        if bad is not None:
            col = header[cells.index(bad)] if cells.index(bad) < width else "?"
            byte = ord(_SURROGATE.search(bad).group()) - 0xDC00
            yield row, None, f"column '{col}': invalid UTF-8 byte 0x{byte:02x}; save the file as UTF-8"
            continue
        if len(cells) > width:
            yield row, None, f"{len(cells)} cells but the header has {width} columns"
            continue
        cells += [None] * (width - len(cells))  # type: ignore[list-item]
        yield row, {h: _cell(c) for h, c in zip(header, cells)}, None


def csv_columns(fh: IO[bytes], delimiter: str = ",") -> list[str]:
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="replace", newline="")
    try:
        return next(csv.reader(text, delimiter=delimiter))
    except (StopIteration, csv.Error):
        return []


def reader_for(fmt: str, name: str = ""):
    if fmt == "csv" and name.lower().split(".gz")[0].split(".zst")[0].endswith(".tsv"):
        return lambda fh, **kw: read_csv(fh, delimiter="\t", **kw)
    return {"jsonl": read_jsonl, "json": read_json, "parquet": read_parquet, "csv": read_csv}[fmt]
