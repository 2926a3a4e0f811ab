"""When erased data has left the backups: ``gone_by``.

A rotation removes every backup taken at or before ``now - max_age``,
whatever the keep_* rules say.  So a backup taken at ``t`` is gone once a
rotation runs at or after ``t + max_age``, and for an erasure at ``T`` the
backups that may still hold the erased data are those taken before ``T``:
the newest of them sets the date.  Keep rules may remove backups earlier,
but only ``max_age`` gives a date that can be promised in advance; without
it there is none.

The date holds as long as ``retention backups rotate`` runs on or after it
and is not refused (``max_gap``, the last-backup rule: both exit 3, loudly).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from retention.backups.policy import Backup


def gone_by(backup_cfg, backups: Sequence[Backup], erased_at: datetime, *, tz: ZoneInfo,
            listed_at: datetime) -> datetime | None:
    """The date by which every backup of this set taken before ``erased_at`` is removed, or None.

    ``backups`` is the set's inventory as listed at ``listed_at``.  Backups not
    taken yet at ``listed_at`` may still be taken before a later ``erased_at``,
    so then ``erased_at`` itself bounds the newest.  None means no provable
    date: the set has no ``max_age``.  When no backup predates the erasure,
    the answer is ``erased_at``: no backup holds the data.
    """
    if backup_cfg.max_age is None:
        return None
    taken = [b.time for b in backups if b.time < erased_at]
    if erased_at > listed_at:
        taken.append(erased_at)
    if not taken:
        return erased_at
    return backup_cfg.max_age.after(max(taken).astimezone(tz))


def erasure_gone_by(config, erased_at: datetime, *, now: datetime) -> datetime | None:
    """``gone_by`` over every ``[[backups]]`` set of ``config``: the latest of them, or None if one has none.

    Lists each store (read only).  With no backup sets at all, ``erased_at``.
    """
    from retention.backups.rotate import take_inventory
    from retention.backups.stores import open_store

    tz = config.settings.tz
    dates = []
    for b in config.model.backups:
        if b.max_age is None:
            return None
        inventory = take_inventory(b, open_store(b.location), tz)
        dates.append(gone_by(b, inventory.backups, erased_at, tz=tz, listed_at=now))
    return max(dates, default=erased_at)


def policy_warnings(config) -> list[str]:
    """``retention check`` warnings about the backup sets: those that give no provable ``gone_by``."""
    return [f"backup '{b.name}' has no max_age: it gives no provable date by which erased data leaves "
            f"its backups (gone_by); set max_age, e.g. max_age = \"400d\"" for b in config.model.backups
            if b.max_age is None]
