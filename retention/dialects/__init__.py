"""One class per database dialect, registered by SQLAlchemy's ``dialect.name``.

Capabilities are class attributes; SQL that differs between engines is a
method here, never an ``if dialect == ...`` elsewhere.  An engine's module is
imported the first time :func:`impl_for` meets that engine (``base.MODULES``).
"""

from __future__ import annotations

from retention.dialects.base import DialectImpl, impl_for, register

__all__ = ["DialectImpl", "impl_for", "register"]
