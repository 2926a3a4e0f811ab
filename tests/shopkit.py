"""A small shop schema and helpers for scenario tests on any backend."""

from __future__ import annotations

import textwrap
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_types

from retention import commands

HASH_ENV = {"RETENTION_HASH_KEY": "test-key"}

# policy fragments many scenarios share (Shop.policy dedents, so indentation does not matter)
HOLDS = """
[[holds]]
name = "litigation"
table = "shop.legal_holds"
subject = "customer"
subject_column = "user_id"
active_where = { released_at = { is_null = true } }
"""

LOGS_PURGE = """
[[rules]]
name = "logs-purge"
table = "shop.logs"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
"""

USERS_PURGE = """
[[rules]]
name = "closed-users-purge"
table = "shop.users"
clock = "closed_at"
after = "1d"
action = "delete"
max_fraction = 1.0
"""

#: erasure requests filed in the state store, answered within 15 days by deleting the customer's rows
DSR = """
[[requests]]
name = "dsr"
table = "state.requests"
subject = "customer"
subject_column = "user_id"
deadline = "15d"
action = "delete"
"""

#: a UUID-keyed table's rules (notes), for the page and rowid range scenarios
NOTES_PURGE = """
[[rules]]
name = "notes-purge"
table = "shop.notes"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
"""

NOTES_HASH = """
[[rules]]
name = "notes-hash"
table = "shop.notes"
clock = "created_at"
after = "1d"
action = "anonymize"
max_fraction = 1.0
columns = { email = "hash" }
"""

#: closed customers anonymized 30 days on: e-mail hashed, name replaced, marked done
CLOSED_ANONYMIZE = """
[[rules]]
name = "closed-anonymize"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "anonymize"
columns.email = "hash"
columns.name = { strategy = "constant", value = "gone" }
mark = "anonymized_at"
max_fraction = 1.0
"""

#: orders a year after completion, with their items
OLD_ORDERS = """
[[rules]]
name = "old-orders"
table = "shop.orders"
clock = "completed_at"
after = "1y"
action = "delete"
max_fraction = 1.0

[tables."shop.order_items"]
on_parent_delete = "delete"
"""

#: orders kept 3 years from completion (the statutory minimum of the e-commerce policies)
ORDERS_FLOOR = """
[[floors]]
name = "ecommerce-law-3y"
table = "shop.orders"
clock = "completed_at"
keep = "3y"
"""

FLOOR_ORDERS = """
[[rules]]
name = "orders-purge"
table = "shop.orders"
clock = "completed_at"
after = "1d"
action = "delete"
max_fraction = 1.0

[tables."shop.order_items"]
on_parent_delete = "delete"
""" + ORDERS_FLOOR


#: a timestamp with microseconds on every engine, as PostgreSQL and SQLite keep them: MySQL's
#: and MariaDB's plain DATETIME drops the fraction (00:00:00.5 is stored as 00:00:00)
MOMENT = sa.DateTime().with_variant(mysql_types.DATETIME(fsp=6), "mysql", "mariadb")


def schema(md: sa.MetaData) -> None:
    sa.Table("users", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("email", sa.String(120), unique=True),
             sa.Column("name", sa.String(80)),
             sa.Column("phone", sa.String(30)),
             sa.Column("status", sa.String(10), nullable=False, server_default="active"),
             sa.Column("created_at", MOMENT, nullable=False),
             sa.Column("closed_at", MOMENT),
             sa.Column("birth_date", sa.Date),
             sa.Column("parental_consent_at", MOMENT),
             sa.Column("last_ip", sa.String(45)),
             sa.Column("anonymized_at", MOMENT),
             sa.Column("restricted_at", MOMENT),
             # a rule the schema check cannot foresee fails here, in the database
             sa.CheckConstraint("name IS NULL OR name <> 'nobody'", name="users_name_not_nobody"))
    sa.Table("orders", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
             sa.Column("completed_at", MOMENT),
             sa.Column("total", sa.Numeric(12, 2)),
             sa.Column("buyer_name", sa.String(80)),
             sa.Column("shipping", sa.String(200)))
    sa.Table("order_items", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
             sa.Column("sku", sa.String(20)))
    sa.Table("addresses", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
             sa.Column("line1", sa.String(120)))
    sa.Table("logs", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
             sa.Column("ip", sa.String(45)),
             sa.Column("created_at", MOMENT, nullable=False))
    sa.Table("merchants", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("name", sa.String(80)),
             sa.Column("closed_at", MOMENT))
    sa.Table("merchant_customers", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("merchant_id", sa.Integer, sa.ForeignKey("merchants.id"), nullable=False),
             sa.Column("email", sa.String(120)))
    sa.Table("legal_holds", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
             sa.Column("released_at", MOMENT))


