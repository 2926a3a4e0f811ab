"""End to end: ``retention demo`` then ``retention run`` with the root policies.toml.

What a new operator does on day one, through the installed console script in
a scratch directory: build the demo shop, read the dry-run report, enforce
the policy, run it again.  On SQLite (the embedded default) and on
PostgreSQL (the suite's throwaway server).  Independent processes run in
parallel where they do not share a database, to keep the module fast.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from retention.cli import cli

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies.toml"
RULES = [r["name"] for r in tomllib.loads(POLICY.read_text())["rules"]]
NOW = "2026-03-15T09:30:00Z"
NOW_ISO = "2026-03-15T09:30:00+00:00"
NOW_NAIVE = datetime(2026, 3, 15, 9, 30)
HASH_KEY = "e2e-hash-key"
SCRIPT = Path(sys.executable).with_name("retention")
DB = "retention-demo.db"
FORMATS = ("text", "json", "markdown", "html")
PG_PASSWORD = "DemoPw4711"      # the test server trusts loopback: any password connects, none may be printed


@dataclass
class Result:
    args: list[str]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:
        return json.loads(self.stdout)


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh machine: no policy, database or key settings inherited."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RETENTION_CONFIG", "SHOP_DATABASE_URL", "RETENTION_HASH_KEY")}
    return {**env, **extra}


def start(*args: str, cwd: Path, env: dict[str, str] | None = None):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "retention"]
    proc = subprocess.Popen(command + ["-c", str(POLICY), *args], cwd=cwd, env=env or base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, list(args), cwd


def finish(started) -> Result:
    proc, args, cwd = started
    out, err = proc.communicate(timeout=180)
    return Result(args, cwd, proc.returncode, out, err)


def retention(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    return finish(start(*args, cwd=cwd, env=env))


def shop_env(url: str) -> dict[str, str]:
    return base_env(SHOP_DATABASE_URL=url, RETENTION_HASH_KEY=HASH_KEY)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def numbers(report: dict) -> dict[str, tuple]:
    """Per rule, everything a dry run predicts and a run does (no ids, timings or mode)."""
    return {r["rule"]: (r["status"], r["due"], r["touch"], r["unchanged"],
                        tuple((p["kind"], p["name"], p["rows"]) for p in r["protected"]),
                        tuple(sorted((c["table"], c["action"], c["rows"]) for c in r["cascades"])),
                        r["guard"]["state"], r["guard"]["rows"])
            for r in report["rules"]}


def query(db: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def digest(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, in key order."""
    tables = [t for (t,) in query(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: query(db, f"SELECT * FROM {t} ORDER BY id") for t in tables}


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")   # how SQLAlchemy stores naive DateTime in SQLite


# --- fixtures: build once, in parallel --------------------------------------------------

@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> dict[str, Result]:
    """``retention demo`` in four scratch directories, one per report format (+ --only)."""
    runs = {
        "json": ("--now", NOW, "demo", "--format", "json"),
        "text": ("demo",),                                       # the real clock, the default format
        "markdown": ("demo", "--now", NOW, "--format", "markdown"),
        "only": ("--now", NOW, "demo", "--only", "access-logs-180d", "--format", "json"),
    }
    started = {name: start(*args, cwd=tmp_path_factory.mktemp(f"demo-{name}")) for name, args in runs.items()}
    return {name: finish(p) for name, p in started.items()}


@pytest.fixture(scope="module")
def pristine(demos) -> Path:
    """The demo shop as built (at NOW), never written to."""
    assert demos["json"].returncode == 0, demos["json"].stderr
    return demos["json"].cwd / DB


@pytest.fixture(scope="module")
def personal_data(pristine) -> list[str]:
    """A few hundred e-mails, names, phones, card numbers and IPs from the shop before any run.

    Drawn mostly from rows the policy acts on (closed accounts, minors, old
    logs and payments), where a leak through an error or a log line is likeliest.
    """
    adult = NOW_NAIVE.date().replace(year=NOW_NAIVE.year - 18).isoformat()
    sources = [
        f"SELECT email, name, phone, last_ip FROM users WHERE status = 'closed' OR birth_date > '{adult}'",
        "SELECT email, name, phone, last_ip FROM users",
        "SELECT email, name, NULL, NULL FROM merchant_customers",
        f"SELECT ip, NULL, NULL, NULL FROM access_logs WHERE created_at < '{ts(NOW_NAIVE - timedelta(days=180))}'",
        f"SELECT card_number, card_holder, NULL, NULL FROM payments "
        f"WHERE paid_at < '{ts(NOW_NAIVE - timedelta(days=90))}'",
    ]
    rng = random.Random(20260315)
    values: set[str] = set()
    for sql in sources:
        found = sorted({v for row in query(pristine, sql) for v in row if isinstance(v, str) and len(v) >= 7})
        values.update(rng.sample(found, min(80, len(found))))
    assert len(values) >= 300
    kinds = {"@": "email", " ": "name", "+": "phone", ".": "ip"}
    for marker in kinds:
        assert any(marker in v for v in values), kinds[marker]
    assert any(v.isdigit() and len(v) == 16 for v in values), "card number"
    assert any(":" in v for v in values), "IPv6"
    return sorted(values)


@pytest.fixture(scope="module")
def runs(pristine, tmp_path_factory) -> dict[str, Result]:
    """``plan --sql`` on the pristine shop and ``run`` on three copies of it, one per format."""
    started = {}
    for fmt in FORMATS:
        started[f"plan-{fmt}"] = start("--now", NOW, "plan", "--sql", "--format", fmt,
                                       cwd=tmp_path_factory.mktemp(f"plan-{fmt}"), env=shop_env(sqlite_url(pristine)))
        here = tmp_path_factory.mktemp(f"run-{fmt}")
        shutil.copy(pristine, here / DB)
        started[f"run-{fmt}"] = start("--now", NOW, "run", "--format", fmt, cwd=here,
                                      env=shop_env(sqlite_url(here / DB)))
    return {name: finish(p) for name, p in started.items()}


# --- the demo ---------------------------------------------------------------------------

def test_demo_builds_the_shop_in_the_current_directory_and_reports_every_rule(demos):
    for name in ("json", "text", "markdown"):
        result = demos[name]
        assert result.returncode == 0, (name, result.stderr)
        assert sorted(p.name for p in result.cwd.iterdir() if p.suffix == ".db") in ([DB], [DB, "retention-state.db"])
        assert query(result.cwd / DB, "SELECT count(*) FROM users") == [(2000,)]
        assert f"demo shop built at sqlite:///{DB}" in result.stderr
    assert [r["rule"] for r in demos["json"].json()["rules"]] == RULES
    text = demos["text"].stdout
    assert text.startswith("RETENTION SIMULATION")         # the demo's report is an exact simulation
    assert "nothing was changed" in text.splitlines()[0]
    table = {line.split()[0] for line in text.splitlines() if line.split()[:1] and line.split()[0] in RULES}
    assert table == set(RULES)
    # without --now the report is as of the real clock
    now_line = next(line for line in text.splitlines() if line.startswith("now "))
    stamp = datetime.fromisoformat(now_line.split()[1])
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=5)
    md = demos["markdown"].stdout
    assert md.startswith("# Retention simulation")
    for rule in RULES:
        assert f"### `{rule}`" in md
        assert f"| {rule} |" in md


