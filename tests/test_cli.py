"""The ``retention`` command line: exit codes, report formats, options, streams.

Most tests drive the click application in-process (``CliRunner``, which keeps
stdout and stderr apart in click >= 8.2); the ones about what a pipe sees
(pure JSON on stdout, log lines on stderr, masked credentials) run the real
console script in a subprocess.  Every scenario runs on a real SQLite
database built by :mod:`tests.shopkit`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import Shop

NOW = "2026-06-15T12:00:00Z"
NOW_ISO = "2026-06-15T12:00:00+00:00"
HASH_KEY = "cli-test-key"
SCRIPT = Path(sys.executable).with_name("retention")

#: the report keys the README documents as the JSON contract (schema_version 1)
REPORT_KEYS = {"schema_version", "run_id", "mode", "dry_run", "now", "config", "rules", "totals", "exit_code"}
RULE_KEYS = {"rule", "action", "table", "due", "protected", "touch", "cascades", "oldest_clock",
             "forecast", "guard", "status", "error"}
TOTAL_KEYS = {"rules", "failed", "guard_tripped", "due", "protected", "touch", "cascaded"}

# Personal data the scenario holds; no report, log or error may print any of it.
PERSONAL = ["user1@example.com", "user2@example.com", "user3@example.com", "User 1", "User 2",
            "+15550000001", "+15550000002", "10.1.2.3", "203.0.113.77"]

POLICY = """
[[holds]]
name = "litigation"
table = "shop.legal_holds"
subject = "customer"
subject_column = "user_id"
active_where = { released_at = { is_null = true } }

[[rules]]
name = "logs-30d"
table = "shop.logs"
clock = "created_at"
after = "30d"
action = "delete"
basis = "logs kept 30 days"
max_fraction = 1.0

[[rules]]
name = "closed-anonymize"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "anonymize"
where = { status = "closed" }
columns.email = "hash"
columns.name = { strategy = "constant", value = "deleted user" }
columns.phone = { strategy = "mask", keep_last = 4 }
columns.last_ip = { strategy = "generalize", ipv4_prefix = 16 }
mark = "anonymized_at"
max_fraction = 1.0

[[rules]]
name = "closed-restrict"
table = "shop.users"
clock = "closed_at"
after = "0d"
action = "restrict"
where = { status = "closed" }
max_fraction = 1.0
"""
RULES = ["logs-30d", "closed-anonymize", "closed-restrict"]


@pytest.fixture(autouse=True)
def _clean_env_and_logging(monkeypatch):
    # The job configures structlog per invocation with the stream it sees; the
    # runner's stderr is gone after the test, so leave structlog as we found it.
    for var in ("RETENTION_CONFIG", "SHOP_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RETENTION_HASH_KEY", HASH_KEY)
    yield
    structlog.reset_defaults()


@pytest.fixture
def shop(tmp_path):
    s = Shop(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    # 1: closed long ago (anonymize + restrict due), 2: closed 5 days ago (restrict only),
    # 3: active and under a legal hold, 4: active
    s.user(1, status="closed", closed_at=datetime(2026, 1, 10), last_ip="10.1.2.3")
    s.user(2, status="closed", closed_at=datetime(2026, 6, 10))
    s.user(3)
    s.user(4, last_ip="203.0.113.77")
    s.insert("legal_holds", dict(id=1, user_id=3, released_at=None))
    s.insert("logs",
             dict(id=1, user_id=1, ip="10.1.2.3", created_at=datetime(2026, 1, 1)),
             dict(id=2, user_id=3, ip="10.1.2.3", created_at=datetime(2026, 2, 1)),   # held
             dict(id=3, user_id=4, ip="203.0.113.77", created_at=datetime(2026, 3, 1)),
             dict(id=4, user_id=None, ip="203.0.113.77", created_at=datetime(2026, 5, 16, 12, 0)),  # due at NOW exactly
             dict(id=5, user_id=4, ip="203.0.113.77", created_at=datetime(2026, 6, 1)))  # not due
    yield s
    s.close()


@pytest.fixture
def policy(shop):
    return shop.policy(POLICY)


def invoke(*args: str, env: dict | None = None):
    """Run the click app in-process; stdout and stderr stay separate."""
    try:
        runner = CliRunner(mix_stderr=False)          # click < 8.2
    except TypeError:
        runner = CliRunner()                          # click >= 8.2 separates them always
    return runner.invoke(cli, list(args), env=env, prog_name="retention", catch_exceptions=False)


def script(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script, as an operator or a cron job would."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "retention"]
    full_env = {**os.environ, **(env or {})}     # the autouse fixture removed RETENTION_CONFIG
    return subprocess.run(command + list(args), cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=120)


def numbers(report: dict) -> list[tuple]:
    """What a rule found or did, without run-specific fields (ids, timings, mode)."""
    return [(r["rule"], r["status"], r["due"], r["protected_total"], r["touch"], r["unchanged"],
             sorted((c["table"], c["action"], c["rows"]) for c in r["cascades"]),
             [(p["kind"], p["name"], p["rows"]) for p in r["protected"]]) for r in report["rules"]]


def outcome(report: dict, rule: str) -> dict:
    return next(r for r in report["rules"] if r["rule"] == rule)


def summary(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The text report's summary table: its header cells and each rule's cells."""
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("rule "))
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] and line.split()[0] in RULES
            and len(line.split()) >= 9}
    return header.split("  "), rows


