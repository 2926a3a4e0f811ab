"""Conformance with restic's own ``forget`` test cases (``../shared/peer/restic-forget/vectors.json``).

Each case goes through the same path as ``retention backups rotate``: a
policy file with one ``[[backups]]`` set (``anchor = "latest"``), a store
holding one backup per restic snapshot, a real rotation, and then the kept
multiset (and what is left in the store) compared with restic's.  The 36
non-empty cases without tags use a local directory; the 3 tag cases an S3
bucket whose objects carry the snapshots' tags as object tags.  Case 0, the
empty policy, is refused as a configuration error and touches nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from retention import commands
from retention.errors import ConfigError
from tests.s3kit import keys, moto_endpoint, put, s3, s3_bucket  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / ".." / "shared" / "peer" / "restic-forget" / "vectors.json"
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)      # anchor = "latest": the clock must not matter


def _load() -> dict | None:
    try:
        return json.loads(VECTORS.read_text())
    except FileNotFoundError:
        return None


DATA = _load()
CASES = DATA["cases"] if DATA else []
PLAIN = [c["case"] for c in CASES if c["policy"] and "tags" not in c["policy"]]
TAGGED = [c["case"] for c in CASES if "tags" in c["policy"]]


def test_the_vectors_are_there():
    if DATA is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{VECTORS} is missing")
        pytest.skip(f"{VECTORS} is missing")
    assert len(DATA["snapshots"]) == 103
    assert len(PLAIN) == 36 and len(TAGGED) == 3
    assert CASES[0]["policy"] == {}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _file_name(snapshot: dict) -> str:
    stamp = _when(snapshot["time"]).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"snap-{stamp}-{snapshot['id']}.dump"


def _duration(spec: dict) -> str:
    units = (("years", "y"), ("months", "mo"), ("days", "d"), ("hours", "h"))
    return "".join(f"{spec[k]}{u}" for k, u in units if spec.get(k))


def _policy_file(tmp_path: Path, policy: dict, location: str) -> Path:
    lines = ["version = 1", "[settings]", 'timezone = "UTC"', "[databases]", "", "[[backups]]",
             'name = "restic"', f'location = "{location}"', 'pattern = "snap-{timestamp}-*.dump"',
             'anchor = "latest"']
    for key, value in policy.items():
        if key == "tags":
            lines.append(f"keep_tags = {json.dumps(value)}")
        elif isinstance(value, dict):
            lines.append(f'keep_{key} = "{_duration(value)}"')
        else:
            lines.append(f"keep_{key} = {value}")
    path = tmp_path / "policies.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _expected(case: dict, with_tags: bool) -> Counter:
    return Counter((_when(k["time"]), tuple(sorted(k["tags"])) if with_tags else ()) for k in case["keep"])


@pytest.mark.parametrize("number", PLAIN)
def test_restic_case_on_a_local_directory(number, tmp_path):
    case = CASES[number]
    store = tmp_path / "store"
    store.mkdir()
    by_name = {}
    for snap in DATA["snapshots"]:
        (store / _file_name(snap)).write_bytes(b"dump")
        by_name[_file_name(snap)] = snap
    report = commands.backups_rotate(str(_policy_file(tmp_path, case["policy"], str(store))), now=NOW)
    assert report.exit_code == 0
    (result,) = report.to_dict()["backups"]
    kept = Counter((_when(k["time"]), ()) for k in result["keep"])
    assert kept == _expected(case, with_tags=False)
    assert all(k["reasons"] for k in result["keep"])
    # the rotation really removed the others, and only them
    left = sorted(p.name for p in store.iterdir())
    assert left == sorted(k["name"] for k in result["keep"])
    assert len(result["keep"]) + len(result["remove"]) == 103


@pytest.mark.parametrize("number", TAGGED)
def test_restic_tag_case_on_s3_object_tags(number, tmp_path, s3, s3_bucket):
    case = CASES[number]
    for snap in DATA["snapshots"]:
        put(s3, s3_bucket, "nightly/" + _file_name(snap), {tag: "" for tag in snap["tags"]})
    path = _policy_file(tmp_path, case["policy"], f"s3://{s3_bucket}/nightly")
    report = commands.backups_rotate(str(path), now=NOW)
    assert report.exit_code == 0
    (result,) = report.to_dict()["backups"]
    tags = {_file_name(s): tuple(sorted(s["tags"])) for s in DATA["snapshots"]}
    kept = Counter((_when(k["time"]), tags[k["name"]]) for k in result["keep"])
    assert kept == _expected(case, with_tags=True)
    assert all(r.startswith("has tags [") for k in result["keep"] for r in k["reasons"])
    assert keys(s3, s3_bucket) == sorted("nightly/" + k["name"] for k in result["keep"])


def test_restic_case_0_the_empty_policy_is_a_configuration_error(tmp_path):
    if DATA is None:
        pytest.skip("vectors missing (see test_the_vectors_are_there)")
    store = tmp_path / "store"
    store.mkdir()
    for snap in DATA["snapshots"]:
        (store / _file_name(snap)).write_bytes(b"dump")
    path = _policy_file(tmp_path, CASES[0]["policy"], str(store))
    with pytest.raises(ConfigError) as e:
        commands.backups_rotate(str(path), now=NOW)
    assert e.value.exit_code == 2
    assert "backup 'restic'" in str(e.value) and "key 'keep_*'" in str(e.value)
    assert len(list(store.iterdir())) == 103
