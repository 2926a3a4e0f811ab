"""Database drivers are optional extras: name the one to install when it is missing.

An SQLite user installs ``retention`` alone; PostgreSQL needs
``retention[postgresql]`` (psycopg 3) and MySQL/MariaDB ``retention[mysql]``
(PyMySQL).  A missing driver is a problem of the environment, not of the
policy file, so it exits 1 like an unreachable database.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from retention.errors import RetentionError

#: SQLAlchemy driver name -> (the extra that installs it, the engine it serves)
EXTRAS = {
    "psycopg": ("postgresql", "PostgreSQL"),
    "pymysql": ("mysql", "MySQL/MariaDB"),
}
#: drivers SQLAlchemy picks for a bare scheme, which this package does not ship
SUPPORTED = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


class MissingDriver(RetentionError):
    """The URL's database driver is not installed (exit 1: install the extra the message names)."""

    exit_code = 1


def missing_driver_message(url: URL, error: ImportError) -> str:
    """What to install (or which URL scheme to write) when the URL's driver cannot be imported."""
    driver = url.get_driver_name()
    backend = url.get_backend_name()
    if driver in EXTRAS:
        extra, engine = EXTRAS[driver]
        return (f"the {engine} driver '{driver}' is not installed ({error}): "
                f"install it with pip install 'retention[{extra}]'")
    if backend in SUPPORTED:
        extra = "postgresql" if backend == "postgresql" else "mysql"
        return (f"the driver '{driver}' is not installed, and retention ships another one: write the URL as "
                f"{SUPPORTED[backend]}://... and install it with pip install 'retention[{extra}]'")
    return f"the database driver '{driver}' for '{backend}' is not installed ({error})"


def create_engine(url: str | URL, **kwargs) -> sa.Engine:
    """``sa.create_engine``, with a :class:`MissingDriver` naming the extra when the driver is absent."""
    try:
        return sa.create_engine(url, **kwargs)
    except ImportError as e:       # SQLAlchemy imports the driver module here
        raise MissingDriver(missing_driver_message(make_url(url), e)) from None
