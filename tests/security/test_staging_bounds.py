"""Every dataset input is bounded (issue 10): decompressed bytes, rows and record size per source,
for every reader; a failure leaves no `.partial` behind; hints quote hostile file names; a model
folder with only pickled weights is refused before any job exists.

The caps are lowered through their environment variables, as a user would raise them."""

from __future__ import annotations

import errno
import gzip
import json
import resource
import shlex
import tracemalloc
from pathlib import Path

import pytest

import tuneloop.data.readers as readers
import tuneloop.data.stage as stage_mod
from tests.conftest import DEMO_DATA, cli, write_jsonl
from tests.integration.test_hf_datasets import REPO, Hub, hub  # noqa: F401 - hub: the stand-in Hub's fixture
from tests.integration.test_hf_datasets import run as run_hub
from tuneloop.data.stage import stage_dataset
from tuneloop.errors import DatasetError, ValidationError

ROW = {"prompt": "What is the capital of France?", "completion": "Paris."}
LINE = json.dumps(ROW).encode() + b"\n"
MiB = 1 << 20


def stage(path, tmp_path, **kw):
    return stage_dataset(str(path), "sft", tmp_path / "out" / "staged.jsonl", lookup=None, **kw)


def refused(path, tmp_path, **kw) -> DatasetError:
    with pytest.raises(DatasetError) as e:
        stage(path, tmp_path, **kw)
    assert_nothing_left(tmp_path / "out")
    return e.value


def assert_nothing_left(folder: Path) -> None:
    assert not folder.exists() or list(folder.iterdir()) == [], list(folder.iterdir())


