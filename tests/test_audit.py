"""The audit log: every run leaves a hash chain that shows any tampering; keys of people are hashed."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from retention.audit import AuditUnavailable, entry_hash
from retention.report import render
from tests.runkit import audit_rows, invoke, state_url, with_state  # noqa: F401
from tests.shopkit import HASH_ENV, LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)

RESTRICT_CLOSED = """
[[rules]]
name = "closed-restrict"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "restrict"
restrict_column = "restricted_at"
max_fraction = 1.0
"""


def _logs(shop, n: int = 5) -> None:
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                          for i in range(1, n + 1)])


@pytest.fixture
def logged(sqlite_shop, state_url):
    """A shop whose audit log holds a dry run and a run (several batches)."""
    _logs(sqlite_shop)
    policy = with_state(sqlite_shop.policy(LOGS_PURGE, settings="batch_size = 2\nmax_batch_seconds = 1000"), state_url)
    sqlite_shop.run(policy, dry_run=True, now=NOW)
    report = sqlite_shop.run(policy, now=NOW)
    return policy, state_url, report


def _sql(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.exec_driver_sql(s)
    finally:
        engine.dispose()


def _verify(policy, head=None):
    return commands.audit_verify(policy, head=head, env=HASH_ENV)


def test_every_run_dry_or_not_is_recorded_with_its_mode_and_counts(sqlite_shop, state_url):
    _logs(sqlite_shop)
    policy = with_state(sqlite_shop.policy(LOGS_PURGE, settings="batch_size = 2\nmax_batch_seconds = 1000"), state_url)
    sqlite_shop.run(policy, dry_run=True, now=NOW)
    sqlite_shop.run(policy, simulate=True, now=NOW)
    report = sqlite_shop.run(policy, now=NOW)
    rows = audit_rows(state_url)
    started = [json.loads(r["body"]) for r in rows if r["kind"] == "run-started"]
    assert [b["mode"] for b in started] == ["dry-run", "simulation", "run"]
    assert {b["policy_sha256"] for b in started} == {report.config_sha256}
    assert all(b["user"] and b["host"] for b in started)
    ended = [json.loads(r["body"]) for r in rows if r["kind"] == "run-ended"]
    assert [b["outcome"] for b in ended] == ["ok", "ok", "ok"]
    rule = [json.loads(r["body"]) for r in rows if r["kind"] == "rule-ended"][-1]
    assert (rule["due"], rule["touched"], rule["status"]) == (5, 5, "ok")
    # the run's batches: an intent before each commit, the outcome after, key ranges in the clear (logs)
    batches = [(r["kind"], json.loads(r["body"])) for r in rows if r["kind"].startswith("batch-")]
    assert [k for k, _ in batches] == ["batch-intent", "batch-committed"] * 3
    # (batches of exactly 2 rows: max_batch_seconds never shrinks them here) the first range ends at
    # the second due key; the others are computed, two keys each
    assert [b["keys"]["hi"] for k, b in batches if k == "batch-committed"] == [2, 4, 6]
    assert sum(b["touched"] for k, b in batches if k == "batch-committed") == 5
    assert _verify(policy).ok


def test_the_report_carries_the_chain_head(logged):
    policy, url, report = logged
    last = audit_rows(url)[-1]
    assert (report.audit_seq, report.audit_head) == (last["seq"], last["hash"])
    assert json.loads(render(report, "json"))["audit"] == {"seq": last["seq"], "head": last["hash"]}
    assert _verify(policy, head=report.audit_head).ok


def test_an_intact_log_verifies(logged):
    policy, _url, report = logged
    proc = invoke("audit", "verify", "-c", policy, "--head", report.audit_head)
    assert proc.returncode == 0, proc.stderr
    assert f"head {report.audit_head}" in proc.stdout


def test_an_edited_entry_is_named(logged):
    policy, url, _ = logged
    _sql(url, "UPDATE retention_audit SET body = replace(body, '\"touched\":2', '\"touched\":1') WHERE seq = 8")
    verdict = _verify(policy)
    assert (verdict.ok, verdict.bad_seq, verdict.checked) == (False, 8, 7)
    assert "edited" in verdict.reason
    proc = invoke("audit", "verify", "-c", policy)
    assert proc.returncode == 1
    assert "entry 8" in proc.stderr


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link(logged):
    policy, url, _ = logged
    row = audit_rows(url)[7]
    body = json.loads(row["body"])
    body["touched"] = 1
    forged = entry_hash(row["seq"], row["run_id"], row["kind"], row["at"], body, row["prev_hash"])
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    _sql(url, f"UPDATE retention_audit SET body = '{text}', hash = '{forged}' WHERE seq = 8")
    verdict = _verify(policy)
    assert (verdict.ok, verdict.bad_seq) == (False, 9)


def test_a_deleted_entry_is_named(logged):
    policy, url, _ = logged
    _sql(url, "DELETE FROM retention_audit WHERE seq = 5")
    verdict = _verify(policy)
    assert (verdict.ok, verdict.bad_seq) == (False, 6)
    # renumbering the rest does not hide it
    _sql(url, "UPDATE retention_audit SET seq = seq + 1000 WHERE seq > 5",
         "UPDATE retention_audit SET seq = seq - 1001 WHERE seq > 1000")
    verdict = _verify(policy)
    assert (verdict.ok, verdict.bad_seq) == (False, 5)
    assert "deleted, inserted or moved" in verdict.reason


def test_an_inserted_entry_is_named(logged):
    policy, url, _ = logged
    rows = audit_rows(url)
    prev = rows[3]["hash"]
    body = {"rule": "logs-purge", "batch": 9, "touched": 0}
    at = rows[3]["at"]
    forged = entry_hash(5, rows[3]["run_id"], "batch-committed", at, body, prev)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    _sql(url, "UPDATE retention_audit SET seq = seq + 1000 WHERE seq >= 5",
         "UPDATE retention_audit SET seq = seq - 999 WHERE seq > 1000",
         f"INSERT INTO retention_audit (seq, run_id, kind, at, body, prev_hash, hash) VALUES "
         f"(5, '{rows[3]['run_id']}', 'batch-committed', '{at}', '{text}', '{prev}', '{forged}')")
    verdict = _verify(policy)
    assert (verdict.ok, verdict.bad_seq) == (False, 6)


def test_reordered_entries_are_named(logged):
    policy, url, _ = logged
    _sql(url, "UPDATE retention_audit SET seq = 1000 WHERE seq = 6",
         "UPDATE retention_audit SET seq = 6 WHERE seq = 7",
         "UPDATE retention_audit SET seq = 7 WHERE seq = 1000")
    verdict = _verify(policy)
    assert (verdict.ok, verdict.bad_seq) == (False, 6)


def test_a_cut_off_tail_is_caught_against_a_reported_head(logged):
    policy, url, report = logged
    last = audit_rows(url)[-1]["seq"]
    _sql(url, f"DELETE FROM retention_audit WHERE seq >= {last - 1}")
    assert _verify(policy).ok            # what is left is a valid chain...
    verdict = _verify(policy, head=report.audit_head)
    assert not verdict.ok and "not in the log" in verdict.reason     # ...but not the one the report saw
    assert invoke("audit", "verify", "-c", policy, "--head", report.audit_head).returncode == 1


def test_keys_of_people_are_keyed_hashes(sqlite_shop, state_url):
    for i in (101, 102):
        sqlite_shop.user(i, closed_at=datetime(2026, 1, 1))
    policy = with_state(sqlite_shop.policy(RESTRICT_CLOSED), state_url)
    sqlite_shop.run(policy, now=NOW)
    batches = [json.loads(r["body"]) for r in audit_rows(state_url) if r["kind"] == "batch-committed"]
    assert batches and all(b["keys"]["form"] == "hmac-sha256" for b in batches)
    assert batches[0]["keys"]["hi"].startswith("hmac:")
    text = " ".join(r["body"] for r in audit_rows(state_url))
    assert "102" not in text.replace(batches[0]["keys"]["hi"], "")


def test_without_a_key_the_keys_of_people_are_withheld(sqlite_shop, state_url):
    sqlite_shop.user(101, closed_at=datetime(2026, 1, 1))
    policy = with_state(sqlite_shop.policy(RESTRICT_CLOSED), state_url)
    commands.run(policy, now=NOW, env={})
    batch = next(json.loads(r["body"]) for r in audit_rows(state_url) if r["kind"] == "batch-committed")
    assert batch["keys"]["lo"] is None and batch["keys"]["hi"] is None
    assert batch["keys"]["form"].startswith("withheld")


_REFUSE = {
    "sqlite": ["CREATE TRIGGER refuse BEFORE INSERT ON retention_audit WHEN (SELECT count(*) FROM retention_audit) "
               ">= {n} BEGIN SELECT RAISE(ABORT, 'audit refused'); END"],
    "postgresql": ["CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "IF (SELECT count(*) FROM retention_audit) >= {n} THEN RAISE EXCEPTION 'audit refused'; END IF; "
                   "RETURN NEW; END $$",
                   "CREATE TRIGGER refuse BEFORE INSERT ON retention_audit FOR EACH ROW EXECUTE FUNCTION refuse()"],
}


def _refuse_after(url: str, policy: str, n: int) -> None:
    commands.state_upgrade(policy, env=HASH_ENV)
    _sql(url, *(s.format(n=n) for s in _REFUSE[sa.make_url(url).get_backend_name()]))


def test_no_audit_entry_no_run(sqlite_shop, state_url):
    _logs(sqlite_shop)
    policy = with_state(sqlite_shop.policy(LOGS_PURGE), state_url)
    _refuse_after(state_url, policy, 0)
    before = sqlite_shop.dump()
    with pytest.raises(AuditUnavailable, match="cannot write the audit log"):
        sqlite_shop.run(policy, now=NOW)
    assert sqlite_shop.dump() == before
    proc = invoke("run", "-c", policy, "--now", NOW.isoformat())
    assert proc.returncode == 1 and "audit" in proc.stderr
    assert sqlite_shop.dump() == before


def test_a_batch_whose_intent_cannot_be_written_is_rolled_back(sqlite_shop, state_url):
    _logs(sqlite_shop)
    policy = with_state(sqlite_shop.policy(LOGS_PURGE, settings="batch_size = 2\nmax_batch_seconds = 1000"), state_url)
    # run-started, batch 1 intent and outcome are written; batch 2's intent is refused
    _refuse_after(state_url, policy, 3)
    report = sqlite_shop.run(policy, now=NOW)
    assert report.exit_code == 1
    rule = report.rules[0]
    assert rule.status == "failed" and rule.touch == 2
    assert sqlite_shop.ids("logs") == [3, 4, 5]       # batch 1 committed, batch 2 rolled back
    assert [r["kind"] for r in audit_rows(state_url)] == ["run-started", "batch-intent", "batch-committed"]


def test_audit_show_lists_runs_and_entries(logged):
    policy, _url, report = logged
    proc = invoke("audit", "show", "-c", policy, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    runs = {r["run_id"]: r for r in doc["runs"]}
    assert runs[report.run_id]["mode"] == "run" and runs[report.run_id]["outcome"] == "ok"
    assert runs[report.run_id]["batches"] == 3
    only = json.loads(invoke("audit", "show", "-c", policy, "--run", report.run_id, "--format", "json").stdout)
    assert {e["run_id"] for e in only["entries"]} == {report.run_id}
    later = json.loads(invoke("audit", "show", "-c", policy, "--since", "2999-01-01", "--format", "json").stdout)
    assert later["entries"] == []
    text = invoke("audit", "show", "-c", policy).stdout
    assert f"run {report.run_id}  run" in text and "outcome ok" in text
