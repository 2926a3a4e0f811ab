"""Helpers for the backup tests: a directory of dated dumps and a policy file naming it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

UTC = timezone.utc


def hourly(start: datetime, hours: int) -> list[datetime]:
    """``hours`` instants one real hour apart, from ``start`` (aware)."""
    return [start + timedelta(hours=i) for i in range(hours)]


def daily(end: datetime, days: int) -> list[datetime]:
    """``days`` instants one day apart, ending at ``end``."""
    return [end - timedelta(days=i) for i in range(days)]


def dumps(directory: Path, times: list[datetime], prefix: str = "shop-") -> list[str]:
    """One ``shop-<UTC basic ISO>.dump`` per instant; returns the names."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for t in times:
        name = f"{prefix}{t.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.dump"
        (directory / name).write_bytes(b"dump")
        names.append(name)
    return names


def policy(tmp_path: Path, *, timezone_name: str = "UTC", location: str | None = None,
           pattern: str | None = "shop-{timestamp}.dump", name: str = "nightly", **keys) -> Path:
    """A policy file with one ``[[backups]]`` set; ``keys`` are written as TOML values."""
    lines = ["version = 1", "[settings]", f'timezone = "{timezone_name}"', "[databases]", "",
             "[[backups]]", f'name = "{name}"', f'location = "{location or tmp_path / "store"}"']
    if pattern is not None:
        lines.append(f'pattern = "{pattern}"')
    for key, value in keys.items():
        lines.append(f"{key} = " + (f'"{value}"' if isinstance(value, str) else str(value).lower()
                                    if isinstance(value, bool) else repr(value)))
    path = tmp_path / "policies.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())