def rows_block(size: int = 16 * MiB) -> bytes:
    return LINE * (size // len(LINE))


def peak_while(fn) -> tuple[int, int, object]:
    """(peak Python allocations, growth of the process's peak RSS) in bytes while fn runs."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - returned for the test to look at
        result = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0, result


# ---- bombs: a few MB that expand to GBs stop at the cap, in bounded memory ---------------------------------
def test_gzip_bomb_of_valid_rows_stops_at_the_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "4MiB")
    member = gzip.compress(rows_block(), 9)          # ~60 KB for 16 MiB; gzip members concatenate
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(member * 64)                     # ~4 MB on disk, 1 GiB decompressed
    peak, rss_growth, err = peak_while(lambda: stage(bomb, tmp_path))
    assert isinstance(err, DatasetError), err
    text = err.render()
    assert "is larger than 4 MiB decompressed, the limit for one dataset" in text
    line = 4 * MiB // len(LINE) + 1                   # the line that crosses the cap
    assert f"reading stopped at {bomb}:{line}." in text
    assert "TUNELOOP_MAX_DATASET_BYTES=4194304" in text and "TUNELOOP_MAX_DATASET_BYTES=16777216 tuneloop tune" in text
    assert_nothing_left(tmp_path / "out")
    assert peak < 48 * MiB and rss_growth < 256 * MiB, (peak, rss_growth)  # not the 1 GiB it expands to


def test_zstd_bomb_stops_at_the_cap(tmp_path, monkeypatch):
    import zstandard

    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "3MiB")
    frame = zstandard.ZstdCompressor(level=19).compress(rows_block())
    bomb = tmp_path / "bomb.jsonl.zst"
    bomb.write_bytes(frame * 64)                      # frames concatenate too: 1 GiB decompressed
    peak, _, err = peak_while(lambda: stage(bomb, tmp_path))
    assert isinstance(err, DatasetError), err
    assert "larger than 3 MiB decompressed" in err.message and f"{bomb}:{3 * MiB // len(LINE) + 1}" in err.message
    assert_nothing_left(tmp_path / "out")
    assert peak < 48 * MiB, peak


def test_json_array_over_the_cap_is_streamed_not_parsed_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "2MiB")
    body = b",".join([LINE.strip()] * 100_000)        # 7 MB of elements
    doc = tmp_path / "big.json.gz"                    # a JSON-array bomb: "[" then ",rows" members
    doc.write_bytes(gzip.compress(b"[" + body) + gzip.compress(b"," + body) * 40)
    peak, _, err = peak_while(lambda: stage(doc, tmp_path))
    assert isinstance(err, DatasetError), err
    assert "larger than 2 MiB decompressed" in err.message and f"{doc}: row " in err.message
    assert peak < 40 * MiB, peak
    assert_nothing_left(tmp_path / "out")
    (tmp_path / "ok.json").write_bytes(b'{"data": [' + b",".join([LINE.strip()] * 3) + b"]}")
    assert stage(tmp_path / "ok.json", tmp_path).rows == 3  # under the cap: staged as before


def test_a_json_document_that_cannot_be_streamed_is_capped_like_one_record(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_MAX_RECORD_BYTES", "64KiB")
    monkeypatch.setattr(readers, "CHUNK_BYTES", 4096)
    doc = tmp_path / "doc.json"   # "data" is not the first key: the whole object would have to be parsed
    doc.write_text(json.dumps({"version": 1, "data": [ROW] * 5000}, indent=2))
    text = refused(doc, tmp_path).render()
    assert f"{doc}: row 1: the JSON document is longer than 64 KiB" in text and "or JSONL" in text


def test_a_record_over_the_record_cap_names_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_MAX_RECORD_BYTES", "64KiB")
    long = json.dumps({"prompt": "x" * 100_000, "completion": "y"})
    p = write_jsonl(tmp_path / "long.jsonl", [ROW, ROW, long, ROW])
    text = refused(p, tmp_path).render()
    assert f"{p}:3: line is longer than 64 KiB, the limit for one record (TUNELOOP_MAX_RECORD_BYTES)" in text
    assert f"{p}:4" not in text and f"{p}:2" not in text
    monkeypatch.setenv("TUNELOOP_MAX_RECORD_BYTES", "1MiB")
    assert stage(p, tmp_path).rows == 4


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_other_formats_bound_one_record(tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("TUNELOOP_MAX_RECORD_BYTES", "64KiB")
    rows = [ROW, {"prompt": "x" * 100_000, "completion": "y"}, ROW]
    path = tmp_path / f"long.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        path.write_text("prompt,completion\n" + "".join(f"{r['prompt']},{r['completion']}\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    text = refused(path, tmp_path).render()
    assert f"{path}: row 2: " in text and "is longer than 64 KiB, the limit for one record" in text, text


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz", "rows.json", "rows.csv", "rows.parquet"])
def test_rows_cap_for_every_format(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "10")
    rows = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(25)]
    path = tmp_path / name
    if name.startswith("rows.jsonl"):
        data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows))
    elif name.endswith(".csv"):
        path.write_text("prompt,completion\n" + "".join(f"{r['prompt']},{r['completion']}\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    err = refused(path, tmp_path)
    where = f"{path}:11" if name.startswith("rows.jsonl") else f"{path}: row 11"
    assert err.message == f"Dataset {path} has more than 10 rows, the limit for one dataset: reading stopped at {where}."
    assert "TUNELOOP_MAX_DATASET_ROWS=40 tuneloop tune --technique sft" in err.hint


def test_the_caps_count_every_file_of_a_folder(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    for part in ("a", "b"):
        write_jsonl(folder / f"part-{part}.jsonl", [ROW] * 6)
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "10")
    assert f"{folder / 'part-b.jsonl'}:5" in refused(folder, tmp_path).message
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "12")
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", str(len(LINE) * 9))
    assert f"{folder / 'part-b.jsonl'}:4" in refused(folder, tmp_path).message


def test_parquet_row_groups_are_charged_before_they_are_decoded(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "same.parquet"   # one repeated 64 KB value: dictionary-encoded, tiny on disk
    pq.write_table(pa.Table.from_pylist([{"prompt": "x" * 65536, "completion": "y"}] * 2000), path,
                   row_group_size=500)
    assert path.stat().st_size < 1 * MiB
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "40MiB")
    err = refused(path, tmp_path)
    assert "larger than 40 MiB decompressed" in err.message and f"{path}: row 501" in err.message


def test_remote_fsspec_sources_are_bounded_too(tmp_path, monkeypatch):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bounds/bomb.jsonl.gz", gzip.compress(rows_block(), 9) * 8)
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "1MiB")
    try:
        err = refused("memory://bounds/bomb.jsonl.gz", tmp_path)
    finally:
        fs.rm("/bounds", recursive=True)
    assert "larger than 1 MiB decompressed" in err.message and "memory://" in err.message


def test_hub_files_over_the_cap_are_refused_before_download(hub, tmp_path, monkeypatch, home):
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "1KiB")
    Hub.seen.clear()
    r = run_hub(hub, tmp_path, "dpo", f"hf://{REPO}?file=train-0000*")
    assert r.returncode == 1 and "nothing was downloaded" in r.stderr, r.stderr
    assert "more than the limit of 1 KiB for one dataset" in r.stderr
    assert not [p for method, p, _ in Hub.seen if "/resolve/" in p]


def test_the_parallel_path_has_the_same_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_mod, "PARALLEL_MIN_BYTES", 1024)
    monkeypatch.setenv("TUNELOOP_STAGE_WORKERS", "2")
    rows = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(300)]
    p = write_jsonl(tmp_path / "big.jsonl", rows[:100] + [""] + rows[100:])   # a blank line 101
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "200")
    assert f"reading stopped at {p}:202." in refused(p, tmp_path).message
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "300")
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "4KiB")  # smaller than the file: read in order, exact line
    assert "larger than 4 KiB decompressed" in refused(p, tmp_path).message
    monkeypatch.delenv("TUNELOOP_MAX_DATASET_BYTES")
    assert stage(p, tmp_path).rows == 300


def test_bad_limit_values_are_a_clear_error(tmp_path, monkeypatch):
    from tuneloop.data import limits
    from tuneloop.errors import ConfigError

    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "lots")
    with pytest.raises(ConfigError, match="TUNELOOP_MAX_DATASET_BYTES='lots' is not a positive size"):
        limits.current()
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_BYTES", "1_500 MB")
    assert limits.current().dataset_bytes == 1_500_000_000


# ---- no .partial left, whatever fails --------------------------------------------------------------
class _DiskFull:
    def __init__(self, fh, after: int):
        self.fh, self.left = fh, after

    def write(self, data):
        self.left -= len(data)
        if self.left < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _failing_reader(exc: BaseException):
    real = readers.read_jsonl

    def read(fh, **kw):
        for n, row in enumerate(real(fh, **kw)):
            if n == 5000:
                raise exc
            yield row
    return read


@pytest.mark.parametrize("failure", ["KeyboardInterrupt", "reader exception", "disk full", "bad row", "rows cap"])
def test_a_failure_mid_file_leaves_no_partial(tmp_path, monkeypatch, failure):
    rows = [ROW] * 20_000 + (['{"prompt": 1, "completion": "x"}'] if failure == "bad row" else [])
    p = write_jsonl(tmp_path / "rows.jsonl", rows)
    monkeypatch.setenv("TUNELOOP_STAGE_WORKERS", "1")
    if failure == "KeyboardInterrupt":
        monkeypatch.setattr(readers, "read_jsonl", _failing_reader(KeyboardInterrupt()))
    elif failure == "reader exception":
        monkeypatch.setattr(readers, "read_jsonl", _failing_reader(RuntimeError("reader bug")))
    elif failure == "disk full":
        real_open = open
        monkeypatch.setattr(stage_mod, "open", lambda f, mode="r", *a, **k: _DiskFull(real_open(f, mode, *a, **k), 100_000)
                            if str(f).endswith(".partial") else real_open(f, mode, *a, **k), raising=False)
    elif failure == "rows cap":
        monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "15000")
    expected = {"KeyboardInterrupt": KeyboardInterrupt, "reader exception": RuntimeError}.get(failure, DatasetError)
    with pytest.raises(expected) as e:
        stage(p, tmp_path)
    if failure == "disk full":
        assert "Cannot write the staged data" in e.value.message and "No space left" in e.value.message
    assert_nothing_left(tmp_path / "out")


def _failing_worker(args):
    Path(args[3]).write_bytes(LINE * 10)  # a part half-written, then the worker dies
    raise KeyboardInterrupt


def test_a_failure_in_a_parallel_worker_leaves_no_partial(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_mod, "PARALLEL_MIN_BYTES", 1024)
    monkeypatch.setattr(stage_mod, "_worker", _failing_worker)
    monkeypatch.setenv("TUNELOOP_STAGE_WORKERS", "2")
    p = write_jsonl(tmp_path / "rows.jsonl", [ROW] * 2000)
    with pytest.raises(BaseException):
        stage(p, tmp_path)
    assert_nothing_left(tmp_path / "out")


def test_registering_a_dataset_that_fails_leaves_no_version_folder(home, tmp_path, monkeypatch):
    import tuneloop.service.datasets as assets_mod
    from tuneloop.service.app import open_services

    services = open_services()
    settings, assets = services.settings, services.datasets
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "3")
    with pytest.raises(DatasetError):
        assets.create("capitals", str(DEMO_DATA / "sft.jsonl"), "sft")
    monkeypatch.delenv("TUNELOOP_MAX_DATASET_ROWS")

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(assets_mod, "column_lengths", interrupted)
    with pytest.raises(KeyboardInterrupt):
        assets.create("capitals", str(DEMO_DATA / "sft.jsonl"), "sft")
    left = [p for p in (settings.home / "datasets").rglob("*") if p.is_file()]
    assert left == [] and assets.list() == []


# ---- hostile file names are one shell word in every hint -----------------------------------------------------
@pytest.mark.parametrize("name", ["my data;rm -rf ~.jsonl", "$(touch pwned).jsonl", "it's `x`.jsonl"])
def test_hints_quote_a_hostile_file_name(tmp_path, monkeypatch, name):
    p = write_jsonl(tmp_path / name, [{"q": "a", "a": "b"}])       # wrong columns: a --column-map hint
    hint = refused(p, tmp_path).hint.splitlines()[-1]
    argv = shlex.split(hint)
    assert argv[argv.index("--dataset") + 1] == str(p) and argv[-2:] == ["--column-map", "q:prompt,a:completion"]
    write_jsonl(p, [ROW] * 5)                                        # and the limit's hint
    monkeypatch.setenv("TUNELOOP_MAX_DATASET_ROWS", "2")
    argv = shlex.split(refused(p, tmp_path).hint.splitlines()[-1])
    assert argv[0] == "TUNELOOP_MAX_DATASET_ROWS=8" and argv[argv.index("--dataset") + 1] == str(p)


# ---- the CLI, as a user types it ---------------------------------------------------------------------------------
def test_cli_shows_the_cap_with_file_and_line_and_exits_1(home, tmp_path):
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(rows_block(), 9) * 16)
    out = tmp_path / "staged.jsonl"
    r = cli("datasets", "stage", "--technique", "sft", "--dataset", str(bomb), "--output", str(out),
            env={"TUNELOOP_MAX_DATASET_BYTES": "1MiB"})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"❌ Dataset {bomb} is larger than 1 MiB decompressed, the limit for one dataset: reading stopped at " \
           f"{bomb}:{MiB // len(LINE) + 1}." in r.stderr
    assert f"TUNELOOP_MAX_DATASET_BYTES=4194304 tuneloop datasets stage --technique sft --output {out} --dataset {bomb}" \
        in r.stderr
    assert list(tmp_path.glob("staged.jsonl*")) == []

    long = write_jsonl(tmp_path / "long.jsonl", [ROW, json.dumps({"prompt": "x" * 5000, "completion": "y"})])
    r = cli("tune", "--technique", "sft", "--dataset", str(long), "--dry-run", env={"TUNELOOP_MAX_RECORD_BYTES": "4KiB"})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{long}:2: line is longer than 4 KiB, the limit for one record (TUNELOOP_MAX_RECORD_BYTES)" in r.stderr


# ---- model folders: safetensors or nothing ---------------------------------------------------------------------------
def _folder(tmp_path: Path, *files: str, name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    for f in files:
        (folder / f).write_bytes(b"\x80\x04K\x01.")  # a pickle; it is never opened
    return folder


def test_model_folder_without_safetensors_is_refused(tmp_path):
    from tuneloop.models.resolve import resolve

    with pytest.raises(ValidationError) as e:
        resolve(str(_folder(tmp_path, "pytorch_model.bin", "training_args.bin")), technique="sft")
    assert "holds only pickled weights (pytorch_model.bin, training_args.bin)" in e.value.message
    assert "unpickling a file can run code" in e.value.message and "safe_serialization=True" in e.value.hint
    with pytest.raises(ValidationError, match="has no weights"):
        resolve(str(_folder(tmp_path, name="empty")), technique="sft")
    adapter = _folder(tmp_path, "adapter_model.bin", name="adapter my;dir")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tuneloop/tiny-qwen3"}))
    with pytest.raises(ValidationError) as e:
        resolve(str(adapter), technique="rlvr")
    assert "Adapter folder" in e.value.message and "adapter_model.safetensors only" in e.value.message
    assert shlex.split(e.value.hint.splitlines()[-1])[-1] == str(adapter)
    good = _folder(tmp_path, name="good")
    (good / "model.safetensors").write_bytes(b"")
    assert resolve(str(good), technique="sft").kind == "local"


def test_tune_dry_run_refuses_a_pickle_only_model_before_any_job(home, tmp_path):
    folder = _folder(tmp_path, "pytorch_model.bin")
    r = cli("tune", "--technique", "sft", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--model", str(folder), "--dry-run")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"❌ Model folder {folder} holds only pickled weights (pytorch_model.bin)" in r.stderr
    assert "save_pretrained(sys.argv[1], safe_serialization=True)" in r.stderr
    r = cli("status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr
