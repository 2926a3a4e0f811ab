"""Sharded runs (``retention run --shard I/N``): N processes together do exactly what one run does.

The sharded side and the single side are identical copies of one shop; a
trigger on every table writes each row it changes or deletes into a tally,
so "no row touched twice" is read from the database itself.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta

import pytest
import sqlalchemy as sa

from retention.errors import ConfigError
from retention.shards import Shard, parse_shard
from tests.runkit import audit_rows, retention, start
from tests.shopkit import DSR, HOLDS, ORDERS_FLOOR, Shop

NOW = datetime(2026, 11, 1, 3, 0, 0)
N = 4
TALLIED = ("users", "orders", "order_items", "addresses", "logs", "merchant_customers")

POLICY = """
[[rules]]
name = "closed-users-delete"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
where = { status = "closed" }
max_fraction = 1.0

[[rules]]
name = "closed-users-anonymize"
table = "shop.users"
clock = "closed_at"
after = "7d"
action = "anonymize"
where = { status = "closed" }
columns.email = "hash"
columns.phone = { strategy = "mask", keep_last = 2 }
columns.name = { strategy = "constant", value = "deleted user" }
mark = "anonymized_at"
max_fraction = 1.0

[[rules]]
name = "merchant-closed-customers"
table = "shop.merchant_customers"
clock = "merchant.closed_at"
after = "30d"
action = "delete"
max_fraction = 1.0