def test_demo_json_report_is_consistent_and_matches_the_database(demos, pristine):
    report = demos["json"].json()
    assert (report["mode"], report["dry_run"], report["now"], report["exit_code"]) == \
        ("simulation", True, NOW_ISO, 0)
    assert report["config"]["path"] == str(POLICY)
    for r in report["rules"]:
        assert r["status"] == "ok" and r["error"] is None, r["rule"]
        assert r["due"] == r["protected_total"] + r["touch"] + r["unchanged"] + r["remaining"], r["rule"]
        assert r["protected_total"] == sum(p["rows"] for p in r["protected"])
        assert r["cascaded_total"] == sum(c["rows"] for c in r["cascades"])
        assert r["guard"]["rows"] == r["touch"]
    totals = report["totals"]
    for key, field in (("due", "due"), ("touch", "touch"), ("protected", "protected_total"),
                       ("cascaded", "cascaded_total")):
        assert totals[key] == sum(r[field] for r in report["rules"]), key
    assert totals["rules"] == len(RULES) and totals["touch"] > 0
    rules = {r["rule"]: r for r in report["rules"]}

    # the numbers, recounted straight from the database
    cutoff = ts(NOW_NAIVE - timedelta(days=180))
    held = "SELECT user_id FROM legal_holds WHERE released_at IS NULL"
    logs = rules["access-logs-180d"]
    assert logs["due"] == query(pristine, "SELECT count(*) FROM access_logs WHERE created_at <= ?", cutoff)[0][0]
    assert logs["protected"] == [{"kind": "hold", "name": "litigation", "rows": query(
        pristine, f"SELECT count(*) FROM access_logs WHERE created_at <= ? AND user_id IN ({held})", cutoff)[0][0]}]
    restrict = rules["closed-accounts-restrict"]
    assert restrict["due"] == query(pristine, "SELECT count(*) FROM users WHERE status = 'closed' "
                                              "AND closed_at <= ?", ts(NOW_NAIVE))[0][0]
    grace = ts(NOW_NAIVE - timedelta(days=30))
    anonymize = rules["closed-accounts-anonymize"]
    assert anonymize["due"] == query(pristine, "SELECT count(*) FROM users WHERE status = 'closed' "
                                               "AND closed_at <= ?", grace)[0][0]
    assert anonymize["touch"] == query(pristine, f"SELECT count(*) FROM users WHERE status = 'closed' "
                                                 f"AND closed_at <= ? AND id NOT IN ({held})", grace)[0][0]
    minors = rules["minors-without-consent"]
    assert {p["kind"] for p in minors["protected"]} == {"hold", "children"}    # orders block deletion
    assert minors["cascaded_total"] > 0


