"""The rotation policy: which backups to keep, and why, with restic ``forget`` semantics.

Backups are walked newest first.  Each count bucket (``keep_last``,
``keep_hourly`` .. ``keep_yearly``) keeps the first backup it meets in every
new calendar period until its count runs out (-1: never runs out); a bucket
that still has counts left when the walk reaches the oldest backup keeps that
one too, so the longest history is kept.  ``keep_within`` keeps everything
newer than ``anchor - duration``; ``keep_within_hourly`` .. ``_yearly`` keep one
backup per period inside that window; ``keep_tags`` keeps every backup that
carries all tags of one listed set.  A backup is kept when any of these keeps
it, and the reasons are all listed.

Two additions on top of restic:

- ``max_age`` is a hard cap, counted from *now* whatever the anchor: a
  backup taken at or before ``now - max_age`` is removed even when a keep_*
  would keep it.  That is what makes an erasure's ``gone_by`` provable.
- ``anchor = "now" | "latest"``: the ``keep_within*`` windows count back
  from now, or (restic) from the newest backup.

Periods are cut on the wall clock of ``settings.timezone``: a day is a local
calendar day (23 or 25 hours across a daylight-saving change), a week an ISO
week of local dates.  An hour is a real hour: the hour repeated when the
clocks go back is two hourly periods, told apart by their UTC offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from retention.durations import Duration


@dataclass(frozen=True)
class Backup:
    """One backup in a store: its name in the store, its instant (aware) and its tags."""

    name: str
    time: datetime
    tags: frozenset[str] = frozenset()
    tag_values: tuple[tuple[str, str], ...] = ()

    def has_tags(self, wanted: Iterable[str]) -> bool:
        """True when every tag of ``wanted`` is on the backup (``key`` or ``key=value``)."""
        values = dict(self.tag_values)
        for tag in wanted:
            key, eq, value = tag.partition("=")
            if eq:
                if values.get(key) != value:
                    return False
            elif tag not in self.tags:
                return False
        return True


@dataclass(frozen=True)
class Policy:
    """What to keep.  Counts: ``None``/0 off, -1 all.  Durations: ``None`` off."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: Duration | None = None
    within_hourly: Duration | None = None
    within_daily: Duration | None = None
    within_weekly: Duration | None = None
    within_monthly: Duration | None = None
    within_yearly: Duration | None = None
    tags: tuple[tuple[str, ...], ...] = ()
    max_age: Duration | None = None
    anchor: str = "now"

    @classmethod
    def from_config(cls, cfg) -> "Policy":
        """Build from a :class:`retention.config.BackupConfig`."""
        return cls(last=cfg.keep_last, hourly=cfg.keep_hourly, daily=cfg.keep_daily, weekly=cfg.keep_weekly,
                   monthly=cfg.keep_monthly, yearly=cfg.keep_yearly, within=cfg.keep_within,
                   within_hourly=cfg.keep_within_hourly, within_daily=cfg.keep_within_daily,
                   within_weekly=cfg.keep_within_weekly, within_monthly=cfg.keep_within_monthly,
                   within_yearly=cfg.keep_within_yearly,
                   tags=tuple(tuple(t) for t in cfg.keep_tags or ()), max_age=cfg.max_age, anchor=cfg.anchor)

    def is_empty(self) -> bool:
        """No keep_* at all: applying it would remove every backup, so it is never applied."""
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        spans = (self.within, self.within_hourly, self.within_daily, self.within_weekly,
                 self.within_monthly, self.within_yearly)
        return not any(counts) and not any(_nonzero(d) for d in spans) and not self.tags


def _nonzero(d: Duration | None) -> bool:
    return d is not None and bool(d.months or d.days or d.seconds)


# calendar periods on the local wall clock; the hour carries its UTC offset so the
# hour repeated when the clocks go back counts as two
def _hour(t: datetime) -> tuple:
    return (t.year, t.month, t.day, t.hour, t.utcoffset())


def _day(t: datetime) -> tuple:
    return (t.year, t.month, t.day)


def _week(t: datetime) -> tuple:
    return tuple(t.isocalendar())[:2]


