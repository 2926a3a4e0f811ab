"""Errors as a report may show them: never a row value."""

from __future__ import annotations

import re

from retention.errors import RetentionError


class StrategyError(RetentionError):
    """A strategy met a value it cannot handle (not an IP address, a date it cannot read...)."""


def describe_error(e: Exception) -> str:
    """The error's class, SQLSTATE and, when the database itself wrote it, its first line.

    Row values must never reach a report or a log, and database errors can
    carry them in three ways, each closed here:

    * ``DETAIL`` and ``CONTEXT`` lines (``Failing row contains (...)``, the
      statement a trigger ran): only the first line is ever used;
    * the application's own code (a trigger, a function, ``RAISE``/``SIGNAL``)
      can write any message under any SQLSTATE (``USING ERRCODE = '23514'``):
      such errors, recognised by the call stack the database reports with them
      (PostgreSQL's ``CONTEXT``, SQLite's trigger constraint code, MySQL's
      signal error numbers), show no text at all;
    * the database's own messages about data (SQLSTATE class 22: ``invalid
      input syntax for type integer: "..."``) quote the value: only the text
      before the quote is kept, and quoted literals are elided everywhere.

    A strategy's own error may quote the value it choked on, so only its class is shown.
    """
    if isinstance(e, StrategyError):
        return str(e)
    orig = getattr(e, "orig", None) or e
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    label = f"{type(orig).__name__}{f' [{code}]' if code else ''}"
    if _raised_by_application_code(orig, code):
        return f"{label}: raised by a trigger or function in the database (message not shown: it may quote row values)"
    args = getattr(orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]      # PyMySQL: (error number, message); its str() quotes the whole message
    else:
        text = str(orig)
    first = (text.strip().splitlines() or [""])[0]
    first = first.split("[SQL:")[0].strip()
    # a quoted literal can be a row value (SQLite: "... with text 'José@...'"); so can a
    # double-quoted one in PostgreSQL's data errors (class 22: 'invalid input syntax: "..."')
    first = re.sub(r"'.*'", "'…'", first)
    if code and str(code).startswith("22"):
        first = re.sub(r'".*"', '"…"', first).split(": ", 1)[0]
    return f"{label}: {first}"


#: MySQL/MariaDB error numbers of SIGNAL/RESIGNAL: a message the application wrote
_SIGNAL_ERRNOS = frozenset({1642, 1643, 1644})


def _raised_by_application_code(orig: BaseException, code) -> bool:
    """Whether the error was raised by code the application wrote, whose message may say anything."""
    if code and str(code).upper().startswith("P0"):       # PL/pgSQL RAISE's own class
        return True
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "context", None):
        # PostgreSQL reports a call stack (a trigger, a function, a DO block) with every error
        # raised inside one, whatever SQLSTATE it chose; its own statement-level errors have none
        return True
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_TRIGGER":   # RAISE(ABORT, ...)
        return True
    args = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _SIGNAL_ERRNOS
