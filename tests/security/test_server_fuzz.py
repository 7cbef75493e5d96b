"""Fuzz every POST route of the live app from its own OpenAPI schema: valid-shaped bodies, then
the same with one value made hostile (wrong type, huge number, NaN, lone surrogate, deep nesting,
a long string) or one field dropped, and raw bodies that are not JSON objects. No answer may be a
500, every error is an OpenAI error body, and the server still answers /health afterwards.

The app runs in-process on the built-in tiny model (loaded once), with small caps so generation
stays cheap: bounded by max_examples, derandomized, a few seconds a route on 2 cores.

    pytest tests/security/test_server_fuzz.py
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BASE = "tuneloop/tiny-qwen3"
EXAMPLES = 150                    # per route and kind (valid-shaped, mutated, raw)
DEEP = "__deep_nesting__"         # replaced by raw nested JSON after dumping
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def app_client(models_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from tuneloop.models.builtin import ensure_builtin
    from tuneloop.serving.engine import BaseModel
    from tuneloop.serving.hf_engine import TransformersEngine
    from tuneloop.serving.limits import Limits
    from tuneloop.serving.server import create_app
    from tuneloop.serving.weights import WeightPolicy

    root = tmp_path_factory.mktemp("fuzz-root")
    (root / "empty").mkdir()
    engine = TransformersEngine(BaseModel(BASE, str(ensure_builtin(BASE, models_dir))), batch_window_ms=0)
    app = create_app(engine, weights=WeightPolicy(roots=(root.resolve(),)), default_max_tokens=4,
                     limits=Limits(max_request_bytes=64 * 1024, max_request_tokens=48))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.root = root
        yield client
    engine.close()


# ---- bodies from the schema --------------------------------------------------------------------
def from_schema(schema: dict, components: dict, hints: dict) -> st.SearchStrategy:
    """Values matching the subset of JSON Schema FastAPI emits ($ref, anyOf, enum, types, bounds);
    `hints` maps a property name to extra values worth trying (a real model name, real paths)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(components[name], components, hints))
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components, hints) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 24), 24))
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.integers(None if low is None else math.ceil(low), None if high is None else math.floor(high))
    if kind == "number":
        return st.floats(schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum"),
                         exclude_min="exclusiveMinimum" in schema, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, hints),
                        min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        field = {k: st.one_of(from_schema(v, components, hints), *([hints[k]] if k in hints else []))
                 for k, v in props.items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries({k: s for k, s in field.items() if k in required},
                                     optional={k: s for k, s in field.items() if k not in required})
    return JSON


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
SURROGATES = st.tuples(st.text(max_size=3), st.characters(categories=["Cs"]), st.text(max_size=3)).map("".join)
HOSTILE = st.one_of(
    st.integers(-(2**80), 2**80),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 0, -1, 1e308, -1e308, 1e-300, 5e-324,
                     float("inf"), float("-inf"), float("nan"), True, "", "0", "x" * 70_000, DEEP]),
    SURROGATES, JSON,
    st.lists(st.just({"type": "text", "text": "a"}), min_size=250, max_size=300),
)


def _places(value, at=()):
    """Every (path) inside a body where a value sits."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield at + (k,)
            yield from _places(v, at + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield at + (i,)
            yield from _places(v, at + (i,))


@st.composite
def mutated(draw, valid: st.SearchStrategy):
    body = draw(valid)
    places = list(_places(body))
    if not places:
        return draw(HOSTILE)
    path = draw(st.sampled_from(places))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]                        # a field missing
    else:
        parent[path[-1]] = draw(HOSTILE)            # a value of the wrong type or size
    return body


RAW = st.one_of(
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"1", b"true", b"{", b'{"model":', b"\xff\xfe{}", b"{}",
                     b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
                     b'{"model": "' + BASE.encode() + b'", "messages": [{"role": "user", "content": "\\ud800"}]}']),
    st.binary(max_size=64),
)


def encode(body) -> bytes:
    text = json.dumps(body)  # ensure_ascii: lone surrogates travel as "\ud800" escapes; NaN as NaN
    depth = 900 if len(text) % 2 else 5000
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


def check(client, route: str, raw: bytes, seen: Counter) -> None:
    r = client.post(route, content=raw, headers={"content-type": "application/json"})
    seen[r.status_code] += 1
    assert r.status_code < 500, (route, raw[:300], r.text[:500])
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        assert '"server_error"' not in r.text, r.text[:500]


def post_routes(client) -> tuple[dict[str, dict], dict[str, dict]]:
    schema = client.get("/openapi.json").json()
    routes = {}
    for path, ops in schema["paths"].items():
        if "post" in ops:
            body = ops["post"]["requestBody"]["content"]["application/json"]["schema"]
            routes[path] = body
    return routes, schema["components"]["schemas"]


def test_the_schema_lists_every_post_route(app_client):
    routes, _ = post_routes(app_client)
    assert set(routes) >= {"/v1/chat/completions", "/v1/completions", "/v1/load_lora_adapter",
                           "/v1/unload_lora_adapter", "/v1/load_inference_component",
                           "/v1/unload_inference_component", "/v1/replace_base_model"}


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions", "/v1/load_lora_adapter",
                                   "/v1/unload_lora_adapter", "/v1/load_inference_component",
                                   "/v1/unload_inference_component", "/v1/replace_base_model"])
def test_no_body_makes_a_route_answer_500(app_client, route):
    routes, components = post_routes(app_client)
    root = app_client.root
    hints = {"model": st.just(BASE), "lora_path": st.sampled_from([str(root), str(root / "empty"), "/etc", "../..",
                                                                   "https://169.254.169.254/x", "s3://b/a"]),
             "stream": st.booleans(), "n": st.integers(1, 3), "max_tokens": st.integers(1, 8)}
    hints["model_path"] = hints["lora_path"]
    valid = from_schema(routes[route], components, hints)
    seen = {"valid": Counter(), "hostile": Counter(), "raw": Counter()}

    @FUZZ
    @given(valid)
    def valid_shaped(body):
        check(app_client, route, encode(body), seen["valid"])

    @FUZZ
    @given(mutated(valid))
    def hostile(body):
        check(app_client, route, encode(body), seen["hostile"])

    @FUZZ
    @given(RAW)
    def raw(body):
        check(app_client, route, body, seen["raw"])

    valid_shaped()
    hostile()
    raw()
    print(route, {k: dict(v) for k, v in seen.items()})
    if route.endswith("completions"):  # the valid-shaped bodies reached generation, not only validation
        assert seen["valid"][200] > 0, seen
    assert app_client.get("/health").json()["status"] == "ok"


def test_the_server_still_answers_after_the_fuzz(app_client):
    assert app_client.get("/health").status_code == 200
    r = app_client.post("/v1/chat/completions", json={"model": BASE, "max_tokens": 3, "temperature": 0,
                                                      "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
