"""One class per database dialect, registered by SQLAlchemy's ``dialect.name``.

Capabilities are class attributes; SQL that differs between engines is a
method here, never an ``if dialect == ...`` elsewhere.
"""

from __future__ import annotations

from retention.dialects.base import DialectImpl, impl_for, register
from retention.dialects import sqlite as _sqlite  # noqa: F401  (registers)
from retention.dialects import postgresql as _postgresql  # noqa: F401  (registers)
from retention.dialects import mysql as _mysql  # noqa: F401  (registers "mysql" and "mariadb")

__all__ = ["DialectImpl", "impl_for", "register"]
