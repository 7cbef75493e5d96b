"""Outbound URLs are resolved and checked before any packet is sent: link-local and metadata
addresses always refused, loopback and private ranges unless TUNELOOP_ALLOW_URLS allows them,
redirects re-checked. Names resolve through a stub resolver: no traffic leaves the machine."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import cli, write_jsonl
from tests.stubs import JsonHandler, serve
from tuneloop import netguard
from tuneloop.netguard import UnsafeURLError, check_url
from tuneloop.rewards.base import Sample
from tuneloop.rewards.functions import RefError, RewardContext

NAMES = {"metadata.evil.test": ["169.254.169.254"], "internal.evil.test": ["10.0.0.5"],
         "mixed.evil.test": ["93.184.216.34", "192.168.1.1"], "public.example.test": ["93.184.216.34"],
         "v6meta.evil.test": ["::ffff:169.254.169.254"], "home.evil.test": ["127.0.0.1"]}


@pytest.fixture
def stub_dns(monkeypatch):
    """Names resolve from NAMES; any real connect() attempt is recorded (and refused)."""
    asked: list[str] = []
    connects: list = []

    def resolve(host, port):
        asked.append(host)
        if host not in NAMES:
            raise socket.gaierror(f"stub resolver: unknown name {host}")
        return NAMES[host]

    real_connect = socket.socket.connect

    def connect(self, address):
        if address[0] not in ("127.0.0.1", "::1"):
            connects.append(address)
            raise OSError("test: no traffic leaves the machine")
        return real_connect(self, address)

    monkeypatch.setattr(netguard, "resolver", resolve)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.delenv("TUNELOOP_ALLOW_URLS", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return asked, connects


@pytest.mark.parametrize("url, why", [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://metadata.evil.test/", "link-local"),
    ("http://v6meta.evil.test/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://internal.evil.test/reward", "private-network"),
    ("http://mixed.evil.test/reward", "private-network"),
    ("http://home.evil.test:8000/", "loopback"),
    ("http://127.0.0.1:8000/v1", "loopback"),
    ("http://0.0.0.0:8000/", "reserved"),
    ("file:///etc/passwd", "must use http"),
    ("http://user:pw@public.example.test/", "credentials"),
])
def test_unsafe_urls_are_refused(stub_dns, url, why):
    with pytest.raises(UnsafeURLError) as e:
        check_url(url)
    assert why in e.value.message
    assert stub_dns[1] == []


def test_configuration_allows_loopback_and_private_but_never_link_local(stub_dns, monkeypatch):
    assert check_url("http://public.example.test/x") == ["93.184.216.34"]
    monkeypatch.setenv("TUNELOOP_ALLOW_URLS", "loopback,private")
    assert check_url("http://internal.evil.test/") == ["10.0.0.5"]
    assert check_url("http://127.0.0.1:9/") == ["127.0.0.1"]
    with pytest.raises(UnsafeURLError, match="link-local"):
        check_url("http://metadata.evil.test/")
    monkeypatch.setenv("TUNELOOP_ALLOW_URLS", "10.0.0.0/24")
    assert check_url("http://internal.evil.test/")
    with pytest.raises(UnsafeURLError, match="private"):
        check_url("http://mixed.evil.test/")
    monkeypatch.setenv("TUNELOOP_ALLOW_URLS", "169.254.0.0/16")
    with pytest.raises(UnsafeURLError, match="link-local"):
        check_url("http://169.254.169.254/")


def test_reward_and_judge_urls_are_refused_at_resolution(stub_dns):
    with RewardContext() as ctx:
        for ref in ("http://metadata.evil.test/reward", "https://internal.evil.test/reward"):
            with pytest.raises(RefError, match="Refusing"):
                ctx.check(ref)
        with pytest.raises(RefError, match="link-local"):
            ctx.judge("openai:gpt@http://169.254.169.254/v1")
    assert stub_dns[1] == []


def test_a_redirect_to_a_metadata_address_is_not_followed(monkeypatch):
    """An allowed endpoint (loopback, as the tests allow) answers with a redirect to the metadata
    address: the guarded client re-checks it and sends nothing there."""
    hits: list[str] = []

    class Redirect(JsonHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/iam")
            self.send_header("Content-Length", "0")
            self.end_headers()

    connects: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if address[0] != "127.0.0.1":
            connects.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    from tuneloop.rewards.http import HttpReward

    with serve(Redirect) as url:
        fn = HttpReward(url + "/reward", retries=0)
        fn._http().follow_redirects = True
        scores = fn.score([Sample("s1", [{"role": "user", "content": "hi"}], "hello", {})])
        fn.close()
    assert hits == ["/reward"]
    assert connects == []
    assert scores[0].error is not None and "link-local" in scores[0].error.message


@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
def test_cli_refuses_a_metadata_reward_before_any_job(home, tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [{"prompt": [{"role": "user", "content": "hi"}]}] * 2)
    for args in (["--reward-function", "http://169.254.169.254/latest/meta-data/"], []):
        r = cli("tune", "--technique", "rlvr", "--dataset", str(tmp_path / "rows.jsonl"), *args,
                *([] if args else ["--reward-function", "http://127.0.0.1:9/reward"]), "--dry-run",
                env={"TUNELOOP_ALLOW_URLS": ""})
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Refusing the reward endpoint" in r.stderr, r.stderr
        assert ("TUNELOOP_ALLOW_URLS=loopback" in r.stderr) == (not args), r.stderr


def test_dataset_urls_are_checked_and_chains_refused(stub_dns):
    from tuneloop.data import sources
    from tuneloop.errors import DatasetError

    with pytest.raises(UnsafeURLError, match="link-local"):
        sources.resolve("http://metadata.evil.test/train.jsonl")
    with pytest.raises(UnsafeURLError, match="private"):
        sources.resolve("https://internal.evil.test/train.jsonl")
    with pytest.raises(DatasetError, match="Chained"):
        sources.resolve("simplecache::http://169.254.169.254/x.jsonl")
    assert stub_dns[1] == []
