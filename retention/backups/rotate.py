"""Rotate backup sets: inventory, decide, refuse when unsafe, remove.

One ``[[backups]]`` entry is one set.  Every set is listed and decided; a
set is then either rotated, *refused* (nothing removed, exit 3) or *failed*
(the store could not be listed or a removal failed, exit 1).  A set is
refused when:

- ``max_gap`` is set and the newest backup is older than it (or there is
  none): the backup job looks broken, and removing old backups now could
  leave nothing good behind;
- the policy would remove every backup: the only remaining backup is never
  removed.

Removal goes oldest first, one backup at a time, and stops at the first
failure; the report lists what was removed before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from retention.backups.naming import compile_pattern
from retention.backups.policy import Backup, Decision, Policy, apply_policy, newest_first
from retention.backups.stores import StoreError, open_store
from retention.errors import ConfigError, ConfigErrors

log = structlog.get_logger("retention.backups")


@dataclass
class Inventory:
    """The backups of one set, and the names that match the pattern but carry no valid time."""

    backups: list[Backup]
    unreadable: list[str] = field(default_factory=list)


def take_inventory(backup_cfg, store, tz: ZoneInfo) -> Inventory:
    """List ``store`` and turn the names that match ``backup_cfg.pattern`` into :class:`Backup` s."""
    pattern = compile_pattern(backup_cfg.pattern)
    backups, unreadable = [], []
    for entry in store.list(with_tags=bool(backup_cfg.keep_tags)):
        if not pattern.match(entry.name):
            continue
        when = pattern.time(entry.name, tz) if pattern.has_time else entry.mtime
        if when is None:
            unreadable.append(entry.name)       # never removed: we cannot tell its age
            continue
        backups.append(Backup(entry.name, when, frozenset(k for k, _ in entry.tags), entry.tags))
    return Inventory(newest_first(backups), sorted(unreadable))


@dataclass
class SetResult:
    """What the rotation decided and did for one ``[[backups]]`` set."""

    name: str
    location: str
    anchor: str
    keep: list[Decision] = field(default_factory=list)
    remove: list[Decision] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    status: str = "ok"                  # "ok" | "refused" | "failed"
    message: str | None = None
    tz: ZoneInfo = ZoneInfo("UTC")

    def _time(self, d: Decision) -> str:
        return d.backup.time.astimezone(self.tz).isoformat()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "location": self.location,
            "status": self.status,
            "message": self.message,
            "anchor": self.anchor,
            "keep": [{"name": d.backup.name, "time": self._time(d), "reasons": list(d.reasons)} for d in self.keep],
            "remove": [{"name": d.backup.name, "time": self._time(d), "why": d.why,
                        "removed": d.backup.name in self.removed} for d in self.remove],
            "unreadable": list(self.unreadable),
        }


@dataclass
class RotationReport:
    """Every set's result; ``exit_code`` 1 if one failed, else 3 if one was refused, else 0."""

    now: datetime
    dry_run: bool
    sets: list[SetResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        statuses = {s.status for s in self.sets}
        return 1 if "failed" in statuses else 3 if "refused" in statuses else 0

    def to_dict(self) -> dict:
        return {"now": self.now.isoformat(), "dry_run": self.dry_run,
                "backups": [s.to_dict() for s in self.sets], "exit_code": self.exit_code}

    def render_text(self) -> str:
        """restic-style listing: per set, the kept backups with reasons, then the removed ones."""
        lines = [f"BACKUP ROTATION{' (dry run: nothing removed)' if self.dry_run else ''} at {self.now.isoformat()}"]
        if not self.sets:
            lines.append("no [[backups]] set in the policy file")
        for s in self.sets:
            lines.append("")
            lines.append(f"{s.name}  {s.location}  [{s.status}]")
            if s.message:
                lines.append(f"  {s.message}")
            lines.append(f"  keep {len(s.keep)} backup(s):")
            width = max([len(d.backup.name) for d in s.keep + s.remove] or [0])
            for d in s.keep:
                lines.append(f"    {d.backup.name:<{width}}  {s._time(d)}  {', '.join(d.reasons)}")
            verb = "removed" if not self.dry_run and s.status != "refused" else "remove"
            lines.append(f"  {verb} {len(s.removed) if verb == 'removed' else len(s.remove)} backup(s):")
            for d in s.remove:
                mark = "" if verb == "remove" or d.backup.name in s.removed else "  (NOT removed)"
                lines.append(f"    {d.backup.name:<{width}}  {s._time(d)}  {d.why}{mark}")
            for name in s.unreadable:
                lines.append(f"    {name}: matches the pattern but holds no valid time; left alone")
        return "\n".join(lines) + "\n"


def rotate(config, *, now: datetime, dry_run: bool = False, names: list[str] | None = None) -> RotationReport:
    """Rotate every ``[[backups]]`` set of ``config`` (or those named in ``names``) at ``now`` (aware)."""
    tz = config.settings.tz
    chosen = _select(config, names)
    stores = {}
    for b in chosen:
        try:
            stores[b.name] = open_store(b.location)
        except ConfigError as e:   # e.g. boto3 missing: nothing has been touched yet
            raise ConfigError(e.detail, file=config.path, where=f"backup '{b.name}'", key="location") from None
    report = RotationReport(now=now, dry_run=dry_run)
    for b in chosen:
        report.sets.append(rotate_set(b, stores[b.name], tz=tz, now=now, dry_run=dry_run))
    return report


def _select(config, names: list[str] | None) -> list:
    sets = config.model.backups
    if not names:
        return list(sets)
    known = {b.name for b in sets}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigErrors([ConfigError(f"no backup set named '{n}' (backups: {', '.join(sorted(known)) or 'none'})",
                                        file=config.path, where="--only") for n in unknown])
    return [b for b in sets if b.name in names]


def rotate_set(backup_cfg, store, *, tz: ZoneInfo, now: datetime, dry_run: bool) -> SetResult:
    """Inventory, decide, check the refusals, then remove (unless ``dry_run``) one set."""
    result = SetResult(backup_cfg.name, backup_cfg.location, backup_cfg.anchor, tz=tz)
    try:
        inv = take_inventory(backup_cfg, store, tz)
    except StoreError as e:
        result.status, result.message = "failed", str(e)
        log.error("backups_rotate", backup=backup_cfg.name, status="failed", error=str(e))
        return result
    result.unreadable = inv.unreadable
    outcome = apply_policy(inv.backups, Policy.from_config(backup_cfg), tz=tz, now=now)
    result.keep, result.remove = outcome.keep, outcome.remove
    refusal = _refusal(backup_cfg, inv.backups, outcome, tz=tz, now=now)
    if refusal:
        result.status, result.message = "refused", refusal
    elif not dry_run:
        for d in sorted(result.remove, key=lambda d: (d.backup.time, d.backup.name)):
            try:
                store.remove(d.backup.name)
            except StoreError as e:
                result.status, result.message = "failed", str(e)
                break
            result.removed.append(d.backup.name)
    log.info("backups_rotate", backup=backup_cfg.name, status=result.status, dry_run=dry_run,
             keep=len(result.keep), remove=len(result.remove), removed=len(result.removed))
    return result


def _refusal(backup_cfg, backups: list[Backup], outcome, *, tz: ZoneInfo, now: datetime) -> str | None:
    if backup_cfg.max_gap is not None:
        limit = backup_cfg.max_gap.before(now.astimezone(tz))
        if not backups:
            return f"refused: no backup found, and max_gap {backup_cfg.max_gap} is set; is the backup job running?"
        if backups[0].time <= limit:
            return (f"refused: the newest backup ({backups[0].name}, "
                    f"{backups[0].time.astimezone(tz).isoformat()}) is older than max_gap {backup_cfg.max_gap}; "
                    f"the backup job looks broken, so nothing is removed")
    if backups and not outcome.keep:
        only = "the only remaining backup" if len(backups) == 1 else f"all {len(backups)} backups"
        return f"refused: the policy would remove {only}; the last backup is never removed"
    return None
