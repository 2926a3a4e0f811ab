"""The benchmark's data and scenarios: every value a function of the row number, so builds are identical.

Tables (each row of a big table is about 200 bytes):

    accounts       1,000 rows, the subject of the legal holds
    legal_holds    an active hold on every 50th account (so ~2% of the due rows are protected),
                   a released one on every 70th (a released hold protects nothing)
    events_a       layout A: bigint key, clock correlated with the key (row i is i/N of the way
                   through the 1,000-day span): the due rows are the low end of the key range
    events_b       layout B: random UUID key, clock uncorrelated with it: due rows everywhere
    orders         N/5 rows, layout A's clock          | the parent/child pair of the cascade
    order_lines    N rows, five per order (indexed FK)  |
    logs_p         N rows, layout A's clock, partitioned by month (PostgreSQL, MariaDB); no account,
                   so no hold reaches it: the log table a partition drop is made for

The clock spans 1,000 days from START; the run is at NOW, after the last row.  A
rule ``after`` (NOW - START - 500 days) finds 50% of the rows due, one for 50 days 5%.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

START = datetime(2021, 1, 1)
SPAN_DAYS = 1000
NOW = datetime(2024, 1, 1)
ACCOUNTS = 1000
HOLD_EVERY = 50
RELEASED_EVERY = 70
LINES_PER_ORDER = 5
NOTE_CHARS = 110
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 2
MASK_KEEP_LAST = 4
CONSTANT_NAME = "deleted user"

EVENT_COLUMNS = ["id", "account_id", "created_at", "name", "email", "phone", "note"]
LOG_COLUMNS = ["id", "created_at", "name", "email", "phone", "note"]


def cutoff(fraction: float) -> datetime:
    """The instant before which ``fraction`` of the span lies."""
    return START + timedelta(days=round(SPAN_DAYS * fraction))


def after_days(fraction: float) -> int:
    return (NOW - cutoff(fraction)).days


HELD = ("NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.account_id = {t}.account_id "
        "AND h.released_at IS NULL)")


def due(table: str, held: bool = True) -> str:
    return f"{table}.created_at <= :cutoff" + (" AND " + HELD.format(t=table) if held else "")


# --- families: the tables a scenario needs, built once per engine as a template --------------------

@dataclass(frozen=True)
class Family:
    name: str
    kind: str                  # a | b | cascade | parted
    tables: tuple[str, ...]    # the family's own tables, parents first

    def ddl(self, e, indexes: bool = True) -> list[str]:
        """CREATE statements for the common tables and the family's (secondary indexes optional)."""
        t, ts = e.text, e.ts
        out = [f"CREATE TABLE accounts (id integer PRIMARY KEY, name {t}(80) NOT NULL)",
               f"CREATE TABLE legal_holds (id integer PRIMARY KEY, account_id integer NOT NULL "
               f"REFERENCES accounts (id), released_at {ts})",
               "CREATE INDEX legal_holds_account_id ON legal_holds (account_id)"]
        person = f"name {t}(40), email {t}(60), phone {t}(20), note {t}({NOTE_CHARS})"
        if self.kind in ("a", "b"):
            key = e.bigint_pk if self.kind == "a" else f"{e.uuid_type} PRIMARY KEY"
            out.append(f"CREATE TABLE {self.tables[0]} (id {key}, account_id integer NOT NULL REFERENCES accounts (id), "
                       f"created_at {ts} NOT NULL, {person})")
        elif self.kind == "cascade":
            out += [f"CREATE TABLE orders (id {e.bigint_pk}, account_id integer NOT NULL REFERENCES accounts (id), "
                    f"created_at {ts} NOT NULL, {person})",
                    f"CREATE TABLE order_lines (id {e.bigint_pk}, order_id bigint NOT NULL REFERENCES orders (id), "
                    f"sku {t}(20), note {t}({NOTE_CHARS + 60}))"]
        else:
            clause, extra = e.partition_ddl(months())
            out += [f"CREATE TABLE logs_p (id bigint NOT NULL, created_at {ts} NOT NULL, {person}, "
                    f"PRIMARY KEY (id, created_at)) {clause}", *extra]
        return out + (self.indexes() if indexes else [])

    def indexes(self) -> list[str]:
        if self.kind in ("a", "b"):
            t = self.tables[0]
            return [f"CREATE INDEX {t}_account_id ON {t} (account_id)", f"CREATE INDEX {t}_created_at ON {t} (created_at)"]
        if self.kind == "cascade":
            return ["CREATE INDEX orders_account_id ON orders (account_id)",
                    "CREATE INDEX orders_created_at ON orders (created_at)",
                    "CREATE INDEX order_lines_order_id ON order_lines (order_id)"]
        return ["CREATE INDEX logs_p_created_at ON logs_p (created_at)"]

    def build(self, e, n: int) -> list[str]:
        """Create and fill the tables with ``n`` rows in the big table; indexes after the load."""
        def insert(table, columns, exprs, rows):
            return f"INSERT INTO {table} ({columns}) SELECT {exprs} FROM {e.series(rows)}"

        out = self.ddl(e, indexes=False)
        out += [insert("accounts", "id, name", f"i, {e.cat(repr('account '), 'i')}", ACCOUNTS),
                insert("legal_holds", "id, account_id, released_at", f"i, i * {HOLD_EVERY}, NULL",
                       ACCOUNTS // HOLD_EVERY),
                insert("legal_holds", "id, account_id, released_at",
                       f"1000000 + i, i * {RELEASED_EVERY}, '2023-06-01 00:00:00'", ACCOUNTS // RELEASED_EVERY)]
        span = SPAN_DAYS * 86400
        start = START.strftime("%Y-%m-%d %H:%M:%S")

        def person(i):
            return (f"{e.cat(repr('User '), i)}, {e.cat(repr('user'), i, repr('@example.com'))}, "
                    f"{e.cat(repr('+1555'), e.right(e.cat(repr('0000000'), i), 7))}, "
                    f"substr({e.cat(repr('note-'), i, repr(' '), repr(FILLER))}, 1, {NOTE_CHARS})")

        correlated = e.at_seconds(start, e.idiv(f"(i - 1) * {span}", str(n)))
        if self.kind == "a":
            out.append(insert(self.tables[0], ", ".join(EVENT_COLUMNS),
                              f"i, ((i * 37) % {ACCOUNTS}) + 1, {correlated}, {person('i')}", n))
        elif self.kind == "b":
            uncorrelated = e.at_seconds(start, f"((i * 7919) % {SPAN_DAYS}) * 86400 + ((i * 104729) % 86400)")
            out.append(insert(self.tables[0], ", ".join(EVENT_COLUMNS),
                              f"{e.uuid('i')}, ((i * 37) % {ACCOUNTS}) + 1, {uncorrelated}, {person('i')}", n))
        elif self.kind == "cascade":
            n_orders = max(1, n // LINES_PER_ORDER)
            out.append(insert("orders", ", ".join(EVENT_COLUMNS),
                              f"i, ((i * 37) % {ACCOUNTS}) + 1, "
                              f"{e.at_seconds(start, e.idiv(f'(i - 1) * {span}', str(n_orders)))}, {person('i')}",
                              n_orders))
            out.append(insert("order_lines", "id, order_id, sku, note",
                              f"i, {e.idiv('i - 1', str(LINES_PER_ORDER))} + 1, {e.cat(repr('SKU-'), 'i % 997')}, "
                              f"substr({e.cat(repr('line-'), 'i', repr(' '), repr(FILLER + FILLER))}, 1, "
                              f"{NOTE_CHARS + 60})", n_orders * LINES_PER_ORDER))
        else:
            out.append(insert("logs_p", ", ".join(LOG_COLUMNS), f"i, {correlated}, {person('i')}", n))
        return out + self.indexes()


def months() -> list[tuple[str, str, str]]:
    """(name, first day, first day of the next month) for every month of the span."""
    out, y, m = [], START.year, START.month
    end = START + timedelta(days=SPAN_DAYS)
    while datetime(y, m, 1) <= end:
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        out.append((f"{y}{m:02d}", f"{y}-{m:02d}-01", f"{ny}-{nm:02d}-01"))
        y, m = ny, nm
    return out


FAMILIES = {
    "a": Family("a", "a", ("events_a",)),
    "b": Family("b", "b", ("events_b",)),
    "cascade": Family("cascade", "cascade", ("orders", "order_lines")),
    "parted": Family("parted", "parted", ("logs_p",)),
    "small": Family("small", "a", ("events_a",)),     # layout A at a smaller size: is memory flat in N?
}


def table_names(family: Family) -> list[str]:
    return ["accounts", "legal_holds", *family.tables]


# --- scenarios --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    family: str
    action: str               # delete | anonymize | cascade | partitioned
    fraction: float
    table: str                # the rule's table
    checked: tuple[tuple[str, tuple[str, ...]], ...]    # (table, columns) compared between contenders
    held: bool = True         # whether legal holds reach the table
    target: str = ""          # which column of the targets table this scenario is judged against

    @property
    def slug(self) -> str:
        """The rule's name: kebab-case, as a policy wants it."""
        return "-".join("".join(c if c.isalnum() else " " for c in self.name.lower()).split())

    @property
    def layout(self) -> str:
        return {"a": "A (bigint, correlated)", "b": "B (uuid, uncorrelated)", "cascade": "A (bigint, correlated)",
                "parted": "A, monthly partitions", "small": "A (bigint, correlated)"}[self.family]

    def raw(self, e) -> list[str]:
        """The one statement (two for the cascade) a DBA would write: the limit to measure against."""
        t = self.table
        if self.action == "anonymize":
            return [f"UPDATE {t} SET phone = {e.mask('phone', MASK_KEEP_LAST)}, "
                    f"name = CASE WHEN name IS NULL THEN NULL ELSE '{CONSTANT_NAME}' END WHERE {due(t)}"]
        if self.action == "cascade":
            return [f"DELETE FROM order_lines WHERE order_id IN (SELECT id FROM orders WHERE {due('orders')})",
                    f"DELETE FROM orders WHERE {due('orders')}"]
        return [f"DELETE FROM {t} WHERE {due(t, self.held)}"]

    def expected(self) -> list[str]:
        """One count per raw statement, on the fresh data: the rows it must change."""
        if self.action == "cascade":
            return [f"SELECT count(*) FROM order_lines WHERE order_id IN (SELECT id FROM orders WHERE {due('orders')})",
                    f"SELECT count(*) FROM orders WHERE {due('orders')}"]
        return [f"SELECT count(*) FROM {self.table} WHERE {due(self.table, self.held)}"]

    def protected(self) -> str | None:
        """Counts the due rows a hold protects: every contender must leave them all."""
        if not self.held:
            return None
        t = self.table
        return f"SELECT count(*) FROM {t} WHERE {t}.created_at <= :cutoff AND NOT ({HELD.format(t=t)})"

    def rule(self, name: str | None = None, strategy: str = "mask") -> str:
        action = "anonymize" if self.action == "anonymize" else "delete"
        text = (f'\n[[rules]]\nname = "{name or self.slug}"\ntable = "bench.{self.table}"\nclock = "created_at"\n'
                f'after = "{after_days(self.fraction)}d"\naction = "{action}"\nbasis = "bench"\n')
        if action == "anonymize":
            text += (f'columns.phone = {{ strategy = "mask", keep_last = {MASK_KEEP_LAST} }}\n'
                     f'columns.name = {{ strategy = "constant", value = "{CONSTANT_NAME}" }}\n')
        return text

    def tables_section(self, partitions: str | None = None) -> str:
        if self.action == "cascade":
            return '\n[tables."bench.order_lines"]\non_parent_delete = "delete"\n'
        if partitions:
            return f'\n[tables."bench.{self.table}"]\npartitions = "{partitions}"\n'
        return ""


_EV = tuple(EVENT_COLUMNS)
SCENARIOS = [
    Scenario("delete A 50%", "a", "delete", 0.5, "events_a", (("events_a", _EV),), target="delete"),
    Scenario("delete A 5%", "a", "delete", 0.05, "events_a", (("events_a", _EV),), target="delete"),
    Scenario("delete B 50%", "b", "delete", 0.5, "events_b", (("events_b", _EV),), target="delete"),
    Scenario("delete B 5%", "b", "delete", 0.05, "events_b", (("events_b", _EV),), target="delete"),
    Scenario("anonymize A 50%", "a", "anonymize", 0.5, "events_a", (("events_a", _EV),), target="anonymize"),
    Scenario("anonymize B 50%", "b", "anonymize", 0.5, "events_b", (("events_b", _EV),), target="anonymize"),
    Scenario("cascade 50%", "cascade", "cascade", 0.5, "orders",
             (("orders", _EV), ("order_lines", ("id", "order_id", "sku", "note"))), target="cascade"),
    Scenario("partitioned 50%", "parted", "partitioned", 0.5, "logs_p", (("logs_p", tuple(LOG_COLUMNS)),),
             held=False),
]


def policy(url: str, scenario: Scenario, *, rule: str | None = None, partitions: str | None = None) -> str:
    """The policy file: retention's defaults, but for a statement timeout a big count needs."""
    return (
        'version = 1\n\n[settings]\ntimezone = "UTC"\n'
        '# the counts read the whole table: at 10M rows the default 60 s could end them\n'
        'statement_timeout = "2h"\n\n'
        f'[databases.bench]\nurl = "{url}"\n\n'
        '[subjects.account]\ntable = "bench.accounts"\nkey = "id"\n\n'
        '[[holds]]\nname = "litigation"\ntable = "bench.legal_holds"\nsubject = "account"\n'
        'subject_column = "account_id"\nactive_where = { released_at = { is_null = true } }\n'
        + scenario.tables_section(partitions) + (rule if rule is not None else scenario.rule()))