[tables."shop.addresses"]
on_parent_delete = "delete"
[tables."shop.orders"]
on_parent_delete = "delete"
[tables."shop.order_items"]
on_parent_delete = "delete"
[tables."shop.logs"]
on_parent_delete = "detach"
""" + HOLDS + ORDERS_FLOOR


def fill(shop: Shop, users: int = 240) -> None:
    """A deterministic shop: closed and active users, old and recent orders, holds, logs, merchants."""
    rows, orders, items, addresses, logs, holds = [], [], [], [], [], []
    for i in range(1, users + 1):
        closed = i % 3 != 0
        closed_at = NOW - timedelta(days=(i * 7) % 400) if closed else None
        rows.append(dict(id=i, email=f"user{i}@example.com", name=f"User {i}", phone=f"+1555{i:06d}",
                         status="closed" if closed else "active", created_at=datetime(2019, 1, 1),
                         closed_at=closed_at, birth_date=date(1980, 1, 1), parental_consent_at=None,
                         last_ip="10.1.2.3", anonymized_at=None, restricted_at=None))
        addresses.append(dict(id=i, user_id=i, line1=f"{i} Main St"))
        for k in range(i % 3):
            oid = i * 10 + k
            # some orders still under the 3-year floor, which keeps their user
            completed = NOW - timedelta(days=200 + ((i + k) * 97) % 1500)
            orders.append(dict(id=oid, user_id=i, completed_at=completed, total=10, buyer_name=f"B{i}",
                               shipping="x"))
            items.append(dict(id=oid * 10, order_id=oid, sku="s"))
        logs.append(dict(id=i, user_id=i if i % 2 else None, ip="10.0.0.1", created_at=NOW - timedelta(days=i)))
        if i % 17 == 0:
            holds.append(dict(id=i, user_id=i, released_at=None if i % 34 else datetime(2025, 1, 1)))
    shop.insert("users", *rows)
    shop.insert("orders", *orders)
    shop.insert("order_items", *items)
    shop.insert("addresses", *addresses)
    shop.insert("logs", *logs)
    if holds:
        shop.insert("legal_holds", *holds)
    shop.insert("merchants", *[dict(id=m, name=f"M{m}", closed_at=NOW - timedelta(days=60) if m % 2 else None)
                               for m in range(1, 9)])
    shop.insert("merchant_customers", *[dict(id=c, merchant_id=1 + c % 8, email=f"c{c}@example.com")
                                        for c in range(1, 121)])


def add_tally(shop: Shop) -> None:
    """A trigger on every table the policy changes: each changed or deleted row leaves a line."""
    pg = shop.engine.dialect.name == "postgresql"
    sqlite = shop.engine.dialect.name == "sqlite"
    with shop.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE tally (tbl VARCHAR(40) NOT NULL, id INTEGER NOT NULL, "
                             "op VARCHAR(10) NOT NULL)"))
        if pg:
            conn.execute(sa.text(
                "CREATE FUNCTION tally() RETURNS trigger AS $$ BEGIN "
                "INSERT INTO tally VALUES (TG_TABLE_NAME, OLD.id, TG_OP); RETURN NULL; END $$ LANGUAGE plpgsql"))
        for t in TALLIED:
            if pg:
                conn.execute(sa.text(f"CREATE TRIGGER tally_{t} AFTER UPDATE OR DELETE ON {t} "
                                     f"FOR EACH ROW EXECUTE FUNCTION tally()"))
            else:
                for op in ("UPDATE", "DELETE"):
                    insert = f"INSERT INTO tally VALUES ('{t}', OLD.id, '{op}')"
                    conn.execute(sa.text(f"CREATE TRIGGER tally_{t}_{op.lower()} AFTER {op} ON {t} "
                                         + (f"BEGIN {insert}; END" if sqlite else f"FOR EACH ROW {insert}")))


def tally(shop: Shop) -> list[tuple]:
    with shop.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text("SELECT tbl, id, op FROM tally")))


def twin_shops(url_a: str, url_b: str, tmp_path, state_a: str, state_b: str):
    """The same shop twice, each with its own policy file and state store."""
    shops = []
    for url, state, name in ((url_a, state_a, "single"), (url_b, state_b, "sharded")):
        d = tmp_path / name
        d.mkdir()
        shop = Shop(url, d)
        fill(shop)
        add_tally(shop)
        policy = shop.policy(POLICY, settings=f'lock_timeout = "60s"\nbatch_size = 7')
        text = open(policy).read().replace(f'state_url = "sqlite:///{d / "state.db"}"', f'state_url = "{state}"')
        open(policy, "w").write(text)
        shops.append((shop, policy))
    return shops


def run_shards(policy: str, n: int = N) -> list[dict]:
    """Start N shards at once; wait for all; return their JSON reports."""
    procs = [start("run", "--shard", f"{i}/{n}", "--now", NOW.isoformat(), "--format", "json", "-c", policy)
             for i in range(n)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def assert_union_is_one_run(single: Shop, single_policy: str, sharded: Shop, sharded_policy: str) -> list[dict]:
    before = sharded.dump()
    one = retention("run", "--now", NOW.isoformat(), "--format", "json", "-c", single_policy)
    assert one.returncode == 0, one.stderr
    reports = run_shards(sharded_policy)
    after = sharded.dump()
    assert after != before                                   # the shards did something
    assert after == single.dump()                            # exactly what the single run did
    assert tally(sharded) == tally(single)
    touched = tally(sharded)
    assert len(touched) == len(set((t, i) for t, i, _ in touched))    # no row touched twice
    assert sharded.dangling() == [] and single.dangling() == []
    # the shards' reports add up to the single run's, rule by rule
    whole = {r["rule"]: r for r in json.loads(one.stdout)["rules"]}
    for name, rule in whole.items():
        parts = [next(r for r in rep["rules"] if r["rule"] == name) for rep in reports]
        for field in ("due", "touch", "protected_total", "unchanged", "cascaded_total"):
            assert sum(p[field] for p in parts) == rule[field], (name, field)
    assert sorted(rep["shard"] for rep in reports) == [f"{i}/{N}" for i in range(N)]
    return reports


@pytest.fixture
def pg_twins(pg_server, tmp_path):
    names = [f"t_shards_{uuid.uuid4().hex[:10]}" for _ in range(4)]
    urls = [pg_server.create_database(n) for n in names]
    shops = twin_shops(urls[0], urls[1], tmp_path, urls[2], urls[3])
    try:
        yield shops, urls[3]
    finally:
        for shop, _ in shops:
            shop.close()
        for n in names:
            pg_server.drop_database(n)


@pytest.mark.postgresql
def test_four_shards_on_postgresql_do_exactly_one_run(pg_twins):
    (single, single_policy), (sharded, sharded_policy) = pg_twins[0]
    state = pg_twins[1]
    reports = assert_union_is_one_run(single, single_policy, sharded, sharded_policy)
    # the one audit chain holds all four shards' entries, interleaved, and still verifies
    rows = audit_rows(state)
    shards_seen = {json.loads(r["body"]).get("shard") for r in rows}
    assert shards_seen == {f"{i}/{N}" for i in range(N)}
    assert all(json.loads(r["body"]).get("shard") for r in rows)
    verify = retention("audit", "verify", "-c", sharded_policy)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    show = retention("audit", "show", "-c", sharded_policy)
    for i in range(N):
        assert f"shard {i}/{N}" in show.stdout
    assert len({r["run_id"] for r in reports}) == N

    # Kubernetes may run an index twice: the second time it finds nothing left in its slice
    again = retention("run", "--shard", f"2/{N}", "--now", NOW.isoformat(), "--format", "json", "-c", sharded_policy)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["totals"]["touch"] == 0
    assert len(tally(sharded)) == len(tally(single))


@pytest.mark.postgresql
def test_a_guard_trips_in_every_shard_as_in_one_run(pg_twins):
    (_single, _), (sharded, policy) = pg_twins[0]
    # the whole rule deletes more users than max_rows allows; no single shard's slice does
    text = open(policy).read().replace('where = { status = "closed" }\nmax_fraction = 1.0',
                                       'where = { status = "closed" }\nmax_rows = 20', 1)
    open(policy, "w").write(text)
    before = sharded.dump()
    for i in range(N):
        r = retention("run", "--shard", f"{i}/{N}", "--now", NOW.isoformat(), "--format", "json",
                      "--only", "closed-users-delete", "-c", policy)
        assert r.returncode == 3, r.stderr
        rule = json.loads(r.stdout)["rules"][0]
        assert rule["status"] == "guard_tripped" and rule["touch"] == 0
        assert rule["guard"]["rule_rows"] > 20 >= rule["guard"]["rows"] == rule["remaining"] > 0
    assert sharded.dump() == before


@pytest.mark.postgresql
def test_shards_and_a_whole_run_exclude_each_other_on_postgresql(pg_twins):
    (_single, _), (sharded, policy) = pg_twins[0]
    _exclusion(sharded, policy)


def _exclusion(shop: Shop, policy: str) -> None:
    """Who may start while a shard, or a whole run, holds its locks (taken here in-process)."""
    from retention.locks import LockScope, RunLock
    from retention.state import open_store
    from retention.config import load_config
    from retention.schema import make_engine
    config = load_config(policy)
    store = open_store(config.settings.state_url, config.path, config.settings)
    engine = make_engine(shop.url, config.settings)
    lock = RunLock(store, {"shop": engine}, "holder0000ab", scope=LockScope(Shard(1, N)))
    lock.acquire()
    try:
        whole = retention("run", "--now", NOW.isoformat(), "-c", policy)
        assert whole.returncode == 4, whole.stderr
        assert "holder0000ab" in whole.stderr and f"shard 1/{N}" in whole.stderr
        same = retention("run", "--shard", f"1/{N}", "--now", NOW.isoformat(), "-c", policy)
        assert same.returncode == 4 and "holder0000ab" in same.stderr
        other_n = retention("run", "--shard", "0/2", "--now", NOW.isoformat(), "-c", policy)
        assert other_n.returncode == 4 and "holder0000ab" in other_n.stderr
        sibling = retention("run", "--shard", f"0/{N}", "--now", NOW.isoformat(), "--only",
                            "merchant-closed-customers", "-c", policy)
        assert sibling.returncode == 0, sibling.stderr
    finally:
        lock.release()
    # and a whole run holding the lock keeps every shard out
    lock = RunLock(store, {"shop": engine}, "holder0000cd")
    lock.acquire()
    try:
        shard = retention("run", "--shard", f"3/{N}", "--now", NOW.isoformat(), "-c", policy)
        assert shard.returncode == 4 and "holder0000cd" in shard.stderr, shard.stderr
    finally:
        lock.release()
        store.close()
        engine.dispose()


def test_four_shards_on_sqlite_are_disjoint_and_complete(tmp_path):
    shops = twin_shops(f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}", tmp_path,
                       f"sqlite:///{tmp_path / 'state-a.db'}", f"sqlite:///{tmp_path / 'state-b.db'}")
    (single, single_policy), (sharded, sharded_policy) = shops
    try:
        assert_union_is_one_run(single, single_policy, sharded, sharded_policy)
        verify = retention("audit", "verify", "-c", sharded_policy)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        _exclusion(sharded, sharded_policy)
    finally:
        for shop, _ in shops:
            shop.close()


@pytest.mark.mariadb
def test_four_shards_on_mariadb_are_disjoint_and_complete(mariadb_server, tmp_path):
    names = [f"t_shards_{uuid.uuid4().hex[:10]}" for _ in range(3)]
    urls = [mariadb_server.create_database(n) for n in names]
    # the sharded side keeps its state (leases, the audit chain) on MariaDB too
    shops = twin_shops(urls[0], urls[1], tmp_path, f"sqlite:///{tmp_path / 'state-a.db'}", urls[2])
    (single, single_policy), (sharded, sharded_policy) = shops
    try:
        assert_union_is_one_run(single, single_policy, sharded, sharded_policy)
        # four writers appended to one chain on MariaDB: serialized, so it verifies
        verify = retention("audit", "verify", "-c", sharded_policy)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        for shop, _ in shops:
            shop.close()
        for n in names:
            mariadb_server.drop_database(n)


def test_a_shard_is_written_I_of_N():
    assert parse_shard("3/4") == Shard(3, 4)
    for bad in ("4/4", "1/0", "-1/4", "x/4", "1", ""):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_bad_shard_and_shard_with_a_reviewed_plan_exit_2(tmp_path):
    shop = Shop(f"sqlite:///{tmp_path / 'a.db'}", tmp_path)
    try:
        policy = shop.policy(POLICY)
        r = retention("run", "--shard", "4/4", "-c", policy)
        assert r.returncode == 2 and "--shard" in r.stderr
        r = retention("run", "--shard", "0/4", "--plan", str(tmp_path / "plan.json"), "-c", policy)
        assert r.returncode == 2 and "--plan" in r.stderr
    finally:
        shop.close()


def test_the_kubernetes_overlay_runs_one_shard_per_index():
    """The sharded overlay (built, validated and scanned with the others in test_deploy_kubernetes)."""
    from tests.test_deploy_kubernetes import one, pod_spec
    job = one("overlays/sharded", "CronJob")["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    n = job["completions"]
    assert n == job["parallelism"] > 1
    assert "backoffLimit" not in job and job["backoffLimitPerIndex"] >= 1
    (container,) = pod_spec("overlays/sharded")["containers"]
    args = container["args"]
    assert args[0] == "run" and args[args.index("--shard") + 1] == f"$(JOB_COMPLETION_INDEX)/{n}"
    # what Kubernetes expands it to is a shard the CLI accepts, for every index
    env = {e["name"]: e for e in container["env"]}
    assert "JOB_COMPLETION_INDEX" in env
    assert [parse_shard(args[args.index("--shard") + 1].replace("$(JOB_COMPLETION_INDEX)", str(i)))
            for i in range(n)] == [Shard(i, n) for i in range(n)]


def test_a_sharded_run_names_the_rules_whose_order_matters_across_shards(tmp_path):
    shop = Shop(f"sqlite:///{tmp_path / 'a.db'}", tmp_path)
    try:
        fill(shop, users=12)
        # deleting orders changes what blocks the users delete: one run does them in order, shards may not
        crossing = POLICY.replace('[tables."shop.orders"]\non_parent_delete = "delete"\n', "") + """