# --- exit codes ----------------------------------------------------------------------

def test_exit_0_on_success_with_the_report_on_stdout_and_nothing_changed(shop, policy):
    before = shop.dump()
    result = invoke("-c", policy, "--now", NOW, "plan")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("RETENTION DRY RUN")
    for rule in RULES:
        assert rule in result.stdout
    assert "exit 0: success" in result.stdout
    assert "RETENTION" not in result.stderr          # the report is not duplicated on stderr
    assert shop.dump() == before


def test_exit_1_when_a_rule_fails_in_the_database_and_the_others_still_run(shop):
    # the users table's CHECK constraint rejects the constant: the rule fails in the database
    policy = shop.policy(POLICY.replace('value = "deleted user"', 'value = "nobody"'))
    users_before = shop.rows("users")
    result = invoke("-c", policy, "--now", NOW, "run", "--format", "json")
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["exit_code"] == 1 and report["totals"]["failed"] == 1
    broken = outcome(report, "closed-anonymize")
    assert broken["status"] == "failed" and broken["touch"] == 0
    assert "check constraint" in broken["error"].lower()
    assert outcome(report, "logs-30d")["status"] == "ok" and outcome(report, "logs-30d")["touch"] == 3
    assert outcome(report, "closed-restrict")["touch"] == 2
    assert shop.ids("logs") == [2, 5]
    # the failed rule changed nothing it was meant to: names and e-mails are intact
    after = {u["id"]: (u["name"], u["email"]) for u in shop.rows("users")}
    assert after == {u["id"]: (u["name"], u["email"]) for u in users_before}
    text = invoke("-c", policy, "--now", NOW, "plan")
    assert text.exit_code == 0                       # a dry run does not write, so nothing fails


def test_exit_2_for_an_invalid_policy_file_names_file_and_key_and_touches_nothing(shop):
    policy = shop.policy(POLICY.replace('after = "30d"\naction = "delete"', 'after = "3m"\naction = "delete"'))
    before = shop.dump()
    for verb in ("check", "plan", "run"):
        result = invoke("-c", policy, verb)
        assert result.exit_code == 2, (verb, result.stdout, result.stderr)
        assert result.stdout == ""
        assert policy in result.stderr and "logs-30d" in result.stderr and "'after'" in result.stderr
        assert "3mo" in result.stderr                # the message says how to fix it
    assert shop.dump() == before


