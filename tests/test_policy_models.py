"""A policy file is validated by the models of the sections it has: the same result, the same errors.

Building pydantic's validators is a fixed cost of every process start, so the
validator of a section the file does not have is never built; what the file
says is checked exactly as the whole PolicyFile model checks it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from retention.config import PolicyFile, _validate

ROOT = Path(__file__).resolve().parent.parent

VALID = [
    tomllib.loads((ROOT / "policies.toml").read_text()),     # every section
    {"version": 1, "databases": {"shop": {"url": "sqlite://"}}},
    {"version": 1, "databases": {"shop": {"url": "sqlite://"}},
     "rules": [{"name": "logs", "table": "shop.logs", "clock": "created_at", "after": "30d", "action": "delete",
                "where": {"status": ["a", "b"], "ip": {"is_null": False}}}],
     "settings": {"timezone": "Europe/Paris", "batch_size": 100}},
]

INVALID = [
    {},
    {"version": 2, "databases": {"a": {"url": 1}}, "rules": [{"name": "Bad", "table": "a.t"}], "holds": [{}],
     "bogus": 1},
    {"version": 1, "databases": {}, "backups": [{"name": "b", "location": "x", "keep_last": -5}],
     "settings": {"timezone": "Mars/Base", "lock_timeout": "2mo"}},
    {"version": 1, "databases": {"a": {"url": "sqlite://"}}, "rules": "not a list",
     "tables": {"a.t": {"partitions": "shred"}}, "recipients": [{"name": "r", "url": "ftp://x"}]},
    {"version": 1, "databases": {"a": {"url": "sqlite://", "url_file": "/x"}},
     "requests": [{"name": "r", "table": "state.requests", "subject": "c", "subject_column": "id", "keep": ["x"]}],
     "floors": [{"name": "f", "table": "a.t", "clock": "c", "keep": 3}], "subjects": {"c": {"key": "id"}}},
]


@pytest.mark.parametrize("data", VALID, ids=["example", "minimal", "rules-and-settings"])
def test_a_valid_file_gives_the_model_the_whole_policy_model_gives(data):
    got, want = _validate(data), PolicyFile.model_validate(data)
    assert isinstance(got, PolicyFile)
    assert got == want
    assert got.model_fields_set == want.model_fields_set


def _errors(call) -> list[tuple]:
    with pytest.raises(ValidationError) as caught:
        call()
    return [(e["type"], e["loc"], e["msg"]) for e in caught.value.errors()]


@pytest.mark.parametrize("data", INVALID, ids=["empty", "many-sections", "settings-backups", "types", "requests"])
def test_an_invalid_file_gets_the_errors_the_whole_policy_model_gives_in_its_order(data):
    assert _errors(lambda: _validate(data)) == _errors(lambda: PolicyFile.model_validate(data))


_BUILT = textwrap.dedent("""
    import json, sys
    from retention import config
    config.load_config(sys.argv[1], env={})
    models = [config.PolicyFile, config.BackupConfig, config.RecipientConfig, config.RequestConfig,
              config.HoldConfig, config.FloorConfig, config.TableConfig]
    print(json.dumps([m.__name__ for m in models if m.__pydantic_complete__]))
    """)


def test_a_process_builds_no_validator_for_the_sections_its_file_does_not_have(tmp_path):
    policy = tmp_path / "policies.toml"
    policy.write_text(textwrap.dedent(f"""\
        version = 1
        [databases.shop]
        url = "sqlite:///{tmp_path / 'shop.db'}"
        [[rules]]
        name = "logs"
        table = "shop.logs"
        clock = "created_at"
        after = "30d"
        action = "delete"
        """))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _BUILT, str(policy)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == []
