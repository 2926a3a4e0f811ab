"""Statements as ``--sql`` shows them: with their values, except values computed from row data."""

from __future__ import annotations


def show_statement(statement: str, parameters, executemany: bool, names: tuple | None = None) -> str:
    """One statement as sent, with its values; values computed from row data are not shown.

    ``names`` are the parameters' names in order where the driver takes them by
    position (SQLite), so computed values are recognised there too.
    """
    text = statement.strip().rstrip(";") + ";"
    rows = list(parameters) if executemany else [parameters]
    if not rows or rows == [None] or rows == [()] or rows == [{}]:
        return text
    first = rows[0]
    if names is not None and not isinstance(first, dict) and len(names) == len(first):
        first = dict(zip(names, first))
    if isinstance(first, dict):
        values = ", ".join(f"{k} = {'<computed from the row>' if k.startswith('v_') else _value(v)}"
                           for k, v in first.items())
    else:
        values = ", ".join(_value(v) for v in first)
    many = f" (and {len(rows) - 1} more rows like it)" if len(rows) > 1 else ""
    return f"{text}\n-- values: {values}{many}"


def _value(v) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "x'" + bytes(v).hex() + "'"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, str):
        return repr(v)
    return str(v)