def test_exit_2_for_a_policy_with_an_unknown_key(shop):
    policy = shop.policy(POLICY + '\n[settings2]\nx = 1\n')
    result = invoke("-c", policy, "plan")
    assert result.exit_code == 2 and "settings2" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["plan", "--frobnicate"], "No such option"),
    (["--frobnicate", "plan"], "No such option"),
    (["plan", "--now", "yesterday"], "--now"),
    (["--now", "2026-13-45", "plan"], "--now"),
    (["plan", "--format", "yaml"], "--format"),
    (["plan", "--log-format", "xml"], "--log-format"),
    (["frobnicate"], "No such command"),
], ids=["unknown-option", "unknown-option-before-verb", "bad-now", "bad-now-before-verb",
        "bad-format", "bad-log-format", "unknown-verb"])
def test_exit_2_for_an_invalid_command_line_and_nothing_changed(shop, policy, args, message):
    before = shop.dump()
    result = invoke("-c", policy, *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and result.stdout == ""
    assert shop.dump() == before


@pytest.mark.parametrize("verb", [["plan"], ["run"], ["run", "--dry-run"]])
def test_exit_2_when_only_names_an_unknown_rule_lists_the_rules(shop, policy, verb):
    before = shop.dump()
    result = invoke("-c", policy, "--now", NOW, *verb, "--only", "logs-30d", "--only", "logs-90d")
    assert result.exit_code == 2
    assert "logs-90d" in result.stderr
    for rule in RULES:                               # the message lists what exists
        assert rule in result.stderr
    assert result.stdout == ""
    assert shop.dump() == before                     # not even the valid rule ran


def test_exit_3_when_a_guard_trips_nothing_touched_and_allow_large_gives_0(shop):
    policy = shop.policy(POLICY.replace('basis = "logs kept 30 days"\nmax_fraction = 1.0',
                                        'basis = "logs kept 30 days"\nmax_rows = 2'))
    before = shop.dump()
    for verb in (["plan"], ["run"]):
        result = invoke("-c", policy, "--now", NOW, *verb, "--format", "json", "--only", "logs-30d")
        assert result.exit_code == 3, result.stderr
        rule = json.loads(result.stdout)["rules"][0]
        assert (rule["status"], rule["touch"], rule["guard"]["state"], rule["guard"]["rows"]) == \
            ("guard_tripped", 0, "tripped", 3)
    assert shop.dump() == before
    text = invoke("-c", policy, "--now", NOW, "plan", "--only", "logs-30d")
    assert text.exit_code == 3 and "--allow-large" in text.stdout and "GUARD TRIPPED" in text.stdout

    dry = invoke("-c", policy, "--now", NOW, "plan", "--allow-large", "--format", "json")
    assert dry.exit_code == 0
    assert outcome(json.loads(dry.stdout), "logs-30d")["guard"]["state"] == "allowed"
    assert shop.dump() == before
    done = invoke("-c", policy, "--now", NOW, "run", "--allow-large", "--format", "json", "--only", "logs-30d")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["rules"][0]["touch"] == 3
    assert shop.ids("logs") == [2, 5]


# --- the JSON report ------------------------------------------------------------------

def test_json_report_has_the_documented_schema(shop, policy):
    result = invoke("-c", policy, "--now", NOW, "plan", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert REPORT_KEYS <= set(report)
    assert report["schema_version"] == 1
    assert (report["mode"], report["dry_run"], report["exit_code"]) == ("dry-run", True, 0)
    assert report["now"] == NOW_ISO
    assert isinstance(report["run_id"], str) and report["run_id"]
    assert report["config"] == {"path": policy, "sha256": hashlib.sha256(Path(policy).read_bytes()).hexdigest()}
    assert [r["rule"] for r in report["rules"]] == RULES
    for r in report["rules"]:
        assert RULE_KEYS <= set(r), r["rule"]
        assert r["status"] == "ok" and r["error"] is None
        assert set(r["forecast"]) == {"7d", "30d", "90d", "365d"}
        assert {"state", "max_rows", "max_fraction", "table_rows", "rows"} <= set(r["guard"])
        assert r["due"] == r["protected_total"] + r["touch"] + r["unchanged"] + r["remaining"]
    logs = outcome(report, "logs-30d")
    assert (logs["action"], logs["table"], logs["due"], logs["touch"]) == ("delete", "shop.logs", 4, 3)
    assert logs["protected"] == [{"kind": "hold", "name": "litigation", "rows": 1}]
    assert logs["oldest_clock"].startswith("2026-01-01T00:00:00")
    assert logs["forecast"] == {"7d": 0, "30d": 1, "90d": 1, "365d": 1}   # log 5 becomes due on 07-01
    anon = outcome(report, "closed-anonymize")
    assert (anon["due"], anon["touch"]) == (1, 1)              # user 2 closed 5 days ago: not yet
    restrict = outcome(report, "closed-restrict")
    assert (restrict["due"], restrict["touch"]) == (2, 2)
    totals = report["totals"]
    assert TOTAL_KEYS <= set(totals)
    assert totals["rules"] == 3 and totals["due"] == sum(r["due"] for r in report["rules"])
    assert totals["touch"] == 3 + 1 + 2 and totals["protected"] == 1


def test_stdout_is_pure_json_and_json_logs_go_to_stderr(shop, policy):
    # a pipe is not a TTY: JSON logs by default; the report alone on stdout
    proc = script("-c", policy, "--now", NOW, "run", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)                           # the whole of stdout, nothing else
    assert report["mode"] == "run" and report["dry_run"] is False
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "the job logged nothing"
    assert all(isinstance(e, dict) and "event" in e and "level" in e for e in lines)
    assert all(e.get("run_id") == report["run_id"] for e in lines), lines
    rule_events = [e for e in lines if e["event"] == "rule"]
    assert [e["rule"] for e in rule_events] == RULES                # one summary line per rule
    for event in rule_events:
        r = outcome(report, event["rule"])
        assert (event["due"], event["touch"], event["status"]) == (r["due"], r["touch"], r["status"])
        assert "seconds" in event
    assert {"start", "finish"} <= {e["event"] for e in lines}
    combined = proc.stdout + proc.stderr
    for value in PERSONAL:
        assert value not in combined, value


@pytest.mark.parametrize("position", ["before", "after"])
def test_log_format_switches_the_stderr_format(shop, policy, position):
    def run(fmt):
        opt = ["--log-format", fmt]
        args = opt + ["plan"] if position == "before" else ["plan"] + opt
        proc = script("-c", policy, "--now", NOW, *args, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        json.loads(proc.stdout)
        return [line for line in proc.stderr.splitlines() if line.strip()]

    as_json = run("json")
    assert all(json.loads(line)["event"] for line in as_json)
    console = run("console")
    assert len(console) == len(as_json)
    for line in console:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    rule_lines = [line for line in console if "rule=" in line and " rule " in line]
    assert len(rule_lines) == len(RULES)
    for rule in RULES:
        assert any(f"rule={rule}" in line for line in rule_lines)
    assert all("run_id=" in line for line in console)


# --- other formats and outputs ----------------------------------------------------------

def test_markdown_report(shop, policy):
    result = invoke("-c", policy, "--now", NOW, "plan", "--format", "markdown")
    assert result.exit_code == 0, result.stderr
    md = result.stdout
    assert md.startswith("# Retention dry run\n")
    assert f"- **now:** {NOW_ISO}" in md
    header = next(line for line in md.splitlines() if line.startswith("| rule |"))
    assert "would touch" in header
    rows = {line.split("|")[1].strip(): line for line in md.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in RULES}
    assert set(rows) == set(RULES)
    cells = [c.strip() for c in rows["logs-30d"].split("|")[1:-1]]
    assert cells[:6] == ["logs-30d", "delete", "shop.logs", "4", "1", "3"]
    for rule in RULES:
        assert f"### `{rule}`" in md
    assert "**exit 0: success" in md


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_out_writes_the_report_to_a_file_and_not_to_stdout(shop, policy, tmp_path, fmt):
    target = tmp_path / f"report.{fmt}"
    result = invoke("-c", policy, "--now", NOW, "run", "--format", fmt, "--out", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    written = target.read_text()
    for rule in RULES:
        assert rule in written
    if fmt == "json":
        assert json.loads(written)["totals"]["touch"] == 6
    else:
        assert "touched" in written and "would touch" not in written
    assert shop.ids("logs") == [2, 5]                 # it was a real run


def test_an_unwritable_out_path_is_a_command_line_error_before_anything_runs(shop, policy, tmp_path):
    before = shop.dump()
    result = script("-c", policy, "--now", NOW, "run", "--out", str(tmp_path / "missing-dir" / "report.txt"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "--out" in result.stderr
    assert result.stdout == ""
    assert shop.dump() == before


def test_sql_shows_the_statements_with_bound_parameters(shop, policy):
    result = invoke("-c", policy, "--now", NOW, "plan", "--sql", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    by_rule = {r["rule"]: "\n".join(r["statements"]) for r in report["rules"]}
    assert "DELETE FROM logs" in by_rule["logs-30d"]
    assert "UPDATE users" in by_rule["closed-anonymize"]
    assert "UPDATE users SET restricted_at" in by_rule["closed-restrict"]
    everything = "\n".join(by_rule.values())
    assert "?" in everything                         # SQLite placeholders: values are bound
    assert "'closed'" in everything and "2026-05-16" in everything     # and shown with the statement
    for value in PERSONAL + [HASH_KEY]:
        assert value not in everything, value        # neither personal data nor the key
    text = invoke("-c", policy, "--now", NOW, "plan", "--sql")
    assert text.exit_code == 0
    assert "DELETE FROM logs" in text.stdout and "UPDATE users" in text.stdout
    plain = invoke("-c", policy, "--now", NOW, "plan")
    assert "DELETE FROM" not in plain.stdout         # only with --sql
    md = invoke("-c", policy, "--now", NOW, "plan", "--sql", "--format", "markdown")
    assert "```sql" in md.stdout and "DELETE FROM logs" in md.stdout


def test_sql_on_a_delete_rule_with_cascades(shop):
    shop.insert("addresses", dict(id=1, user_id=1, line1="1 Road"))
    policy = shop.policy(POLICY + """
    [tables."shop.addresses"]
    on_parent_delete = "delete"
    [tables."shop.logs"]
    on_parent_delete = "detach"
    [tables."shop.orders"]
    on_parent_delete = "block"
    [tables."shop.legal_holds"]
    on_parent_delete = "block"

    [[rules]]
    name = "closed-delete"
    table = "shop.users"
    clock = "closed_at"
    after = "30d"
    action = "delete"
    where = { status = "closed" }
    max_fraction = 1.0
    """)
    plain = invoke("-c", policy, "--now", NOW, "plan", "--only", "closed-delete", "--format", "json")
    assert plain.exit_code == 0
    result = invoke("-c", policy, "--now", NOW, "plan", "--only", "closed-delete", "--sql", "--format", "json")
    rule = json.loads(result.stdout)["rules"][0]
    assert (result.exit_code, rule["status"], rule["error"]) == (0, "ok", None)
    assert numbers(json.loads(result.stdout)) == numbers(json.loads(plain.stdout))   # --sql changes no number
    statements = rule["statements"]
    # children first, in the same batch, then the parents
    starts = [next((i for i, s in enumerate(statements) if s.startswith(prefix)), None)
              for prefix in ("DELETE FROM addresses", "UPDATE logs SET user_id", "DELETE FROM users")]
    assert None not in starts and starts[2] > max(starts[:2]), statements
    for value in PERSONAL + ["1 Road"]:
        assert value not in "\n".join(statements), value


def test_only_is_repeatable_and_selects_rules(shop, policy):
    before = shop.dump()
    result = invoke("-c", policy, "--now", NOW, "run", "--only", "closed-restrict", "--only", "logs-30d",
                    "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["rule"] for r in report["rules"]] == ["logs-30d", "closed-restrict"]
    assert report["totals"]["rules"] == 2
    users = {u["id"]: u for u in shop.rows("users")}
    assert users[1]["anonymized_at"] is None and users[1]["email"] == "user1@example.com"  # not selected
    assert users[1]["restricted_at"] is not None
    assert shop.ids("logs") == [2, 5]
    assert shop.dump() != before


def test_now_makes_the_report_as_of_that_moment(shop, policy):
    # log 4 was written 2026-05-16 12:00: a 30-day rule makes it due at 2026-06-15 12:00, not a second earlier
    def logs(now):
        result = invoke("-c", policy, "--now", now, "plan", "--only", "logs-30d", "--format", "json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        return report["now"], report["rules"][0]

    now, before = logs("2026-06-15T11:59:59Z")
    assert now == "2026-06-15T11:59:59+00:00"
    assert (before["due"], before["touch"], before["forecast"]["7d"]) == (3, 2, 1)
    now, at = logs(NOW)
    assert now == NOW_ISO and (at["due"], at["touch"]) == (4, 3)
    assert logs("2026-06-15T14:00:00+02:00")[1]["due"] == 4      # the same instant, another offset
    # a real run as of the earlier moment leaves log 4 alone
    result = invoke("-c", policy, "--now", "2026-06-15T11:59:59Z", "run", "--only", "logs-30d")
    assert result.exit_code == 0
    assert shop.ids("logs") == [2, 4, 5]


@pytest.mark.parametrize("args", [
    ["--only", "logs-30d", "--now", NOW, "--log-format", "json", "plan"],
    ["plan", "--only", "logs-30d", "--now", NOW, "--log-format", "json"],
    ["--only", "logs-30d", "plan", "--now", NOW],
    ["--now", NOW, "run", "--dry-run", "--only", "logs-30d"],
], ids=["all-before", "all-after", "mixed", "run-dry-run"])
@pytest.mark.parametrize("config_first", [True, False], ids=["c-before", "c-after"])
def test_global_options_before_or_after_the_verb(shop, policy, args, config_first):
    args = ["-c", policy, *args] if config_first else [*args, "-c", policy]
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["rule"] for r in report["rules"]] == ["logs-30d"]
    assert report["now"] == NOW_ISO and report["config"]["path"] == policy
    assert report["rules"][0]["due"] == 4


def test_retention_config_env_and_the_default_policy_file(shop, policy, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    missing = invoke("--now", NOW, "plan")
    assert missing.exit_code == 2 and "policies.toml" in missing.stderr
    from_env = invoke("--now", NOW, "plan", "--format", "json", env={"RETENTION_CONFIG": policy})
    assert from_env.exit_code == 0, from_env.stderr
    assert json.loads(from_env.stdout)["config"]["path"] == policy
    # ./policies.toml is the default
    (elsewhere / "policies.toml").write_text(Path(policy).read_text())
    local = invoke("--now", NOW, "plan", "--format", "json")
    assert local.exit_code == 0, local.stderr
    assert json.loads(local.stdout)["config"]["path"] == "policies.toml"
    assert numbers(json.loads(local.stdout)) == numbers(json.loads(from_env.stdout))


def test_an_explicit_config_after_the_verb_beats_the_env_var(shop, policy, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("version = 1\nbogus = 1\n")
    result = invoke("plan", "-c", policy, "--format", "json", env={"RETENTION_CONFIG": str(broken)})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["config"]["path"] == policy


def test_an_explicit_config_before_the_verb_beats_the_env_var(shop, policy, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("version = 1\nbogus = 1\n")
    result = invoke("-c", policy, "plan", "--format", "json", env={"RETENTION_CONFIG": str(broken)})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["config"]["path"] == policy


# --- dry run and run --------------------------------------------------------------------

def test_plan_and_run_dry_run_agree_change_nothing_and_run_does_what_they_said(shop, policy):
    before = shop.dump()
    plan = invoke("-c", policy, "--now", NOW, "plan", "--format", "json")
    dry = invoke("-c", policy, "--now", NOW, "run", "--dry-run", "--format", "json")
    assert plan.exit_code == dry.exit_code == 0
    plan_report, dry_report = json.loads(plan.stdout), json.loads(dry.stdout)
    assert numbers(plan_report) == numbers(dry_report)
    assert plan_report["mode"] == dry_report["mode"] == "dry-run"
    assert plan_report["run_id"] != dry_report["run_id"]
    plan_text = invoke("-c", policy, "--now", NOW, "plan")
    dry_text = invoke("-c", policy, "--now", NOW, "run", "--dry-run")

    assert summary(plan_text.stdout) == summary(dry_text.stdout)
    assert "would touch" in summary(plan_text.stdout)[0]
    assert {rule: cells[5] for rule, cells in summary(plan_text.stdout)[1].items()} == \
        {"logs-30d": "3", "closed-anonymize": "1", "closed-restrict": "2"}
    assert shop.dump() == before

    run = invoke("-c", policy, "--now", NOW, "run", "--format", "json")
    assert run.exit_code == 0, run.stderr
    run_report = json.loads(run.stdout)
    assert (run_report["mode"], run_report["dry_run"]) == ("run", False)
    assert set(run_report) == set(plan_report)
    assert [set(r) for r in run_report["rules"]] == [set(r) for r in plan_report["rules"]]
    assert numbers(run_report) == numbers(plan_report)      # these rules do not interact
    assert shop.dump() != before
    users = {u["id"]: u for u in shop.rows("users")}
    assert users[1]["name"] == "deleted user" and users[1]["email"] != "user1@example.com"
    assert users[2]["name"] == "User 2" and users[2]["restricted_at"] is not None

    again = invoke("-c", policy, "--now", NOW, "run")
    assert again.exit_code == 0
    header, rows = summary(again.stdout)
    assert "touched" in header and "would touch" not in header
    assert again.stdout.startswith("RETENTION RUN")
    assert {rule: cells[5] for rule, cells in rows.items()} == {r: "0" for r in RULES}   # nothing left to do


# --- credentials --------------------------------------------------------------------------

SECRET = "Sup3rS3cretPw"


@pytest.mark.parametrize("verb", ["check", "plan", "run"])
def test_an_unreachable_database_is_exit_1_with_the_password_masked(tmp_path, verb):
    policy = tmp_path / "policies.toml"
    policy.write_text(f"""
version = 1
[settings]
state_url = "sqlite:///{tmp_path / 'state.db'}"
[databases.shop]
url = "${{SHOP_DATABASE_URL}}"
[[rules]]
name = "logs"
table = "shop.logs"
clock = "created_at"
after = "1d"
action = "delete"
""")
    url = f"postgresql+psycopg://shop:{SECRET}@127.0.0.1:1/shop?connect_timeout=3"
    outputs = []
    for log_format in ("json", "console"):
        args = ["-c", str(policy), "--log-format", log_format, verb]
        args += [] if verb == "check" else ["--format", "json"]
        proc = script(*args, env={"SHOP_DATABASE_URL": url})
        assert proc.returncode == 1, proc.stderr       # a runtime failure, not an invalid file
        assert "Traceback" not in proc.stderr
        assert "shop:***@127.0.0.1" in proc.stdout + proc.stderr
        assert "database 'shop'" in proc.stdout + proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    for text in outputs:
        assert SECRET not in text


def test_a_password_in_the_url_query_is_masked_too(tmp_path):
    policy = tmp_path / "policies.toml"
    policy.write_text("version = 1\n[databases.shop]\nurl = \"${SHOP_DATABASE_URL}\"\n")
    url = f"postgresql+psycopg://shop@127.0.0.1:1/shop?password={SECRET}&connect_timeout=3"
    result = invoke("-c", str(policy), "check", env={"SHOP_DATABASE_URL": url})
    assert result.exit_code == 1
    assert SECRET not in result.stdout + result.stderr


def test_no_statement_uses_offset(shop, policy):
    # keyset batches only: not even SQLAlchemy's harmless 'OFFSET 0' on SQLite
    result = invoke("-c", policy, "--now", NOW, "plan", "--sql", "--format", "json")
    statements = [s for r in json.loads(result.stdout)["rules"] for s in r["statements"]]
    assert statements and not any("OFFSET" in s.upper() for s in statements)
    assert any("LIMIT" in s for s in statements)