def test_the_demo_report_is_what_the_run_then_does(demos, runs):
    # The demo's report is a simulation: all rules together, each seeing what the earlier
    # ones did, so its numbers are the run's, rule by rule, at the same --now.
    demo, run = demos["json"].json(), runs["run-json"].json()
    assert demo["now"] == run["now"] == NOW_ISO
    assert numbers(run) == numbers(demo)


def test_run_enforces_the_demo_and_a_second_run_touches_nothing(runs, pristine):
    first = runs["run-json"]
    assert first.returncode == 0, first.stderr
    report = first.json()
    assert (report["mode"], report["exit_code"]) == ("run", 0)
    assert report["totals"]["touch"] > 0 and report["totals"]["cascaded"] > 0
    for r in report["rules"]:
        assert r["status"] == "ok", (r["rule"], r["error"])
        assert r["due"] == r["protected_total"] + r["touch"] + r["unchanged"] + r["remaining"], r["rule"]
    db = first.cwd / DB
    after_first = digest(db)
    assert after_first != digest(pristine)
    assert query(db, "PRAGMA foreign_key_check") == []

    second = retention("--now", NOW, "run", "--format", "json", cwd=first.cwd, env=shop_env(sqlite_url(db)))
    assert second.returncode == 0, second.stderr
    again = second.json()
    assert [(r["rule"], r["touch"], r["cascaded_total"]) for r in again["rules"]] == [(r, 0, 0) for r in RULES]
    assert all(c["rows"] == 0 for r in again["rules"] for c in r["cascades"])
    assert again["totals"]["touch"] == again["totals"]["cascaded"] == 0
    assert digest(db) == after_first
    assert query(db, "PRAGMA foreign_key_check") == []

    # what the promises say, checked in the data
    cutoff = ts(NOW_NAIVE - timedelta(days=180))
    held = "SELECT user_id FROM legal_holds WHERE released_at IS NULL"
    assert query(db, f"SELECT count(*) FROM access_logs WHERE created_at <= ? "
                     f"AND (user_id IS NULL OR user_id NOT IN ({held}))", cutoff) == [(0,)]
    grace = ts(NOW_NAIVE - timedelta(days=30))
    con = sqlite3.connect(db)
    con.execute("ATTACH DATABASE ? AS before", (str(pristine),))
    unchanged_emails = con.execute(
        f"SELECT count(*) FROM users u JOIN before.users b ON b.id = u.id WHERE u.status = 'closed' "
        f"AND u.closed_at <= ? AND u.id NOT IN ({held}) AND u.email = b.email", (grace,)).fetchone()[0]
    held_changed = con.execute(
        f"SELECT count(*) FROM users u JOIN before.users b ON b.id = u.id "
        f"WHERE u.id IN ({held}) AND (u.email <> b.email OR u.name <> b.name)").fetchone()[0]
    con.close()
    assert unchanged_emails == 0          # every closed, unheld account past the grace period is anonymized
    assert query(db, f"SELECT count(*) FROM users WHERE status = 'closed' AND closed_at <= ? "
                     f"AND id NOT IN ({held})", grace)[0][0] > 0
    assert held_changed == 0              # and no held one