def _month(t: datetime) -> tuple:
    return (t.year, t.month)


def _year(t: datetime) -> tuple:
    return (t.year,)


PERIODS: dict[str, Callable[[datetime], tuple]] = {
    "hourly": _hour, "daily": _day, "weekly": _week, "monthly": _month, "yearly": _year}


@dataclass
class Decision:
    """A backup and what the policy decided: kept for ``reasons``, or removed because of ``why``."""

    backup: Backup
    reasons: list[str] = field(default_factory=list)
    why: str = ""

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


@dataclass
class Outcome:
    """The policy applied to one inventory: decisions newest first."""

    decisions: list[Decision]
    anchor: datetime | None

    @property
    def keep(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    @property
    def remove(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


def newest_first(backups: Iterable[Backup]) -> list[Backup]:
    """Newest first; backups with the same time in name order (a stable, repeatable walk)."""
    by_name = sorted(backups, key=lambda b: b.name)
    return sorted(by_name, key=lambda b: b.time, reverse=True)


def cutoff(span: Duration, anchor: datetime) -> datetime | None:
    """``anchor - span`` on the local calendar, or None when that lies before year 1 (keep everything)."""
    try:
        return span.before(anchor)
    except (ValueError, OverflowError):
        return None


def apply_policy(backups: Sequence[Backup], policy: Policy, *, tz: ZoneInfo, now: datetime) -> Outcome:
    """Decide, for every backup, keep (with restic-style reasons) or remove.

    ``now`` is the run's instant (aware).  The empty policy is refused here too:
    it is a configuration error, never "remove everything".
    """
    if policy.is_empty():
        raise ValueError("an empty policy would remove every backup")
    walk = newest_first(backups)
    if not walk:
        return Outcome([], None)
    local = [b.time.astimezone(tz) for b in walk]
    anchor = local[0] if policy.anchor == "latest" else now.astimezone(tz)
    counts = [(name, getattr(policy, name), PERIODS.get(name)) for name in
              ("last", "hourly", "daily", "weekly", "monthly", "yearly")]
    left = {name: count for name, count, _ in counts if count}
    seen: dict[str, object] = {}
    windows = []
    for name in ("hourly", "daily", "weekly", "monthly", "yearly"):
        span = getattr(policy, f"within_{name}")
        if _nonzero(span):
            windows.append((name, span, cutoff(span, anchor)))
    within_cut = cutoff(policy.within, anchor) if _nonzero(policy.within) else None
    cap = cutoff(policy.max_age, now.astimezone(tz)) if policy.max_age is not None else None
    decisions = []
    oldest = len(walk) - 1
    for nr, (backup, t) in enumerate(zip(walk, local)):
        reasons: list[str] = []
        for tag_set in policy.tags:
            if backup.has_tags(tag_set):
                reasons.append(f"has tags [{', '.join(tag_set)}]")
        if _nonzero(policy.within) and (within_cut is None or t > within_cut):
            reasons.append(f"within {policy.within}")
        for name, _count, period in counts:
            if not left.get(name):
                continue
            value = nr if period is None else period(t)
            last = seen.get(name, _NONE)
            if value != last or nr == oldest:
                # restic: a bucket with counts left also keeps the oldest backup
                reasons.append(f"{name} snapshot" if value != last else f"oldest {name} snapshot")
                seen[name] = value
                if left[name] > 0:
                    left[name] -= 1
        for name, span, cut in windows:
            if cut is not None and t <= cut:
                continue
            value = PERIODS[name](t)
            last = seen.get(f"within_{name}", _NONE)
            if value != last or nr == oldest:
                reasons.append(f"{name} within {span}" if value != last else f"oldest {name} within {span}")
                seen[f"within_{name}"] = value
        why = "" if reasons else "no keep rule keeps it"
        if cap is not None and t <= cap:
            # the hard cap wins over every keep rule
            why = f"older than max_age {policy.max_age}" + (f" (would be {', '.join(reasons)})" if reasons else "")
            reasons = []
        decisions.append(Decision(backup, reasons, why))
    return Outcome(decisions, anchor)


_NONE = object()