[[rules]]
name = "old-orders"
table = "shop.orders"
clock = "completed_at"
after = "5y"
action = "delete"
max_fraction = 1.0
"""
        policy = shop.policy(crossing)
        r = retention("run", "--shard", "0/2", "--now", NOW.isoformat(), "-c", policy)
        assert r.returncode == 0, r.stderr
        warnings = [json.loads(line) for line in r.stderr.splitlines() if '"shards_cross"' in line]
        assert [(w["rule"], w["other"]) for w in warnings] == [("closed-users-delete", "old-orders")]
        assert "shop.orders" in warnings[0]["tables"]
        # the policy without that rule crosses nowhere
        r = retention("run", "--shard", "1/2", "--now", NOW.isoformat(), "-c", shop.policy(POLICY))
        assert r.returncode == 0 and "shards_cross" not in r.stderr
    finally:
        shop.close()


def test_sharded_dry_runs_add_up_to_the_plan_and_carry_no_plan(tmp_path):
    shop = Shop(f"sqlite:///{tmp_path / 'a.db'}", tmp_path)
    try:
        fill(shop, users=60)
        policy = shop.policy(POLICY)
        whole = json.loads(retention("plan", "--now", NOW.isoformat(), "--format", "json", "-c", policy).stdout)
        parts = []
        for i in range(3):
            r = retention("run", "--dry-run", "--shard", f"{i}/3", "--now", NOW.isoformat(), "--format", "json",
                          "-c", policy)
            assert r.returncode == 0, r.stderr
            parts.append(json.loads(r.stdout))
        assert all(p["plan"] is None and p["shard"] == f"{i}/3" for i, p in enumerate(parts))
        for k, rule in enumerate(whole["rules"]):
            assert sum(p["rules"][k]["touch"] for p in parts) == rule["touch"] > 0
            assert sum(p["rules"][k]["due"] for p in parts) == rule["due"]
            assert all(p["rules"][k]["guard"]["rule_rows"] == rule["touch"] for p in parts)
    finally:
        shop.close()


def test_composite_and_text_keys_split_into_disjoint_complete_slices(backend, tmp_path):
    """Keys that are not one integer are split by an MD5 of their text, computed by each engine alike."""
    engine = sa.create_engine(backend)
    md = sa.MetaData()
    sa.Table("visits", md, sa.Column("region", sa.String(10), primary_key=True),
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("at", sa.DateTime, nullable=False))
    sa.Table("tokens", md, sa.Column("token", sa.String(40), primary_key=True),
             sa.Column("at", sa.DateTime, nullable=False))
    md.drop_all(engine)
    md.create_all(engine)
    old, new = datetime(2020, 1, 1), NOW - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(md.tables["visits"].insert(), [dict(region=r, id=i, at=old if i % 4 else new)
                                                    for r in ("eu", "us", "ap") for i in range(40)])
        conn.execute(md.tables["tokens"].insert(), [dict(token=f"tok-{i:04d}-{'x' * (i % 7)}", at=old if i % 3 else new)
                                                    for i in range(90)])
    policy = tmp_path / "policies.toml"
    policy.write_text(f"""version = 1