def test_no_personal_data_in_any_output(demos, runs, personal_data):
    outputs = {f"demo-{name}": demos[name] for name in ("json", "text", "markdown")} | runs
    for name, result in outputs.items():
        for rule in RULES:                        # every output is a whole report
            assert rule in result.stdout, (name, rule)
    for fmt in FORMATS:
        assert runs[f"run-{fmt}"].returncode == 0, runs[f"run-{fmt}"].stderr
    assert "DELETE FROM access_logs" in runs["plan-text"].stdout       # --sql did show statements
    assert "UPDATE users" in runs["plan-markdown"].stdout
    leaks = {(name, value) for name, result in outputs.items() for value in personal_data
             if value in result.output}
    assert leaks == set()


def test_demo_only_selects_rules(demos):
    result = demos["only"]
    assert result.returncode == 0, result.stderr
    assert [r["rule"] for r in result.json()["rules"]] == ["access-logs-180d"]


def test_demo_on_an_unreachable_database_is_a_clean_error(tmp_path):
    url = f"postgresql+psycopg://shop:{PG_PASSWORD}@127.0.0.1:1/shop?connect_timeout=3"
    result = retention("demo", "--url", url, cwd=tmp_path)
    assert PG_PASSWORD not in result.output
    assert result.returncode == 2 and "Traceback" not in result.stderr


# --- dry run == run, rule by rule -----------------------------------------------------------

def test_each_rule_dry_run_numbers_equal_its_run(pristine, tmp_path, monkeypatch):
    # Rules run together interact (a later rule sees what an earlier one did), so each
    # rule is planned and then run alone, in policy order, on the data the previous ones left.
    db = tmp_path / DB
    shutil.copy(pristine, db)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    env = {"SHOP_DATABASE_URL": sqlite_url(db), "RETENTION_HASH_KEY": HASH_KEY}
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    try:
        for rule in RULES:
            args = ["-c", str(POLICY), "--now", NOW, "--only", rule, "--format", "json"]
            before = digest(db)
            dry = runner.invoke(cli, [*args[:6], "plan", *args[6:]], env=env, catch_exceptions=False)
            assert dry.exit_code == 0, (rule, dry.stderr)
            assert digest(db) == before
            done = runner.invoke(cli, [*args[:6], "run", *args[6:]], env=env, catch_exceptions=False)
            assert done.exit_code == 0, (rule, done.stderr)
            predicted, did = numbers(json.loads(dry.stdout)), numbers(json.loads(done.stdout))
            assert list(did) == [rule]
            assert did == predicted, rule
            if did[rule][2]:
                assert digest(db) != before, rule
    finally:
        structlog.reset_defaults()       # the runner's stderr is gone; leave logging as found
    assert query(db, "PRAGMA foreign_key_check") == []


