"""API keys: the service (create, list, revoke, the server's check) and the rule every /v1 route
applies (serving/routes/auth.py, api/auth.py's request_project), on a temporary store."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tuneloop.api.auth import Project
from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.service.keys import PREFIX, KeyService, digest
from tuneloop.store.db import make_engine, migrate
from tuneloop.store.repo import Store
from tests.unit.test_serving_protocol import CHAT, ScriptedEngine


@pytest.fixture
def keys(tmp_path) -> KeyService:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    migrate(engine)
    return KeyService(Store(engine))


def test_create_stores_only_the_digest_and_the_key_authenticates(keys):
    row, key = keys.create("team-a")
    assert key.startswith(PREFIX) and len(key) >= len(PREFIX) + 43   # 32 random bytes
    assert row["id"].startswith("key_") and row["project"] == "team-a"
    stored = keys.store.keys.get(row["id"])
    assert stored["sha256"] == digest(key) and key not in str(stored)
    assert stored["redacted"] == f"{PREFIX}...{key[-4:]}"
    assert keys.project_of(key) == "team-a" and keys.authenticate(key) == "team-a"
    other_row, other = keys.create("team-b")
    assert other != key and keys.project_of(other) == "team-b"
    assert [k["id"] for k in keys.list()] == [row["id"], other_row["id"]]
    assert [k["id"] for k in keys.list("team-b")] == [other_row["id"]]


def test_wrong_keys_and_revoked_keys_are_refused(keys):
    assert not keys.required()
    row, key = keys.create("team-a")
    assert keys.required()
    for bad in ("", "sk-nope", key[:-1], key + "x", key.upper(), PREFIX + "a" * 500, "x" * 10_000):
        assert keys.project_of(bad) is None
    revoked = keys.revoke(row["id"])
    assert revoked["revoked_at"] is not None and keys.project_of(key) is None
    assert keys.revoke(row["id"])["revoked_at"] == revoked["revoked_at"]   # twice: a no-op
    assert keys.required()   # revoking every key does not reopen the server
    with pytest.raises(NotFoundError, match="key_nope") as e:
        keys.revoke("key_nope")
    assert row["id"] in e.value.hint


def test_project_names_are_checked(keys):
    with pytest.raises(ValidationError) as e:
        keys.create("Team A!")
    assert e.value.param == "project" and not keys.list()


def test_last_used_is_recorded_at_most_once_a_minute(keys):
    row, key = keys.create("team-a")
    assert keys.store.keys.get(row["id"])["last_used_at"] is None
    keys.project_of(key)
    first = keys.store.keys.get(row["id"])["last_used_at"]
    assert first is not None
    keys.project_of(key)
    assert keys.store.keys.get(row["id"])["last_used_at"] == first
    assert KeyService(keys.store).project_of(key) == "team-a"   # a fresh service reads the stored time
    assert keys.store.keys.get(row["id"])["last_used_at"] == first


def _app(keys: KeyService | None, api_key: str | None = None) -> TestClient:
    app = FastAPI()
    app.state.keys, app.state.api_key, app.state.info = keys, api_key, {"project": "srv"}

    @app.get("/whoami")
    def whoami(project: Project):
        return {"project": project}

    from tuneloop.serving.server import _error
    from tuneloop.errors import TuneloopError
    app.add_exception_handler(TuneloopError, _error)
    return TestClient(app)


def _who(client: TestClient, key: str | None):
    r = client.get("/whoami", headers={"Authorization": f"Bearer {key}"} if key is not None else {})
    return r.json()["project"] if r.status_code == 200 else (r.status_code, r.json())


def test_request_project_follows_the_key(keys):
    open_server = _app(keys)
    assert _who(open_server, None) == "default" and _who(open_server, "anything") == "default"
    assert _who(_app(None), None) == "default"

    _, key_a = keys.create("team-a")
    _, key_b = keys.create("team-b")
    client = _app(keys)
    assert _who(client, key_a) == "team-a" and _who(client, key_b) == "team-b"
    status, body = _who(client, None)
    assert status == 401 and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == "invalid_api_key"
    assert "didn't provide" in body["error"]["message"]
    status, body = _who(client, key_a + "x")
    assert status == 401 and "Incorrect API key" in body["error"]["message"]

    admin = _app(keys, api_key="sk-admin")
    assert _who(admin, "sk-admin") == "srv" and _who(admin, key_a) == "team-a"
    assert _who(admin, "sk-admin2")[0] == 401 and _who(admin, None)[0] == 401
    assert _who(_app(None, api_key="sk-admin"), "sk-admin") == "srv"


def test_inference_routes_take_project_keys_and_admin_routes_only_the_servers_project(keys):
    from tuneloop.serving.server import create_app

    _, key_a = keys.create("team-a")
    _, own = keys.create("p")
    app = create_app(ScriptedEngine(), api_key="sk-good", info={"project": "p"}, keys=keys)
    with TestClient(app) as c:
        for key in ("sk-good", key_a, own):
            r = c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 401
        body = {"lora_name": "x", "lora_path": "/nowhere"}
        r = c.post("/v1/unload_lora_adapter", json=body, headers={"Authorization": f"Bearer {key_a}"})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert "team-a" in r.json()["error"]["message"]
        for key in ("sk-good", own):   # past the key check: the adapter is unknown, not forbidden
            r = c.post("/v1/unload_lora_adapter", json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code not in (401, 403), r.text



def test_whether_a_key_is_required_is_cached_once_true_and_rechecked_while_open(keys, tmp_path, monkeypatch):
    import time

    import tuneloop.service.keys as K

    monkeypatch.setattr(K, "OPEN_RECHECK", 0.2)
    server = KeyService(keys.store)             # the server's; `keys` stands for `tuneloop keys create`
    assert server.required() is False
    keys.create("team-a")
    assert server.required() is False           # another process's key: the open answer holds OPEN_RECHECK
    time.sleep(0.25)
    assert server.required() is True
    monkeypatch.setattr(keys.store.keys, "any", lambda: pytest.fail("asked the database again"))
    assert server.required() is True            # keys are never deleted: True is kept

    engine = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    migrate(engine)
    own = KeyService(Store(engine))
    assert own.required() is False
    own.create("team-b")
    assert own.required() is True               # a key made by the server's own service: at once
