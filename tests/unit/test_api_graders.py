"""The graders API (api/graders.py over service/graders.py) on a live uvicorn server in a thread,
driven by the official openai client: every response must parse as its GraderRunResponse /
GraderValidateResponse; python graders run in the rewards sandbox; bad graders are OpenAI 400s
with their param."""

from __future__ import annotations

import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from tuneloop.api import graders as graders_api  # noqa: E402
from tuneloop.service.graders import GraderService  # noqa: E402
from tuneloop.settings import Settings  # noqa: E402
from tuneloop.serving.server import create_app  # noqa: E402
from tests.unit.test_serving_protocol import ScriptedEngine  # noqa: E402

EQ = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
      "reference": "{{ item.answer }}", "operation": "eq"}
PY = {"type": "python", "name": "py", "source": "def grade(sample, item):\n"
      "    return 1.0 if item['answer'].lower() in sample['output_text'].lower() else 0.25\n"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    app = create_app(ScriptedEngine(), api_key="sk-admin", info={"project": "p"})
    app.include_router(graders_api.router)
    app.state.graders = GraderService(Settings(home=home, database_url=f"sqlite:///{home / 't.db'}",
                                               models_dir=home / "models"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-admin", max_retries=0, timeout=60)
    server.should_exit = True
    thread.join(10)
    app.state.graders.close()


def _known(obj) -> None:
    """Every field the client parsed is one it defines (no unknown-field fallbacks)."""
    assert not (set(obj.model_fields_set) - set(type(obj).model_fields)), obj.model_extra


def test_string_check_runs_and_parses(client):
    r = client.fine_tuning.alpha.graders.run(grader=EQ, model_sample="Paris", item={"answer": "Paris"})
    _known(r)
    _known(r.metadata)
    _known(r.metadata.errors)
    assert r.reward == 1.0 and r.metadata.type == "string_check" and r.metadata.name == "exact"
    assert r.metadata.scores == {"exact": 1.0} and not any(
        v for k, v in r.metadata.errors.model_dump().items() if isinstance(v, bool))
    assert client.fine_tuning.alpha.graders.run(grader=EQ, model_sample="Lyon", item={"answer": "Paris"}).reward == 0.0


def test_python_grader_runs_in_the_sandbox_and_its_errors_are_flags(client):
    r = client.fine_tuning.alpha.graders.run(grader=PY, model_sample="It is PARIS.", item={"answer": "Paris"})
    assert r.reward == 1.0
    # the sandbox has no network and no home: a grader reading the server's files sees none of them
    snoop = {"type": "python", "source": "def grade(sample, item):\n    import os\n"
             "    return float(os.path.exists(os.path.expanduser('~/.tuneloop')) or 'TUNELOOP_HOME' in os.environ)\n"}
    assert client.fine_tuning.alpha.graders.run(grader=snoop, model_sample="x").reward == 0.0
    boom = {"type": "python", "source": "def grade(sample, item):\n    raise ValueError('boom')\n"}
    r = client.fine_tuning.alpha.graders.run(grader=boom, model_sample="x")
    assert r.reward == 0.0 and r.metadata.errors.python_grader_runtime_error
    assert "boom" in r.metadata.errors.python_grader_runtime_error_details


def test_multi_combines_named_graders(client):
    multi = {"type": "multi", "name": "combo", "graders": {"exact": EQ, "py": PY},
             "calculate_output": "0.5 * exact + 0.5 * py"}
    r = client.fine_tuning.alpha.graders.run(grader=multi, model_sample="paris!", item={"answer": "Paris"})
    _known(r)
    assert r.sub_rewards == {"exact": 0.0, "py": 1.0} and r.reward == pytest.approx(0.5)
    sim = {"type": "text_similarity", "name": "sim", "input": "{{ sample.output_text }}",
           "reference": "{{ item.answer }}", "evaluation_metric": "fuzzy_match"}
    r = client.fine_tuning.alpha.graders.run(grader=sim, model_sample="Pariss", item={"answer": "Paris"})
    assert 0.5 < r.reward < 1.0


def test_validate_echoes_the_grader_and_refuses_bad_ones_with_their_param(client):
    v = client.fine_tuning.alpha.graders.validate(grader=EQ)
    _known(v)
    assert v.grader.type == "string_check" and v.grader.operation == "eq"
    assert client.fine_tuning.alpha.graders.validate(grader=PY).grader.source == PY["source"]
    cases = [({**EQ, "operation": "startswith"}, "grader"),
             ({"type": "label_model"}, "grader"),
             ({"type": "python", "source": "def grade(sample, item):\n    return (\n"}, "grader.source"),
             ({"type": "multi", "graders": {"a": {"type": "python"}}, "calculate_output": "a"}, "grader.graders.a"),
             ({"type": "multi", "graders": {"a": EQ}, "calculate_output": "a + b"}, "grader")]
    for grader, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.fine_tuning.alpha.graders.validate(grader=grader)
        assert e.value.body["param"] == param, (grader, e.value.body)
        assert e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.alpha.graders.run(grader=EQ, model_sample="x", item=["not", "a", "row"])
    assert e.value.body["param"] == "item"


def test_graders_need_a_key(client):
    bad = client.with_options(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as e:
        bad.fine_tuning.alpha.graders.validate(grader=EQ)
    assert set(e.value.body) == {"message", "type", "param", "code"}
