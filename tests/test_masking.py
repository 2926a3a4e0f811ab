"""Credentials are masked wherever text leaves the job: logs, error messages, reports.

Beyond the password of ``user:password@host``, database URLs and connection
strings carry secrets under other keys: ``sslpassword`` (the passphrase of the
client key), ``password`` in a query string (how several drivers take it),
``PWD`` inside a percent-encoded ODBC string, ``*_passphrase``, ``*_secret``,
``*_token``.  File paths (``sslkey``, ``passfile``) are not secrets.
"""

from __future__ import annotations

import io
import json

import pytest

from retention.errors import RetentionError
import structlog

from retention import commands
from retention.errors import ConfigError
from retention.log import configure_logging, mask_text


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("text, secret", [
    ("postgresql+psycopg://app@db/shop?sslmode=verify-full&sslpassword=Kp4ss-phrase&sslkey=/k.pem", "Kp4ss-phrase"),
    ("postgresql+psycopg://app@db/shop?sslpassword=Kp4ss%26phrase", "Kp4ss"),
    ("host=db sslpassword='two words' dbname=shop", "two words"),
    ("mysql+pymysql://app@db/shop?password=Qs3cret&charset=utf8mb4", "Qs3cret"),
    ("mysql+mysqldb://app@db/shop?passwd=Qs3cret", "Qs3cret"),
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC%7D%3BSERVER%3Ddb%3BUID%3Dapp%3BPWD%3DQs3cret%3BDATABASE%3Dx",
     "Qs3cret"),
    ("Driver={ODBC};Server=db;Uid=app;Pwd=Qs3cret;Database=x", "Qs3cret"),
    ("snowflake://app@acct/db?private_key_passphrase=Qs3cret&warehouse=w", "Qs3cret"),
    ("https://api.example/erase?client_secret=Qs3cret&x=1", "Qs3cret"),
    ("options {'sslpassword': 'Qs3cret', 'host': 'db'}", "Qs3cret"),
    ('{"password": "Qs3cret"}', "Qs3cret"),
])
def test_every_secret_bearing_key_is_masked(text, secret):
    masked = mask_text(text)
    assert secret not in masked and "***" in masked


def test_paths_and_ordinary_words_stay_readable():
    text = "postgresql://app@db/shop?sslkey=/etc/k.pem&passfile=/etc/pgpass&sslmode=require rule=passwords-kept"
    assert mask_text(text) == text


def test_sslpassword_in_a_url_never_reaches_the_log():
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    url = "postgresql+psycopg://app@db/shop?sslpassword=Kp4ss-phrase"
    structlog.get_logger().info("connect", url=url, options={"sslpassword": "Kp4ss-phrase"},
                                sslpassword="Kp4ss-phrase")
    assert "Kp4ss-phrase" not in stream.getvalue()
    line = json.loads(stream.getvalue())
    assert line["url"].endswith("sslpassword=***") and line["sslpassword"] == "***"


def test_a_connection_error_never_shows_the_sslpassword(tmp_path):
    path = tmp_path / "policies.toml"
    path.write_text('version = 1\n[databases.shop]\nurl = "${DB_URL}"\n')
    url = "postgresql+psycopg://app@127.0.0.1:1/shop?sslpassword=Kp4ss-phrase&sslmode=disable"
    # an unreachable database is a runtime failure (exit 1), not an invalid file
    with pytest.raises(RetentionError) as e:
        commands.check(str(path), env={"DB_URL": url})
    assert e.value.exit_code == 1 and "Kp4ss-phrase" not in str(e.value) and "sslpassword=***" in str(e.value)
