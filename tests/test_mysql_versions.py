"""MySQL and MariaDB servers by version: what the dialect reads from the server, and what it refuses."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from retention.dialects.mysql import server_version, unsupported_server


@pytest.mark.parametrize("text, expected", [
    ("8.0.36", ("MySQL", (8, 0, 36))),
    ("8.4.2-commercial", ("MySQL", (8, 4, 2))),
    ("5.7.44-log", ("MySQL", (5, 7, 44))),
    ("10.11.6-MariaDB-0+deb12u1", ("MariaDB", (10, 11, 6))),
    # what MariaDB tells clients that expect a MySQL 5 number
    ("5.5.5-10.6.18-MariaDB-log", ("MariaDB", (10, 6, 18))),
    ("11.4.2-MariaDB", ("MariaDB", (11, 4, 2))),
])
def test_the_version_string_names_the_server_and_its_number(text, expected):
    assert server_version(text) == expected


@pytest.mark.parametrize("text, refused", [
    ("8.0.0", False), ("9.1.0", False), ("5.7.44", True),
    ("10.6.0-MariaDB", False), ("5.5.5-10.5.27-MariaDB", True), ("10.3.39-MariaDB", True), ("11.0.1-MariaDB", False),
])
def test_servers_older_than_the_statements_need_are_refused_by_name(text, refused):
    problem = unsupported_server(text)
    assert (problem is not None) == refused
    if refused:
        assert text.split("-MariaDB")[0].split("-")[-1] in problem and "older than" in problem


def test_the_suite_server_is_supported_and_reached(mariadb_url):
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.connect() as conn:
            text = conn.exec_driver_sql("SELECT VERSION()").scalar()
    finally:
        engine.dispose()
    assert server_version(text)[0] == "MariaDB" and unsupported_server(text) is None
