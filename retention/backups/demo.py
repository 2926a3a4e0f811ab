"""The demo's backup directory: a year of nightly dumps, for ``retention backups rotate`` to rotate.

The dumps are small placeholder files; only their names (and so their
times) matter to the rotation.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

DEMO_BACKUPS = "retention-demo-backups"
_PREFIX, _SUFFIX = "shop-", ".dump"


def create_demo_backups(directory: str | Path = DEMO_BACKUPS, *, now: datetime, days: int = 365) -> list[str]:
    """(Re)build ``directory`` with one ``shop-<UTC time>.dump`` per night at 02:00 UTC, ``days`` nights up to ``now``.

    Earlier demo dumps in the directory are replaced; other files are left alone.
    Returns the names, newest first.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    now = now.astimezone(timezone.utc)
    last = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if last > now:
        last -= timedelta(days=1)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob(f"{_PREFIX}*{_SUFFIX}"):
        if old.is_file():
            old.unlink()
    names = []
    for i in range(days):
        moment = last - timedelta(days=i)
        name = f"{_PREFIX}{moment.strftime('%Y%m%dT%H%M%SZ')}{_SUFFIX}"
        (path / name).write_text(f"retention demo dump taken {moment.isoformat()}\n")
        names.append(name)
    return names
