"""An S3 service for tests: moto's in-process server on 127.0.0.1, reached through boto3.

``s3`` (a fixture) points boto3 at the server through the environment, as an
operator would point it at an S3-compatible service, and yields a client;
``s3_bucket`` gives each test a fresh bucket.  Under ``CI=true`` a missing
moto or boto3 is a failure, never a skip.
"""

from __future__ import annotations

import itertools
import os

import pytest

_buckets = itertools.count()


def _need(module: str):
    if os.environ.get("CI") == "true":
        return __import__(module, fromlist=["_"])
    return pytest.importorskip(module)


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's threaded server on a free loopback port, for the whole session."""
    server_mod = _need("moto.server")
    _need("boto3")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch, tmp_path):
    """A boto3 S3 client on the moto server; the environment points every new client there too."""
    import boto3
    for key, value in {"AWS_ENDPOINT_URL_S3": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return boto3.client("s3")


@pytest.fixture
def s3_bucket(s3) -> str:
    """A new, empty bucket."""
    name = f"backups-{os.getpid()}-{next(_buckets)}"
    s3.create_bucket(Bucket=name)
    return name


def put(s3, bucket: str, key: str, tags: dict[str, str] | None = None) -> None:
    """Upload a small object, with object tags."""
    s3.put_object(Bucket=bucket, Key=key, Body=b"dump")
    if tags:
        s3.put_object_tagging(Bucket=bucket, Key=key,
                              Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    """Every key in the bucket under ``prefix``, sorted."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(out)
