"""``where_sql``: an operator's SQL condition, parsed for the engine and regenerated.

The job embeds the condition as one term: ``... AND (<where_sql>) AND NOT
(<protected>)``.  Text that the database reads differently from any checker
(SQLite's ``[...]`` and backtick identifiers, PostgreSQL's dollar quotes and
``E''`` strings, comments) could close that parenthesis and detach the rule
from its holds and floors.  So the text is parsed with sqlglot for the
database's own dialect, checked as a tree, and the SQL that sqlglot
*regenerates from the tree* is what runs: whatever the operator wrote, the
database receives one expression whose parentheses the parser placed.

What is accepted: exactly one expression, usable as a condition, of plain
columns, literals, operators and function calls, plus read-only subqueries
(``EXISTS (SELECT ...)``, ``id IN (SELECT ...)``), which are how a condition
on other tables is written.  Refused: statements (``;``, DML, DDL, anything
sqlglot can only keep as an opaque command), a bare ``SELECT`` or set
operation at the top, comments, row locks, and any parameter other than
``:now`` and ``:now_minus_<duration>``.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass

from retention.durations import DurationError, parse_duration
from retention.lazy import lazy

# sqlglot takes a tenth of a second to import: only a policy with where_sql text pays for it
sqlglot = lazy("sqlglot")
exp = lazy("sqlglot.expressions")
errors = lazy("sqlglot.errors")

#: SQLAlchemy backend name -> sqlglot dialect (names that agree need no entry)
_DIALECTS = {"postgresql": "postgres", "mariadb": "mysql"}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def _statements() -> tuple[type, ...]:
    """Nodes that write, change the schema, or run something sqlglot could not parse."""
    return (exp.DML, exp.DDL, exp.Command, exp.Merge, exp.Copy, exp.Pragma, exp.Transaction, exp.Set, exp.Into)


class WhereSqlError(ValueError):
    """Why a ``where_sql`` text is refused; the message says what to write instead."""


@dataclass(frozen=True)
class WhereSql:
    """A checked condition: ``sql`` with ``:name`` bind markers for ``params`` only."""

    sql: str
    params: tuple[str, ...]


def sqlglot_dialect(backend: str) -> str:
    """The sqlglot dialect for a SQLAlchemy backend name (``make_url(url).get_backend_name()``)."""
    return _DIALECTS.get(backend, backend)


def param_duration(name: str):
    """The period of a ``now_minus_<duration>`` parameter, or None for ``now``."""
    if name == "now":
        return None
    return parse_duration(name[len("now_minus_"):])


def compile_where_sql(text: str, backend: str) -> WhereSql:
    """Parse ``text`` for ``backend`` and regenerate it; raise :class:`WhereSqlError` if refused.

    >>> compile_where_sql("[status] = 1 AND birth_date > :now_minus_18y", "sqlite")
    WhereSql(sql='"status" = 1 AND birth_date > :now_minus_18y', params=('now_minus_18y',))
    """
    try:
        return _compile(text, backend)
    except RecursionError:
        raise WhereSqlError("is nested too deeply to be read") from None


def _compile(text: str, backend: str) -> WhereSql:
    dialect = sqlglot_dialect(backend)
    if not text.strip():
        raise WhereSqlError("is empty; write a condition such as \"status = 'closed'\" or remove the key")
    try:
        tokens = sqlglot.tokenize(text, read=dialect)
    except errors.SqlglotError as e:
        raise WhereSqlError(f"cannot be read as {dialect} SQL: {_first_line(e)}") from None
    except ValueError:      # an unknown dialect name
        raise WhereSqlError(f"cannot be checked: no SQL dialect is known for '{backend}'") from None
    if any(t.comments for t in tokens):
        raise WhereSqlError("has a comment ('--' or '/* */'); one boolean expression only")
    if any(t.token_type == sqlglot.TokenType.SEMICOLON for t in tokens):
        raise WhereSqlError("has a ';'; one boolean expression only, not statements")
    try:
        trees = sqlglot.parse(text, read=dialect, error_level=errors.ErrorLevel.IMMEDIATE)
    except errors.SqlglotError as e:
        raise WhereSqlError(f"is not one {dialect} SQL expression: {_first_line(e)}") from None
    if len(trees) != 1 or trees[0] is None:
        raise WhereSqlError("must be one boolean expression")
    tree = trees[0]
    if not isinstance(tree, exp.Condition) or isinstance(tree, (exp.Query, *_statements())):
        raise WhereSqlError(f"must be one boolean expression, not a {type(tree).__name__.upper()} statement")
    params = _check(tree)
    # bind markers: placeholders become unique plain names, then ':name' once the SQL is text
    marker = f"retention_param_{uuid.uuid4().hex}_"
    tree = tree.transform(lambda n: exp.column(marker + n.this) if isinstance(n, exp.Placeholder) else n)
    try:
        sql = tree.sql(dialect=dialect, comments=False, unsupported_level=errors.ErrorLevel.RAISE)
    except errors.SqlglotError as e:
        raise WhereSqlError(f"cannot be written back as {dialect} SQL: {_first_line(e)}") from None
    # SQLAlchemy's text() reads ':word' as a bind parameter: escape every colon the parser
    # left (inside literals, casts), then turn the markers into the real parameters
    sql = re.sub(r":(?=[\w$])", r"\\:", sql)
    sql = re.sub(re.escape(marker) + r"(\w+)", r":\1", sql)
    return WhereSql(sql, tuple(sorted(params)))


def _check(tree: exp.Expression) -> set[str]:
    params: set[str] = set()
    for node in tree.walk():
        if isinstance(node, _statements()):
            raise WhereSqlError(f"must be one boolean expression; it contains a {type(node).__name__.upper()}")
        if isinstance(node, exp.Lock):
            raise WhereSqlError("takes row locks (FOR UPDATE/SHARE); a condition only reads")
        if isinstance(node, (exp.Parameter, exp.SessionParameter)):
            raise WhereSqlError(f"has a parameter '{node.sql()}'; only :now and :now_minus_<duration> are bound")
        if isinstance(node, exp.Placeholder):
            name = node.args.get("this")
            if not isinstance(name, str) or not name:
                raise WhereSqlError("has an anonymous placeholder ('?'); only :now and :now_minus_<duration> are bound")
            if name != "now" and not name.startswith("now_minus_"):
                raise WhereSqlError(f"has an unknown parameter ':{name}'; only :now and :now_minus_<duration> are bound")
            try:
                param_duration(name)
            except DurationError as e:
                raise WhereSqlError(f":{name}: {e}") from None
            params.add(name)
        if isinstance(node, exp.Identifier) and not node.quoted and not _PLAIN.match(node.name):
            # e.g. SQLite reads '$x' as a parameter where the parser sees a column
            raise WhereSqlError(f"has a name '{node.name}' that must be quoted to mean a column")
    return params


def _first_line(e: Exception) -> str:
    # sqlglot underlines the offending token with terminal escapes: keep the words only
    return re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines()[0].strip()
