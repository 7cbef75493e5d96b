"""s3:// through s3fs against a real S3-compatible server (moto's server mode on 127.0.0.1),
with the usual AWS environment variables: a file, a prefix with splits, ?file=, divergence."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

PC = {"prompt": "Q", "completion": "A"}


@pytest.fixture(scope="module")
def s3():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="data")
    body = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
    client.put_object(Bucket="data", Key="sft/train.jsonl", Body=body([PC, {"prompt": "Q2", "completion": "A2"}]))
    client.put_object(Bucket="data", Key="sft/test.jsonl", Body=body([PC]))
    client.put_object(Bucket="data", Key="mixed/a_sft.jsonl", Body=body([PC]))
    client.put_object(Bucket="data", Key="mixed/b_pref.jsonl", Body=body([{"prompt": "p", "chosen": "c", "rejected": "r"}]))
    yield endpoint
    server.stop()


def run(s3, tmp_path, source, technique="sft"):
    env = {"AWS_ENDPOINT_URL": s3, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    return cli("datasets", "stage", "--technique", technique, "--dataset", source, "--output",
               str(tmp_path / "out.jsonl"), "--json", env=env, timeout=120)


def test_s3_file_prefix_split_and_file_pattern(s3, tmp_path, home):
    r = run(s3, tmp_path, "s3://data/sft/train.jsonl")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 2
    r = run(s3, tmp_path, "s3://data/sft")  # a prefix: its train split
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == ["s3://data/sft/train.jsonl"]
    r = run(s3, tmp_path, "s3://data/sft?file=test")
    assert json.loads(r.stdout)["rows"] == 1


def test_s3_divergence_and_missing_object(s3, tmp_path, home):
    r = run(s3, tmp_path, "s3://data/mixed")
    assert r.returncode == 1 and "❌ Schema divergence detected across files in s3://data/mixed." in r.stderr
    assert '--dataset "s3://data/mixed?file=*sft*"' in r.stderr
    r = run(s3, tmp_path, "s3://data/nope.jsonl")
    assert r.returncode == 1 and "Dataset not found: s3://data/nope.jsonl" in r.stderr and "Traceback" not in r.stderr