[settings]
state_url = "sqlite:///{tmp_path / 'state.db'}"
[databases.app]
url = "{backend}"
""" + "".join(f"""
[[rules]]
name = "{t}-old"
table = "app.{t}"
clock = "at"
after = "30d"
action = "delete"
max_fraction = 1.0
""" for t in ("visits", "tokens")))
    try:
        touched = {"visits-old": [], "tokens-old": []}
        for i in range(3):
            r = retention("run", "--shard", f"{i}/3", "--now", NOW.isoformat(), "--format", "json", "-c", str(policy))
            assert r.returncode == 0, r.stderr
            for rule in json.loads(r.stdout)["rules"]:
                touched[rule["rule"]].append(rule["touch"])
        assert sum(touched["visits-old"]) == 90 and sum(touched["tokens-old"]) == 60
        assert all(n > 0 for counts in touched.values() for n in counts)     # every shard had a share
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM visits")).scalar() == 30
            assert conn.execute(sa.text("SELECT count(*) FROM tokens")).scalar() == 30
    finally:
        md.drop_all(engine)
        engine.dispose()


def test_requests_are_fulfilled_once_by_shard_0(tmp_path):
    from retention.requests.commands import file_request
    from tests.shopkit import HASH_ENV
    shop = Shop(f"sqlite:///{tmp_path / 'a.db'}", tmp_path)
    try:
        fill(shop, users=12)
        policy = shop.policy(POLICY + DSR)
        file_request(policy, "customer:3", now=NOW, env=HASH_ENV)
        for i in (1, 2):
            r = retention("run", "--shard", f"{i}/3", "--now", NOW.isoformat(), "--format", "json", "-c", policy)
            assert r.returncode == 0, r.stderr
            (item,) = json.loads(r.stdout)["requests"]["items"]
            assert item["status"] == "pending" and "shard 0" in item["skipped"][0]
            assert shop.count("users", shop.t("users").c.id == 3) == 1
        r = retention("run", "--shard", "0/3", "--now", NOW.isoformat(), "--format", "json", "-c", policy)
        assert r.returncode == 0, r.stderr
        (item,) = json.loads(r.stdout)["requests"]["items"]
        assert item["status"] == "done" and shop.count("users", shop.t("users").c.id == 3) == 0
    finally:
        shop.close()


def test_each_shard_has_metrics_of_its_own(tmp_path):
    from retention import metrics
    shop = Shop(f"sqlite:///{tmp_path / 'a.db'}", tmp_path)
    try:
        fill(shop, users=12)
        policy = shop.policy(POLICY)
        files = []
        for i in range(2):
            path = tmp_path / f"shard{i}.prom"
            r = retention("run", "--shard", f"{i}/2", "--now", NOW.isoformat(), "--metrics-file", str(path),
                          "-c", policy)
            assert r.returncode == 0, r.stderr
            files.append(path.read_text())
        for i, text in enumerate(files):
            assert f'retention_run_success{{mode="run",policy="policies",shard="{i}/2"}} 1.0' in text
        m = metrics.RunMetrics(policy="p", mode="run", exit_code=0, duration_seconds=1, finished_at=0,
                               shard="1/4")
        assert metrics.grouping_key(m) == {"policy": "p", "mode": "run", "shard": "1/4"}
    finally:
        shop.close()