class Shop:
    """A scenario database: create, fill, write a policy, run, dump."""

    def __init__(self, url: str, tmp_path: Path, *, created: bool = False) -> None:
        """``created``: the database already holds the empty shop schema (a copy of a template)."""
        self.url = url
        self.tmp_path = tmp_path
        self.engine = sa.create_engine(url)
        self.md = sa.MetaData()
        schema(self.md)
        if not created:
            self.md.drop_all(self.engine)
            self.md.create_all(self.engine)

    def t(self, name: str) -> sa.Table:
        return self.md.tables[name]

    def insert(self, table: str, *rows: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.t(table).insert(), list(rows))

    def user(self, id: int, **kw) -> None:
        row = dict(id=id, email=f"user{id}@example.com", name=f"User {id}", phone=f"+1555000{id:04d}",
                   status="active", created_at=datetime(2020, 1, 1), closed_at=None,
                   birth_date=date(1990, 5, 17), parental_consent_at=None, last_ip="10.1.2.3",
                   anonymized_at=None, restricted_at=None)
        row.update(kw)
        self.insert("users", row)

    def count(self, table: str, *where) -> int:
        t = self.t(table)
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar()

    def rows(self, table: str) -> list[dict]:
        t = self.t(table)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]

    def ids(self, table: str) -> list[int]:
        return [r["id"] for r in self.rows(table)]

    def dump(self) -> dict[str, list[tuple]]:
        """Every row of every table, in key order: compare before and after."""
        out = {}
        with self.engine.connect() as conn:
            for t in self.md.sorted_tables:
                out[t.name] = [tuple(r) for r in conn.execute(sa.select(t).order_by(t.c.id))]
        return out

    def dangling(self) -> list[str]:
        """Foreign keys that point at nothing (must always be empty)."""
        problems = []
        with self.engine.connect() as conn:
            for t in self.md.sorted_tables:
                for fk in t.foreign_keys:
                    parent = fk.column.table
                    q = (sa.select(sa.func.count()).select_from(t)
                         .where(fk.parent.is_not(None),
                                ~sa.exists().where(parent.c[fk.column.name] == fk.parent)))
                    n = conn.execute(q).scalar()
                    if n:
                        problems.append(f"{t.name}.{fk.parent.name}: {n}")
        return problems

    def policy(self, body: str, *, settings: str = "", name: str = "policies.toml") -> str:
        text = textwrap.dedent(f"""\
            version = 1
            [settings]
            state_url = "sqlite:///{self.tmp_path / 'state.db'}"
            {textwrap.dedent(settings)}
            [databases.shop]
            url = "{self.url}"

            [subjects.customer]
            table = "shop.users"
            key = "id"
            """) + textwrap.dedent(body)
        path = self.tmp_path / name
        path.write_text(text)
        return str(path)

    def run(self, policy: str, *, dry_run: bool = False, now: datetime | None = None, **kw):
        return commands.run(policy, dry_run=dry_run, now=now, env=HASH_ENV, **kw)

    def close(self) -> None:
        self.engine.dispose()


def extra_tables(shop: "Shop", *tables) -> sa.MetaData:
    """Create tables beside the shop schema (they may reference it)."""
    md = shop.md
    for build in tables:
        build(md)
    md.create_all(shop.engine)
    return md


def outcome(report, rule: str):
    return next(r for r in report.rules if r.rule == rule)


def protected(out) -> dict[str, int]:
    return {f"{p.kind}:{p.name}": p.rows for p in out.protected}


def cascades(out) -> dict[str, int]:
    totals: dict[str, int] = {}
    for c in out.cascades:
        key = f"{c.table}:{c.action}"
        totals[key] = totals.get(key, 0) + c.rows
    return totals
