"""Anonymization strategies: examples from the contract, idempotency, checks,
and the promise that the SQL path and the Python path store the same thing."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
import math
import tomllib
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention import anonymize
from retention.anonymize import STRATEGIES, ColumnInfo, StrategyParamError, build
from retention.dialects import impl_for

KEY_ENV = {"RETENTION_HASH_KEY": "test-key-one"}


def bound(spec, env=KEY_ENV):
    strategy = build(spec)
    strategy.bind(env)
    return strategy


def gen(**params):
    return {"strategy": "generalize", **params}


def mask(**params):
    return {"strategy": "mask", **params}


# --------------------------------------------------------------------------- examples

@pytest.mark.parametrize("spec, value, expected", [
    ("null", "x", None),
    ({"strategy": "constant", "value": "deleted user"}, "Alice Li", "deleted user"),
    ({"strategy": "constant", "value": 0}, 41, 0),
    (mask(keep_first=4, keep_last=4), "4111111111111111", "4111********1111"),
    ("mask", "+33612345678", "********5678"),
    ("mask", "123", "***"),
    ("mask", "****", "****"),
    ("mask", "", ""),
    (mask(keep_first=2, keep_last=0, char="#"), "abcdef", "ab####"),
    (gen(to="year"), date(1987, 3, 14), date(1987, 1, 1)),
    (gen(to="month"), date(1987, 3, 14), date(1987, 3, 1)),
    (gen(to="day"), date(1987, 3, 14), date(1987, 3, 14)),
    (gen(to="year"), datetime(2021, 7, 19, 13, 45, 12, 5), datetime(2021, 1, 1)),
    (gen(to="month"), datetime(2021, 7, 19, 13, 45, 12, 5), datetime(2021, 7, 1)),
    (gen(to="day"), datetime(2021, 7, 19, 13, 45, 12, 5), datetime(2021, 7, 19)),
    # ISO text, as SQLite hands back dates from TEXT columns: the shape is kept
    (gen(to="year"), "1987-03-14", "1987-01-01"),
    (gen(to="month"), "2021-07-19 13:45:12.123456", "2021-07-01 00:00:00.000000"),
    (gen(to="day"), "2021-07-19T13:45", "2021-07-19T00:00"),
    (gen(to="year"), "2021-07-19T13:45:12+02:00", "2021-01-01T00:00:00+02:00"),
    (gen(step=10), 37, 30),
    (gen(step=10), -1, -10),
    (gen(step=10), 40, 40),
    (gen(step=0.5), Decimal("123.45"), Decimal("123.00")),
    (gen(step=0.5), Decimal("-0.05"), Decimal("-0.50")),
    (gen(step=1000), Decimal("52340.17"), Decimal("52000.00")),
    (gen(step=10), Decimal("1" + "0" * 399 + "3"), Decimal("1" + "0" * 400)),  # beyond float range
    (gen(step=0.5), 12.7, 12.5),
    (gen(step=0.1), 0.3, 0.3),  # 0.3 is the float nearest 3 * 0.1, so it is a multiple
    (gen(ipv4_prefix=16), "10.2.3.4", "10.2.0.0"),
    (gen(ipv4_prefix=16, ipv6_prefix=48), "2001:db8:1:2::5", "2001:db8:1::"),
    (gen(ipv4_prefix=16), "2001:db8:1:2::5", "2001:db8:1::"),  # IPv6 defaults to /48
    (gen(ipv6_prefix=64), "10.2.3.4", "10.2.3.0"),             # IPv4 defaults to /24
    # an IPv4-mapped address is an IPv4 client: the IPv4 prefix applies, the IPv6 one does not
    (gen(ipv4_prefix=16, ipv6_prefix=112), "::ffff:10.2.3.4", "::ffff:10.2.0.0"),
    (gen(ipv4_prefix=24, ipv6_prefix=48), "::ffff:10.2.3.4", "::ffff:10.2.3.0"),
    (gen(ipv4_prefix=8), "10.2.3.4/24", "10.0.0.0"),
    (gen(ipv4_prefix=8), "", ""),
    (gen(keep_prefix=3), "SW1A 1AA", "SW1"),
    (gen(keep_prefix=3), "SW", "SW"),
    ("redact_email", "alice@x.com", "a****@x.com"),
    ("redact_email", "alice.liddell@x.com", "a****@x.com"),   # at most four stars: long locals look alike
    ("redact_email", "al@x.com", "a*@x.com"),           # never longer than the input: fits its column
    ("redact_email", "abcde@x.com", "a****@x.com"),
    ("redact_email", "a@x.com", "*@x.com"),
    ("redact_email", "a****@x.com", "a****@x.com"),
    ("redact_email", "@x.com", "@x.com"),
    ("redact_email", 'a"b@c"@x.com', "a****@x.com"),   # split at the last @
    ("redact_email", "not-an-email", "************"),
    ("redact_email", "", ""),
])
def test_examples(spec, value, expected):
    out = bound(spec).apply(value)
    assert out == expected
    assert type(out) is type(expected)


def test_generalize_keeps_the_zone_and_recomputes_its_offset():
    berlin = ZoneInfo("Europe/Berlin")
    # summer time (+02:00) on the 31st, winter time (+01:00) at midnight before the switch
    out = build(gen(to="day")).apply(datetime(2024, 3, 31, 12, 0, tzinfo=berlin))
    assert out == datetime(2024, 3, 31, tzinfo=berlin)
    assert out.utcoffset().total_seconds() == 3600


@pytest.mark.parametrize("spec, value, error", [
    (gen(to="year"), "14/03/1987", ValueError),
    (gen(to="year"), "1987-02-30", ValueError),
    (gen(to="year"), 1987, TypeError),
    (gen(ipv4_prefix=16), "unknown", ValueError),
    (gen(ipv4_prefix=16), "fe80::1%eth0", ValueError),
    (gen(step=2.5), 7, ValueError),
    (gen(step=10), "37", TypeError),
    ("mask", 4111111111111111, TypeError),
    ("redact_email", 42, TypeError),
])
def test_values_a_strategy_cannot_handle_fail_without_echoing_them(spec, value, error):
    with pytest.raises(error) as info:
        build(spec).apply(value)
    assert str(value) not in str(info.value)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_null_stays_null(name):
    spec = {"strategy": "constant", "value": "x"} if name == "constant" else name
    spec = gen(to="year") if name == "generalize" else spec
    strategy = bound(spec)
    assert strategy.apply(None) is None
    assert strategy.done(None) is True


# --------------------------------------------------------------------------- hash

def test_hash_is_keyed_hmac_sha256_truncated_to_length():
    out = bound("hash").apply("a@x.com")
    digest = hmac.new(b"test-key-one", b"a@x.com", hashlib.sha256).hexdigest()
    assert out == "h_" + digest[:32]
    assert bound({"strategy": "hash", "length": 8}).apply("a@x.com") == "h_" + digest[:8]


def test_hash_is_deterministic_within_a_key_and_differs_across_keys():
    one, again = bound("hash"), bound("hash")
    other = bound("hash", {"RETENTION_HASH_KEY": "test-key-two"})
    assert one.apply("a@x.com") == again.apply("a@x.com")
    assert one.apply("a@x.com") != one.apply("b@x.com")
    assert one.apply("a@x.com") != other.apply("a@x.com")


@pytest.mark.parametrize("env", [{}, {"RETENTION_HASH_KEY": ""}])
def test_hash_refuses_to_run_without_a_key(env):
    with pytest.raises(StrategyParamError) as info:
        bound("hash", env)
    assert info.value.key == "key_env"
    assert info.value.message == ("environment variable RETENTION_HASH_KEY is not set; "
                                  "the hash strategy refuses to run without a key")


def test_hash_key_env_names_the_variable():
    strategy = build({"strategy": "hash", "key_env": "SHOP_KEY"})
    with pytest.raises(StrategyParamError, match="SHOP_KEY is not set"):
        strategy.bind(KEY_ENV)
    strategy.bind({"SHOP_KEY": "k"})
    assert strategy.apply("x") == "h_" + hmac.new(b"k", b"x", hashlib.sha256).hexdigest()[:32]


def test_hash_used_before_bind_refuses():
    with pytest.raises(RuntimeError, match="bind"):
        build("hash").apply("a@x.com")


def test_hash_done_recognises_exactly_its_own_output_form():
    strategy = bound({"strategy": "hash", "length": 16})
    assert strategy.done(strategy.apply("a@x.com"))
    assert strategy.done(None)
    for not_done in ["a@x.com", "h_" + "a" * 15, "h_" + "a" * 17, "h_" + "A" * 16, "h_" + "g" * 16,
                     "x_" + "a" * 16, "h_" + "a" * 16 + "\n", 12]:
        assert not strategy.done(not_done), not_done


def test_descriptions_never_show_the_key():
    secret = "s3cret-key-that-must-not-leak"
    strategy = bound({"strategy": "hash", "length": 12}, {"RETENTION_HASH_KEY": secret})
    for text in (strategy.describe(), repr(strategy), str(strategy)):
        assert secret not in text
    assert strategy.describe() == "hash(length=12)"
    assert build("hash").describe() == "hash"
    assert build(mask(keep_last=4)).describe() == "mask(keep_last=4)"


# --------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("spec, key", [
    (mask(keep_last=-1), "keep_last"),
    (mask(keep_first="2"), "keep_first"),
    (mask(keep_last=True), "keep_last"),
    (mask(char="**"), "char"),
    (mask(char=""), "char"),
    (mask(keep=4), "keep"),
    ({"strategy": "null", "value": 1}, "value"),
    ({"strategy": "constant"}, "value"),
    ({"strategy": "constant", "value": [1]}, "value"),
    ({"strategy": "hash", "length": 0}, "length"),
    ({"strategy": "hash", "length": 65}, "length"),
    ({"strategy": "hash", "key_env": ""}, "key_env"),
    (gen(), "to"),
    (gen(to="week"), "to"),
    (gen(to="year", step=10), "step"),
    (gen(step=0), "step"),
    (gen(step=-5), "step"),
    (gen(step="ten"), "step"),
    (gen(ipv4_prefix=33), "ipv4_prefix"),
    (gen(ipv6_prefix=129), "ipv6_prefix"),
    (gen(keep_prefix=-1), "keep_prefix"),
    ({"keep_last": 4}, "strategy"),
    ("nope", "strategy"),
    (42, "strategy"),
])
def test_invalid_parameters_name_the_key(spec, key):
    with pytest.raises(StrategyParamError) as info:
        build(spec)
    assert info.value.key == key
    assert key in info.value.message
    assert str(info.value) == info.value.message


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(StrategyParamError) as info:
        build("x")
    assert info.value.message == ("unknown strategy 'x'; choose from: "
                                  "constant, generalize, hash, mask, null, redact_email")


def test_registry_and_build():
    assert set(STRATEGIES) == {"null", "constant", "hash", "mask", "generalize", "redact_email"}
    for name, cls in STRATEGIES.items():
        assert cls.name == name
    strategy = build({"strategy": "mask", "keep_last": 2})
    assert isinstance(strategy, STRATEGIES["mask"])
    assert strategy.apply("123456") == "****56"


def _toml_examples(doc: str) -> list[str]:
    # the indented block after "TOML::" in a docstring
    block = doc.split("TOML::", 1)[1] if "TOML::" in doc else ""
    return [line.strip() for line in inspect.cleandoc("x\n" + block).splitlines()[1:] if line.strip()]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_docstring_examples_build(name):
    lines = _toml_examples(STRATEGIES[name].__doc__)
    assert lines, f"{name} has no TOML example in its docstring"
    columns = tomllib.loads("\n".join(lines))["columns"]
    for spec in columns.values():
        strategy = build(spec)
        assert strategy.name == name


def test_module_docstring_examples_build():
    doc = anonymize.__doc__
    lines = [line.strip() for line in doc.splitlines() if line.strip().startswith("columns.")]
    assert len(lines) >= 2
    for spec in tomllib.loads("\n".join(lines))["columns"].values():
        build(spec)


# --------------------------------------------------------------------------- conflicts

def col(type_=None, **kw):
    return ColumnInfo(name=kw.pop("name", "contact"), type=type_ if type_ is not None else sa.String(100), **kw)


@pytest.mark.parametrize("spec, column, words", [
    ("null", col(nullable=False), ["NOT NULL", "'null'"]),
    ({"strategy": "constant", "value": "deleted"}, col(unique=True), ["UNIQUE", "'value'"]),
    ({"strategy": "constant", "value": "deleted user"}, col(sa.String(5), length=5), ["5", "'value'"]),
    ({"strategy": "constant", "value": "x"}, col(sa.Integer()), ["INTEGER", "'value'"]),
    ({"strategy": "constant", "value": 0}, col(sa.String(10)), ["VARCHAR", "'value'"]),
    ({"strategy": "hash"}, col(sa.String(20), length=20), ["20", "34", "'length'"]),
    ({"strategy": "hash"}, col(sa.Integer()), ["INTEGER", "'hash'"]),
    ({"strategy": "hash", "length": 8}, col(unique=True), ["UNIQUE", "'length'"]),
    ("mask", col(sa.BigInteger()), ["BIGINT", "'mask'"]),
    ("mask", col(unique=True), ["UNIQUE", "'keep_first'"]),
    ("redact_email", col(sa.Date()), ["DATE", "'redact_email'"]),
    (gen(to="year"), col(sa.Integer()), ["INTEGER", "'to'"]),
    (gen(step=10), col(sa.String(10)), ["VARCHAR", "'step'"]),
    (gen(step=0.5), col(sa.Integer()), ["integers", "'step'"]),
    (gen(step=0.001), col(sa.Numeric(10, 2)), ["2 decimal places", "'step'"]),
    (gen(ipv4_prefix=16), col(sa.Integer()), ["INTEGER", "'ipv4_prefix'"]),
    (gen(keep_prefix=3), col(sa.Date()), ["DATE", "'keep_prefix'"]),
    (gen(keep_prefix=3), col(unique=True), ["UNIQUE", "'keep_prefix'"]),
    ("hash", col(primary_key=True, unique=True), ["primary key"]),
    ("null", col(sa.Integer(), primary_key=True, unique=True), ["primary key"]),
])
def test_conflicts_are_reported_naming_column_and_parameter(spec, column, words):
    problems = build(spec).conflicts(column)
    assert len(problems) >= 1
    text = " ".join(problems)
    assert "'contact'" in text
    for word in words:
        assert word in text


@pytest.mark.parametrize("spec, column", [
    ("null", col(unique=True)),                                  # NULLs never collide
    ("hash", col(unique=True)),
    ({"strategy": "hash", "length": 16}, col(unique=True)),
    ({"strategy": "hash", "length": 16}, col(sa.String(18), length=18)),
    ({"strategy": "constant", "value": "deleted user"}, col(sa.String(12), length=12)),
    ({"strategy": "constant", "value": 0}, col(sa.Numeric(10, 2))),
    ({"strategy": "constant", "value": date(2000, 1, 1)}, col(sa.Date())),
    ("mask", col(sa.Text())),
    (gen(to="year"), col(sa.Date())),
    (gen(to="month"), col(sa.DateTime(timezone=True))),
    (gen(to="year"), col(sa.Text())),                            # ISO text (SQLite)
    (gen(step=0.5), col(sa.Numeric(10, 2))),
    (gen(step=5), col(sa.Integer())),
    (gen(step=0.25), col(sa.Float())),
    (gen(ipv4_prefix=16), col(sa.String(45))),
    ("mask", col(sa.types.NullType())),                          # type unknown: don't guess
])
def test_no_conflict_where_the_strategy_fits(spec, column):
    assert build(spec).conflicts(column) == []


# --------------------------------------------------------------------------- idempotency

text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=24)
digits = st.text("0123456789", max_size=20)
emails = st.one_of(st.emails(), text, st.builds(lambda a, b: f"{a}@{b}", text, text))
iso_text = st.one_of(
    st.dates().map(date.isoformat),
    st.datetimes().map(lambda d: d.isoformat(" ")),
    st.datetimes().map(lambda d: d.isoformat(timespec="minutes")),
    st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
)
when = st.one_of(st.dates(), st.datetimes(), iso_text,
                 st.datetimes(timezones=st.sampled_from([ZoneInfo("UTC"), ZoneInfo("Europe/Berlin")])))
ips = st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=6).map(str))
floats = st.floats(allow_nan=False, allow_infinity=False)

IDEMPOTENCY = [
    ("null", text),
    ({"strategy": "constant", "value": "deleted user"}, text),
    ("mask", st.one_of(text, digits)),
    (mask(keep_first=4, keep_last=4), st.one_of(text, digits)),
    (mask(keep_first=2, keep_last=0, char="#"), text),
    ("redact_email", emails),
    (gen(to="year"), when),
    (gen(to="month"), when),
    (gen(to="day"), when),
    (gen(step=10), st.integers()),
    (gen(step=7), st.integers()),
    (gen(step=0.5), st.decimals(allow_nan=False, allow_infinity=False, places=3)),
    (gen(step="0.01"), st.decimals(allow_nan=False, allow_infinity=False)),
    (gen(step=0.1), floats),
    (gen(step=3), floats),
    (gen(ipv4_prefix=16, ipv6_prefix=48), ips),
    (gen(ipv4_prefix=29, ipv6_prefix=121), ips),
    (gen(keep_prefix=3), text),
    ("hash", st.one_of(text, emails)),
]


@pytest.mark.parametrize("spec, values", IDEMPOTENCY, ids=lambda x: str(x) if not isinstance(x, st.SearchStrategy) else "")
@given(data=st.data())
def test_a_second_run_has_nothing_to_do(spec, values, data):
    strategy = bound(spec)
    value = data.draw(values)
    out = strategy.apply(value)
    assert strategy.done(out)
    if strategy.name != "hash":
        again = strategy.apply(out)
        assert again == out
        assert type(again) is type(out)
    if strategy.name == "generalize":
        assert type(out) is type(value)  # generalize keeps the column's type


@given(value=floats, step=st.sampled_from(["0.1", "0.25", "3", "1e-7", "1000"]))
def test_float_step_floors_to_the_nearest_multiple_below(value, step):
    out = build(gen(step=step)).apply(value)
    assert out <= value
    # within one step (or one float spacing, when step is finer than that)
    assert value - out <= max(float(step), math.ulp(value)) * (1 + 1e-9)


# --------------------------------------------------------------------------- SQL path vs Python path

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def backend_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'anonymize.db'}"
    if request.param == "mariadb":
        return request.getfixturevalue("mariadb_url")
    return request.getfixturevalue("pg_url")


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("s", sa.String(300)),
        sa.Column("d", sa.Date),
        sa.Column("dt", sa.DateTime),
        sa.Column("n", sa.BigInteger),
        sa.Column("num", sa.Numeric(14, 2)),
        sa.Column("f", sa.Float),
    )


@pytest.fixture
def db(backend_url):
    engine = sa.create_engine(backend_url)
    metadata = sa.MetaData()
    tables = (_table(metadata, "via_sql"), _table(metadata, "via_python"))
    metadata.create_all(engine)
    try:
        yield engine, tables
    finally:
        engine.dispose()


EDGE_TEXT = ["", "a", "@", "@@", "a@", "@x.com", "alice@example.com", "a@b@x.com", "ü@é.de", "4111111111111111",
             "SW1A 1AA", "  padded  ", "日本語テキスト", "h_" + "0" * 32]
texts = st.lists(st.one_of(text, digits, emails, st.sampled_from(EDGE_TEXT), st.none()), max_size=10)
COLUMN_VALUES = {
    "s": texts,
    "d": st.lists(st.one_of(st.dates(), st.none()), max_size=10),
    "dt": st.lists(st.one_of(st.datetimes(), st.none()), max_size=10),
    "n": st.lists(st.one_of(st.integers(-2**62, 2**62), st.none()), max_size=10),
    "num": st.lists(st.one_of(st.decimals(-10**11, 10**11, places=2), st.none()), max_size=10),
}

ALL_ENGINES = {"sqlite", "postgresql", "mariadb", "mysql"}
# (strategy, column, {dialect: has a SQL path})
SQL_CASES = [
    ("null", "s", ALL_ENGINES),
    ({"strategy": "constant", "value": "deleted user"}, "s", ALL_ENGINES),
    ({"strategy": "constant", "value": 0}, "n", ALL_ENGINES),
    ("mask", "s", ALL_ENGINES),
    (mask(keep_first=4, keep_last=4), "s", ALL_ENGINES),
    (mask(keep_first=2, keep_last=0, char="é"), "s", ALL_ENGINES),
    ("redact_email", "s", ALL_ENGINES),
    (gen(keep_prefix=3), "s", ALL_ENGINES),
    (gen(to="year"), "d", ALL_ENGINES),
    (gen(to="month"), "d", ALL_ENGINES),
    (gen(to="day"), "d", ALL_ENGINES),
    (gen(to="year"), "dt", ALL_ENGINES),
    (gen(to="month"), "dt", ALL_ENGINES),
    (gen(to="day"), "dt", ALL_ENGINES),
    (gen(step=10), "n", ALL_ENGINES),
    (gen(step=7), "n", ALL_ENGINES),
    (gen(step=0.5), "num", ALL_ENGINES - {"sqlite"}),   # SQLite keeps NUMERIC as binary floats
    (gen(step=1000), "num", ALL_ENGINES - {"sqlite"}),
    (gen(step=0.5), "f", set()),              # floats: Python only, see Generalize._floor
    (gen(to="year"), "s", set()),             # ISO text: Python only
    (gen(ipv4_prefix=16), "s", set()),
    ("hash", "s", set()),
]


URLS = {"sqlite": "sqlite://", "postgresql": "postgresql+psycopg://", "mariadb": "mariadb+pymysql://",
        "mysql": "mysql+pymysql://"}


def _impl(dialect_name):
    return impl_for(sa.create_engine(URLS[dialect_name]))  # no connection is made


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql", "mariadb", "mysql"])
@pytest.mark.parametrize("spec, column, has_sql", SQL_CASES, ids=lambda x: str(x) if not isinstance(x, set) else "")
def test_which_strategies_run_in_sql(dialect_name, spec, column, has_sql):
    table = _table(sa.MetaData(), "t")
    strategy = bound(spec)
    assert (strategy.sql(table.c[column], _impl(dialect_name)) is not None) == (dialect_name in has_sql)


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql", "mariadb", "mysql"])
def test_sql_binds_values_instead_of_formatting_them(dialect_name):
    table = _table(sa.MetaData(), "t")
    impl = _impl(dialect_name)
    dialect = sa.create_engine(URLS[dialect_name]).dialect
    for spec, marker in [({"strategy": "constant", "value": "o'brien deleted"}, "o'brien deleted"),
                         (mask(char="~"), "~")]:
        compiled = build(spec).sql(table.c.s, impl).compile(dialect=dialect)
        assert marker not in str(compiled)
        assert marker in compiled.params.values()


def _stored(conn, table, column, dialect_name):
    c = table.c[column]
    cols = [table.c.id, c, sa.cast(c, sa.Text)]
    if dialect_name == "sqlite":
        cols.append(sa.func.typeof(c))  # same text, and the same storage class
    return [tuple(row) for row in conn.execute(sa.select(*cols).order_by(table.c.id))]


def _assert_done_sql_agrees(conn, table, column, strategy, impl):
    c = table.c[column]
    rows = conn.execute(sa.select(c, strategy.done_sql(c, impl)).order_by(table.c.id)).all()
    for value, done in rows:
        assert done is not None
        assert bool(done) == strategy.done(value)


@pytest.mark.parametrize("spec, column, has_sql", SQL_CASES, ids=lambda x: str(x) if not isinstance(x, set) else "")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sql_and_python_store_identical_results(db, spec, column, has_sql, data):
    engine, (via_sql, via_python) = db
    impl = impl_for(engine)
    dialect_name = engine.dialect.name
    strategy = bound(spec)
    if dialect_name not in has_sql:
        assert strategy.sql(via_sql.c[column], impl) is None
        return
    values = data.draw(COLUMN_VALUES[column])
    rows = [{c.name: None for c in via_sql.columns} | {"id": i, column: v} for i, v in enumerate(values)]
    with engine.begin() as conn:
        for table in (via_sql, via_python):
            conn.execute(table.delete())
            if rows:
                conn.execute(table.insert(), rows)
        _assert_done_sql_agrees(conn, via_sql, column, strategy, impl)

        c = via_sql.c[column]
        conn.execute(via_sql.update().values({column: strategy.sql(c, impl)}))

        read = conn.execute(sa.select(via_python.c.id, via_python.c[column])).all()
        changes = [{"key": key, "new": strategy.apply(v)} for key, v in read if not strategy.done(v)]
        if changes:
            conn.execute(via_python.update().where(via_python.c.id == sa.bindparam("key"))
                         .values({column: sa.bindparam("new")}), changes)

        assert _stored(conn, via_sql, column, dialect_name) == _stored(conn, via_python, column, dialect_name)
        if strategy.idempotent:
            # a batch writes sql() over a done value without testing it first: byte for byte the same
            before = _stored(conn, via_sql, column, dialect_name)
            conn.execute(via_sql.update().values({column: strategy.sql(c, impl)}))
            assert _stored(conn, via_sql, column, dialect_name) == before
        # and a second run finds nothing to do, by either test
        _assert_done_sql_agrees(conn, via_sql, column, strategy, impl)
        assert conn.execute(sa.select(sa.func.count()).where(sa.not_(strategy.done_sql(c, impl)))).scalar() == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(text, emails, st.none()), max_size=10), hashed=st.lists(text, max_size=5))
def test_hash_done_sql_agrees_with_done(db, values, hashed):
    engine, (table, _) = db
    impl = impl_for(engine)
    strategy = bound("hash")
    all_values = values + [strategy.apply(v) for v in hashed] + ["h_" + "A" * 32, "h_" + "a" * 31, "h_" + "a" * 33]
    rows = [{c.name: None for c in table.columns} | {"id": i, "s": v} for i, v in enumerate(all_values)]
    with engine.begin() as conn:
        conn.execute(table.delete())
        conn.execute(table.insert(), rows)
        _assert_done_sql_agrees(conn, table, "s", strategy, impl)


@pytest.mark.postgresql
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(addresses=st.lists(st.ip_addresses(v=6), max_size=20))
def test_ipv6_text_is_the_text_postgresql_prints(pg_url, addresses):
    # Stored IPv6 text must not depend on the Python version (3.13 changed str()
    # for IPv4-mapped addresses); we pin PostgreSQL's inet text form.
    edge = ["::", "::1", "::ffff:10.2.3.4", "::10.2.3.4", "::1:0", "::ffff:0:0", "1:0:0:1:0:0:0:1",
            "1:0:1:0:1:0:1:0", "2001:db8::", "fe80::1:0:0:1", "0:0:1::"]
    texts = edge + [str(a) for a in addresses]
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            printed = [conn.execute(sa.text("SELECT host(CAST(:a AS inet))"), {"a": t}).scalar() for t in texts]
    finally:
        engine.dispose()
    ours = [build(gen(ipv4_prefix=32, ipv6_prefix=128)).apply(t) for t in texts]
    assert ours == printed
    assert all(ipaddress.ip_address(o) == ipaddress.ip_address(t) for o, t in zip(ours, texts))



@pytest.mark.postgresql
@pytest.mark.parametrize("unit", ["year", "month", "day"])
def test_timestamptz_truncates_in_the_session_zone(pg_url, unit):
    # date_trunc cuts in the session zone; psycopg hands Python the same zone, so
    # both paths agree, also on days that start in another offset than they end.
    engine = sa.create_engine(pg_url, connect_args={"options": "-c timezone=Europe/Berlin"})
    metadata = sa.MetaData()
    tables = [sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                       sa.Column("ts", sa.DateTime(timezone=True))) for name in ("tz_sql", "tz_python")]
    utc = ZoneInfo("UTC")
    instants = [datetime(2024, 3, 31, 12, tzinfo=utc), datetime(2024, 10, 27, 1, 30, tzinfo=utc),
                datetime(2023, 12, 31, 23, 30, tzinfo=utc), datetime(2024, 6, 30, 22, 15, tzinfo=utc), None]
    strategy = build(gen(to=unit))
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            for table in tables:
                conn.execute(table.insert(), [{"id": i, "ts": v} for i, v in enumerate(instants)])
            via_sql, via_python = tables
            conn.execute(via_sql.update().values(ts=strategy.sql(via_sql.c.ts, impl_for(conn))))
            for key, value in conn.execute(sa.select(via_python.c.id, via_python.c.ts)).all():
                conn.execute(via_python.update().where(via_python.c.id == key).values(ts=strategy.apply(value)))
            stored = [conn.execute(sa.select(sa.cast(t.c.ts, sa.Text)).order_by(t.c.id)).scalars().all()
                      for t in tables]
    finally:
        engine.dispose()
    assert stored[0] == stored[1]
    assert stored[0][0] == {"year": "2024-01-01 00:00:00+01", "month": "2024-03-01 00:00:00+01",
                            "day": "2024-03-31 00:00:00+01"}[unit]