# --- PostgreSQL ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_demo(pg_server, tmp_path_factory):
    """The demo built by ``retention demo --url`` on a fresh PostgreSQL database (URL with a password)."""
    name = f"t_demo_e2e_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name)
    try:
        with_password = make_url(url).set(password=PG_PASSWORD).render_as_string(hide_password=False)
        cwd = tmp_path_factory.mktemp("pg")
        result = retention("--now", NOW, "demo", "--url", with_password, "--format", "json", cwd=cwd)
        yield url, with_password, result
    finally:
        pg_server.drop_database(name)


def test_demo_and_run_on_postgresql_match_sqlite(pg_demo, demos, runs):
    url, with_password, demo = pg_demo
    assert demo.returncode == 0, demo.stderr
    assert numbers(demo.json()) == numbers(demos["json"].json())     # same shop, same plan, any engine
    cwd = demo.cwd
    assert not (cwd / DB).exists()                                    # nothing built in SQLite

    first = retention("--now", NOW, "run", "--format", "json", cwd=cwd, env=shop_env(with_password))
    assert first.returncode == 0, first.stderr
    assert numbers(first.json()) == numbers(runs["run-json"].json())  # and the same run
    assert PG_PASSWORD not in first.output
    second = retention("--now", NOW, "run", "--format", "json", cwd=cwd, env=shop_env(url))
    assert second.returncode == 0, second.stderr
    again = second.json()
    assert [(r["rule"], r["status"], r["touch"], r["cascaded_total"]) for r in again["rules"]] == \
        [(r, "ok", 0, 0) for r in RULES]
    assert all(c["rows"] == 0 for r in again["rules"] for c in r["cascades"])


def test_demo_masks_the_password_of_its_url(pg_demo):
    _, _, demo = pg_demo
    assert demo.returncode == 0
    assert PG_PASSWORD not in demo.output
    assert ":***@" in demo.stderr


# --- MariaDB ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mariadb_demo(mariadb_server, tmp_path_factory):
    """The demo built by ``retention demo --url`` on a fresh MariaDB database."""
    name = f"t_demo_e2e_{uuid.uuid4().hex[:12]}"
    url = mariadb_server.create_database(name)
    try:
        cwd = tmp_path_factory.mktemp("mariadb")
        yield url, retention("--now", NOW, "demo", "--url", url, "--format", "json", cwd=cwd)
    finally:
        mariadb_server.drop_database(name)


def test_demo_and_run_on_mariadb_match_sqlite(mariadb_demo, demos, runs):
    # every rule of the shipped policy (all strategies, holds, floors, cascades) on a third engine
    url, demo = mariadb_demo
    assert demo.returncode == 0, demo.stderr
    assert numbers(demo.json()) == numbers(demos["json"].json())
    first = retention("--now", NOW, "run", "--format", "json", cwd=demo.cwd, env=shop_env(url))
    assert first.returncode == 0, first.stderr
    assert numbers(first.json()) == numbers(runs["run-json"].json())
    second = retention("--now", NOW, "run", "--format", "json", cwd=demo.cwd, env=shop_env(url))
    assert second.returncode == 0, second.stderr
    assert [(r["rule"], r["status"], r["touch"], r["cascaded_total"]) for r in second.json()["rules"]] == \
        [(r, "ok", 0, 0) for r in RULES]
