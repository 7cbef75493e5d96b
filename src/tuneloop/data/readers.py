"""File formats: stream records out of JSONL (plain, gzip, zstd), JSON, parquet and CSV files.

Every reader yields `(location, record, problem)`: `location` is a 1-based line number (JSONL)
or row number (JSON, parquet, CSV); exactly one of `record` (a dict) and `problem` (what is wrong
there, in words) is set. Readers hold one chunk, one record or one batch in memory, never the
file: JSON arrays are streamed an element at a time too. Each record is at most
TUNELOOP_MAX_RECORD_BYTES (`max_line_bytes`); a longer one is a problem at its line or row. The
decompressed bytes of a source are charged to a `limits.Budget` by `bounded` (parquet: its row
groups' sizes, before they are decoded), which raises `limits.LimitExceeded` at the cap.

    with bounded(decompress(open(path, "rb"), "gzip"), budget) as fh:
        for loc, record, problem in read_jsonl(fh):
            ...

JSONL lines are parsed with orjson; a line orjson refuses is parsed again by the standard
library to say precisely what is wrong (invalid UTF-8 and its byte, NaN/Infinity, duplicate keys,
the JSON error and its column) or to accept what only it accepts (integers beyond 64 bits).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from typing import IO, Any, Iterator

import orjson

from tuneloop.data import limits
from tuneloop.data.limits import Budget, record_too_long

Row = tuple[int, "dict[str, Any] | None", "str | None"]

CHUNK_BYTES = 1 << 20
BATCH_ROWS = 2048
BATCH_BYTES = 64 << 20                # parquet: rows per batch chosen so that a batch is about this big
ZSTD_MAX_WINDOW = 1 << 27             # 128 MiB: what a zstd frame may ask the decoder to allocate

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

        return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(fh, read_across_frames=True)
    return fh


class _Counted(io.RawIOBase):
    """A (decompressed) stream whose bytes are charged to a budget as they are read: reads stop at
    the cap, and the read after it raises LimitExceeded if the stream has more. The size a gzip or
    zstd header claims is never looked at."""

    def __init__(self, fh: IO[bytes], budget: Budget):
        self.fh, self.budget = fh, budget

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        left = self.budget.bytes_left
        if left <= 0:
            if self.fh.read(1):
                self.budget.charge(1)  # raises
            return b""
        data = self.fh.read(left if n is None or n < 0 else min(n, left))
        self.budget.bytes_left -= len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def bounded(fh: IO[bytes], budget: Budget) -> IO[bytes]:
    return _Counted(fh, budget)  # type: ignore[return-value]


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
               strip_bom: bool = True, budget: Budget | None = None) -> Iterator[Row]:
    """Stream a JSONL byte stream in fixed-size chunks; blank lines are skipped. When given,
    `stats["lines"]` is set to the number of lines read once the stream is exhausted."""
    limit = max_line_bytes or limits.current().record_bytes
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
    return record_too_long(limit)


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null", dict: "object"}.get(
        type(value), "number")


# ---- JSON (array or {"data": [...]}), streamed ---------------------------------------------------
_DATA_ARRAY = re.compile(r'\{\s*"data"\s*:\s*\[')
_BLANKS = re.compile(r"[ \t\r\n]*")
_NEAR_END = 16    # a parse error this close to the end of what is read may be a value cut by the chunk


class _Bad(Exception):
    """The JSON document cannot be read on from here (`args[0]` says where and why)."""


class _TooLong(Exception):
    pass


class _Text:
    """A JSON document decoded a chunk at a time: `buf[pos:]` is the part not parsed yet. The raw
    bytes are kept while the first value decides whether the file is really JSONL (bounded)."""

    def __init__(self, fh: IO[bytes], limit: int):
        self.fh, self.limit = fh, limit
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf, self.pos, self.eof, self.nbytes = "", 0, False, 0
        self.lines = self.col = 0          # newlines and columns before buf[0] (for messages)
        self.raw: list[bytes] | None = []

    def fill(self, at_least: int = 0) -> bool:
        """Read another chunk (at least `at_least` bytes); False at the end of the file."""
        if self.eof:
            return False
        data = self.fh.read(max(CHUNK_BYTES, at_least))
        if self.raw is not None:
            self.raw.append(data)
            if self.nbytes > self.limit + 4 * CHUNK_BYTES:
                self.raw = None
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            at = self.nbytes - (len(e.object) - len(data)) + e.start
            raise _Bad(f"byte {at + 1}: invalid UTF-8 byte 0x{e.object[e.start]:02x}; save the file as UTF-8") from None
        self.nbytes += len(data)
        self.eof = not data
        if self.pos:  # drop what is parsed (keeping count of its lines for messages)
            n = self.buf.count("\n", 0, self.pos)
            self.col = self.pos - self.buf.rfind("\n", 0, self.pos) - 1 if n else self.col + self.pos
            self.lines += n
            self.buf, self.pos = self.buf[self.pos:], 0
        self.buf += text
        return bool(data)

    def where(self, pos: int) -> str:
        n = self.buf.count("\n", 0, pos)
        col = pos - self.buf.rfind("\n", 0, pos) if n else self.col + pos + 1
        return f"line {self.lines + n + 1} column {col}"

    def next_char(self) -> str:
        """The next character that is not blank ('' at the end of the file)."""
        while True:
            self.pos = _BLANKS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def decode(self, decoder: json.JSONDecoder) -> tuple[Any, int]:
        """(value, end) of the JSON value at `pos`, reading on while it is cut off by the chunk."""
        while True:
            try:
                return decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                cut = e.pos >= len(self.buf) - _NEAR_END or e.msg.startswith("Unterminated string")
                if self.eof or not cut:
                    raise _Bad(f"{self.where(e.pos)}: invalid JSON ({e.msg})") from None
                if len(self.buf) - self.pos > self.limit:
                    raise _TooLong from None
                self.fill(len(self.buf) - self.pos)  # doubling: a long value is re-scanned O(log) times
            except RecursionError:
                raise _Bad(f"{self.where(self.pos)}: nested too deeply to be a dataset record") from None


class _Replay:
    """`head`, then the rest of `fh`: a JSONL file read as JSON goes back to read_jsonl."""

    def __init__(self, head: bytes, fh: IO[bytes]):
        self.head, self.fh = head, fh

    def read(self, n: int = -1) -> bytes:
        if self.head:
            head, self.head = self.head, b""
            return head
        return self.fh.read(n)


_CHECKED = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_pairs)
_PLAIN = json.JSONDecoder()  # finds where a record that _CHECKED refused ends


def _element(t: _Text, row: int) -> Row:
    """The array element at t.pos, as a Row; t.pos moves past it."""
    start, problem = t.pos, None
    try:
        value, end = t.decode(_CHECKED)
    except _DuplicateKey as e:
        problem, end = f"duplicate key '{e.args[0]}' in one object; remove or rename one", t.decode(_PLAIN)[1]
    except ValueError as e:  # NaN / Infinity
        problem, end = str(e), t.decode(_PLAIN)[1]
    t.pos = end
    if end - start > t.limit:
        return row, None, record_too_long(t.limit, "record")
    if problem is not None:
        return row, None, problem
    if type(value) is not dict:
        return row, None, f"expected a JSON object, got {type(value).__name__}"
    return row, value, None


def _array(t: _Text) -> Iterator[Row]:
    """The elements of the array whose '[' is at t.pos, one at a time."""
    t.pos += 1
    if t.next_char() == "]":
        t.pos += 1
        return
    row = 0
    while True:
        row += 1
        try:
            yield _element(t, row)
        except _TooLong:
            yield row, None, record_too_long(t.limit, "record") + "; the rest of the file was not read"
            raise _Bad("") from None
        except _Bad as e:
            yield row, None, e.args[0]
            raise _Bad("") from None
        c = t.next_char()
        if c == "]":
            t.pos += 1
            return
        if c != ",":
            yield row + 1, None, f"{t.where(t.pos)}: invalid JSON (Expecting ',' delimiter)"
            raise _Bad("")
        t.pos += 1
        t.next_char()


def read_json(fh: IO[bytes], *, max_line_bytes: int | None = None, budget: Budget | None = None) -> Iterator[Row]:
    """A JSON array of objects or {"data": [...]}, streamed an element at a time; one object is
    one record, and a .json file that is really JSONL is read as JSONL."""
    t = _Text(fh, max_line_bytes or limits.current().record_bytes)
    try:
        first = t.next_char()
        while len(t.buf) - t.pos < 64 and t.fill():  # enough to see '{ "data": [' whole
            pass
        data = first == "{" and _DATA_ARRAY.match(t.buf, t.pos)
        if first == "[" or data:
            t.raw = None
            if data:
                t.pos = data.end() - 1
            yield from _array(t)
            if data:
                c = t.next_char()
                if c == ",":  # keys after "data": check them as an object of their own, keep none
                    t.buf = t.buf[:t.pos] + "{" + t.buf[t.pos + 1:]
                    t.pos = t.decode(_CHECKED)[1]
                elif c == "}":
                    t.pos += 1
                else:
                    raise _Bad(f"{t.where(t.pos)}: invalid JSON (Expecting ',' delimiter)")
            if t.next_char():
                raise _Bad(f"{t.where(t.pos)}: invalid JSON (Extra data)")
            return
        yield from _single(t, first)
    except _Bad as e:
        if e.args[0]:
            yield 1, None, e.args[0]
    except _TooLong:
        yield 1, None, (f"the JSON document is longer than {limits.size(t.limit)}, the limit for one record "
                        '(TUNELOOP_MAX_RECORD_BYTES); write it as an array of objects, {"data": [...]} or JSONL')


def _single(t: _Text, first: str) -> Iterator[Row]:
    """A document that is not an array: one object (maybe {"data": [...]} with other keys first),
    JSONL saved as .json, or something else."""
    def as_jsonl() -> Iterator[Row]:
        if t.raw is None:
            raise _Bad(f"{t.where(t.pos)}: invalid JSON (Extra data)")
        yield from read_jsonl(_Replay(b"".join(t.raw), t.fh), max_line_bytes=t.limit)  # type: ignore[arg-type]

    try:
        doc, end = t.decode(_CHECKED)
    except _TooLong:
        nl = t.buf.find("\n", t.pos)
        if first == "{" and nl > 0 and diagnose_line(t.buf[t.pos:nl].encode())[1] is None:
            yield from as_jsonl()  # JSONL whose first line is a record: the document was not one value
            return
        raise
    except (_Bad, ValueError) as e:
        if first == "{" and "\n" in t.buf.strip():  # JSONL with a bad first line
            yield from as_jsonl()
            return
        if isinstance(e, _DuplicateKey):
            raise _Bad(f"duplicate key '{e.args[0]}' in one object; remove or rename one") from None
        if isinstance(e, ValueError):  # NaN / Infinity
            raise _Bad(str(e)) from None
        raise
    t.pos = end
    if t.next_char():
        if first == "{":
            yield from as_jsonl()
            return
        raise _Bad(f"{t.where(t.pos)}: invalid JSON (Extra data)")
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        for i, record in enumerate(doc["data"], start=1):
            yield (i, None, f"expected a JSON object, got {type(record).__name__}") if type(record) is not dict \
                else (i, record, None)
    elif isinstance(doc, dict):
        yield 1, doc, None  # one record
    else:
        yield 1, None, f'expected an array of objects or {{"data": [...]}}, got {_json_type(doc)}'


# ---- parquet ----------------------------------------------------------------------------------
def read_parquet(fh: IO[bytes], *, max_line_bytes: int | None = None, budget: Budget | None = None) -> Iterator[Row]:
    """Batch by batch, each of about BATCH_BYTES decoded; each batch's decoded size is charged to
    `budget` before its rows are yielded."""
    import pyarrow.parquet as pq

    limit = max_line_bytes or limits.current().record_bytes
    try:
        pf = pq.ParquetFile(fh)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a broken file
        yield 1, None, f"not a readable parquet file ({e})"
        return
    row = 0
    sizing = _BatchSize()
    for group in range(pf.metadata.num_row_groups):
        for batch in _parquet_batches(pf, group, sizing):
            if budget is not None:
                budget.charge(batch.nbytes)
            wide = batch.nbytes > limit  # only then can one of its rows be over the limit
            for j, record in enumerate(batch.to_pylist()):
                row += 1
                if wide and batch.slice(j, 1).nbytes > limit:
                    yield row, None, record_too_long(limit, "row")
                else:
                    yield row, record, None


class _BatchSize:
    """Rows per parquet batch: a few at first, then what makes BATCH_BYTES. A file's metadata
    cannot say how big its rows decode (dictionary encoding repeats a long value for free)."""

    def __init__(self) -> None:
        self.rows, self.measured = 16, False

    def fits(self, batch: Any) -> bool:
        """False when the batch says another size is much better (the group is then read again)."""
        ideal = max(1, min(BATCH_ROWS, int(BATCH_BYTES * batch.num_rows / max(batch.nbytes, 1))))
        grow = not self.measured and ideal > 4 * self.rows
        self.measured = True
        if grow or (ideal * 4 < self.rows):
            self.rows = ideal
            return False
        return True


def _parquet_batches(pf: Any, group: int, size: _BatchSize) -> Iterator[Any]:
    """One row group's batches; when a batch asks for another batch size, the group is read again
    at that size from the first row not yet yielded (growing: once, after the first batch)."""
    done = 0
    while True:
        skip = done
        for batch in pf.iter_batches(batch_size=size.rows, row_groups=[group]):
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            if skip:
                batch, skip = batch.slice(skip), 0
            if not size.fits(batch):
                break
            done += batch.num_rows
            yield batch
        else:
            return


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


def _csv_error(e: csv.Error, limit: int) -> str:
    if "field larger than field limit" in str(e):
        return record_too_long(limit, "a cell")
    return str(e)


def read_csv(fh: IO[bytes], *, max_line_bytes: int | None = None, delimiter: str = ",",
             budget: Budget | None = None) -> Iterator[Row]:
    limit = max_line_bytes or limits.current().record_bytes
    csv.field_size_limit(limit)
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        yield 1, None, f"unreadable CSV header ({_csv_error(e, limit)})"
        return
    if sum(map(len, header)) > limit:
        yield 1, None, record_too_long(limit, "the header")
        return
    width = len(header)
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield row + 1, None, (f"unreadable CSV (line {reader.line_num}: {_csv_error(e, limit)}); "
                                  "the rest of the file was not read")
            return
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        row += 1
        if sum(map(len, cells)) > limit:
            yield row, None, record_too_long(limit, "row")
            continue
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
    csv.field_size_limit(limits.current().record_bytes)
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="replace", newline="")
    try:
        return next(csv.reader(text, delimiter=delimiter))
    except (StopIteration, csv.Error):
        return []


def reader_for(fmt: str, name: str = ""):
    if fmt == "csv" and name.lower().split(".gz")[0].split(".zst")[0].endswith(".tsv"):
        return lambda fh, **kw: read_csv(fh, delimiter="\t", **kw)
    return {"jsonl": read_jsonl, "json": read_json, "parquet": read_parquet, "csv": read_csv}[fmt]
