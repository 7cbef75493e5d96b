"""hf:// end to end against a local stand-in for the Hugging Face Hub's HTTP API (the endpoints
huggingface_hub 2.4.0 calls: the repo tree listing, then HEAD and GET on resolve URLs). The CLI
runs in a subprocess with HF_ENDPOINT pointing at it, HF_HUB_OFFLINE=0 and an HF_TOKEN."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import cli

TOKEN = "hf_test_token_123"
COMMIT = "a" * 40


def _parquet(rows) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _pref(i):
    return {"prompt": f"Question {i}?", "chosen": [{"role": "assistant", "content": f"Good {i}"}],
            "rejected": [{"role": "assistant", "content": f"Bad {i}"}]}


REPO = "acme/prefs"
FILES = {
    "README.md": b"# a dataset card\n",
    "data/train-00000-of-00002.parquet": _parquet([_pref(i) for i in range(3)]),
    "data/train-00001-of-00002.parquet": _parquet([_pref(i) for i in range(3, 5)]),
    "data/test-00000-of-00001.parquet": _parquet([_pref(9)]),
    "data/train_sft_extra.parquet": _parquet([{"prompt": "Q", "completion": "A"}]),
}


class Hub(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None]] = []

    def log_message(self, *args):  # quiet
        pass

    def _route(self):
        path = unquote(urlsplit(self.path).path)
        Hub.seen.append((self.command, path, self.headers.get("authorization")))
        tree = f"/api/datasets/{REPO}/tree/main"
        resolve = f"/datasets/{REPO}/resolve/main/"
        if path == tree or path == tree + "/":
            body = json.dumps([{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                               for p, b in FILES.items()]).encode()
            return 200, {"Content-Type": "application/json"}, body
        if path.startswith(resolve) and path[len(resolve):] in FILES:
            body = FILES[path[len(resolve):]]
            return 200, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                         "Content-Type": "application/octet-stream"}, body
        return 404, {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"}, \
            json.dumps({"error": "Repository not found"}).encode()

    def _send(self, head_only: bool):
        status, headers, body = self._route()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self):
        self._send(False)

    def do_HEAD(self):
        self._send(True)


@pytest.fixture(scope="module")
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run(hub, tmp_path, technique, source, *extra):
    env = {"HF_ENDPOINT": hub, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    return cli("datasets", "stage", "--technique", technique, "--dataset", source, "--output",
               str(tmp_path / "out.jsonl"), "--json", *extra, env=env, timeout=120)


def test_default_split_with_a_divergent_file_is_refused_with_a_pattern(hub, tmp_path, home):
    Hub.seen.clear()
    r = run(hub, tmp_path, "dpo", f"hf://{REPO}")
    assert r.returncode == 1, r.stderr
    assert f"❌ Schema divergence detected across files in {REPO}." in r.stderr
    assert "📄 data/train-00000-of-00002.parquet\n      Columns: chosen, prompt, rejected" in r.stderr
    assert "📄 data/train_sft_extra.parquet\n      Columns: completion, prompt" in r.stderr
    assert "test-00000" not in r.stderr  # only the train split was considered
    assert f'--dataset "hf://{REPO}?file=train-0000*"' in r.stderr
    # the token goes to the Hub as a bearer header, on the listing and on every download
    assert Hub.seen and all(auth == f"Bearer {TOKEN}" for _, _, auth in Hub.seen)


def test_glob_substring_and_split_selection(hub, tmp_path, home):
    r = run(hub, tmp_path, "dpo", f"hf://{REPO}?file=train-0000*")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["rows"] == 5 and len(res["files"]) == 2 and res["files"][0] == f"hf://{REPO}/data/train-00000-of-00002.parquet"
    assert any("Auto-converted column 'chosen'" in n for n in res["notes"])
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0] == {"prompt": "Question 0?", "chosen": "Good 0", "rejected": "Bad 0"}

    r = run(hub, tmp_path, "dpo", f"hf://{REPO}/test")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 1

    r = run(hub, tmp_path, "sft", f"hf://{REPO}?file=sft_extra")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 1


def test_no_match_lists_the_files_and_unknown_repos_are_clear(hub, tmp_path, home):
    r = run(hub, tmp_path, "dpo", f"hf://{REPO}?file=*nothing*")
    assert r.returncode == 1
    assert f"No files in {REPO} match ?file=*nothing*." in r.stderr
    for name in FILES:
        if name.endswith(".parquet"):
            assert f"  {name}" in r.stderr
    r = run(hub, tmp_path, "dpo", "hf://acme/missing")
    assert r.returncode == 1 and "Hugging Face dataset acme/missing was not found." in r.stderr
    assert "Traceback" not in r.stderr
