"""A backup's time from its name: ``pattern = "shop-{timestamp}.dump"``.

The pattern is the file (or object) name with one placeholder; ``*`` matches
any run of characters; everything else is literal.  Names that do not match
are not backups of this set and are never touched.

- ``{timestamp}``: ISO 8601, extended or basic, date or date and time,
  optional fraction and zone: ``2026-03-29T02:30:00Z``, ``2026-03-29``,
  ``20260329T023000Z``, ``2026-03-29T02-30-00+01:00`` (dashes in the time,
  because ``:`` is awkward in file names).
- ``{timestamp:%Y%m%d-%H%M}``: a strftime form.  Directives: ``%Y %y %m %d
  %j %H %I %p %M %S %f %z %b %B %a %A %%``; it must name the year and the day.

A time without a zone is read in ``settings.timezone``.  Without a
placeholder (or without ``pattern``) a backup's time is its modification time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

_PLACEHOLDER = re.compile(r"\{timestamp(?::([^{}]*))?\}")
_ISO = (r"(?P<y>\d{4})(?P<s1>-?)(?P<mo>\d{2})(?P=s1)(?P<d>\d{2})"
        r"(?:[T_](?P<h>\d{2})(?:(?P<s2>[:-]?)(?P<mi>\d{2})(?:(?P=s2)(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?)?"
        r"(?P<z>Z|[+-]\d{2}(?::?\d{2})?)?")
_DIRECTIVES = {
    "Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{1,2}", "d": r"\d{1,2}", "j": r"\d{1,3}", "H": r"\d{1,2}",
    "I": r"\d{1,2}", "p": r"[AaPp][Mm]", "M": r"\d{1,2}", "S": r"\d{1,2}", "f": r"\d{1,6}",
    "z": r"Z|[+-]\d{2}:?\d{2}", "b": r"[A-Za-z]{3}", "B": r"[A-Za-z]+", "a": r"[A-Za-z]{3}", "A": r"[A-Za-z]+",
    "%": "%",
}


class PatternError(ValueError):
    """The pattern cannot be used; the message says why."""


@dataclass(frozen=True)
class NamePattern:
    """A compiled ``pattern``: ``match(name)`` says whether a name belongs, ``time(name)`` reads its time."""

    text: str
    regex: re.Pattern
    strftime: str | None          # None: ISO 8601
    has_time: bool

    def match(self, name: str) -> re.Match | None:
        return self.regex.fullmatch(name)

    def time(self, name: str, tz: ZoneInfo) -> datetime | None:
        """The instant in the name, or None when it has no placeholder or the text is no valid time."""
        m = self.match(name)
        if m is None or not self.has_time:
            return None
        try:
            moment = _parse_iso(m) if self.strftime is None else datetime.strptime(m.group("ts"), self.strftime)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
        return moment


def compile_pattern(text: str | None) -> NamePattern:
    """Compile a ``pattern`` (``None``: every name, times from modification times)."""
    if text is None:
        return NamePattern("*", re.compile(r".+", re.S), None, False)
    if not text or "/" in text:
        raise PatternError("a pattern is a non-empty file name (no '/'), e.g. 'shop-{timestamp}.dump'")
    found = list(_PLACEHOLDER.finditer(text))
    if len(found) > 1:
        raise PatternError("a pattern holds at most one {timestamp}")
    rest = _PLACEHOLDER.sub("", text)
    if "{" in rest or "}" in rest:
        raise PatternError("the only placeholder is {timestamp} or {timestamp:FORMAT} (a strftime form)")
    parts, pos, fmt = [], 0, None
    for m in found:
        parts.append(_literal(text[pos:m.start()]))
        fmt = m.group(1)
        parts.append(f"(?P<ts>{_ISO})" if fmt is None else f"(?P<ts>{_strftime_regex(fmt)})")
        pos = m.end()
    parts.append(_literal(text[pos:]))
    return NamePattern(text, re.compile("".join(parts), re.S), fmt, bool(found))


def _literal(text: str) -> str:
    return ".*?".join(re.escape(piece) for piece in text.split("*"))


def _strftime_regex(fmt: str) -> str:
    out, i, used = [], 0, set()
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%":
            out.append(re.escape(ch))
            i += 1
            continue
        code = fmt[i + 1:i + 2]
        if code not in _DIRECTIVES:
            raise PatternError(f"'%{code}' is not a supported strftime directive in '{fmt}' "
                               f"(use %Y %y %m %d %j %H %I %p %M %S %f %z %b %B %a %A)")
        out.append(f"(?:{_DIRECTIVES[code]})")
        used.add(code)
        i += 2
    if not used & {"Y", "y"} or not ({"m", "d"} <= used or {"b", "d"} <= used or {"B", "d"} <= used
                                     or "j" in used):
        raise PatternError(f"'{fmt}' must name the year and the day (e.g. %Y%m%d)")
    sample = datetime(2031, 11, 23, 14, 35, 47)
    try:
        back = datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as e:
        raise PatternError(f"'{fmt}' does not read back what it writes: {e}") from None
    if back.date() != sample.date():
        raise PatternError(f"'{fmt}' does not read back the date it writes")
    return "".join(out)


def _parse_iso(m: re.Match) -> datetime:
    g = m.groupdict()
    fraction = (g["f"] or "").ljust(6, "0")[:6]
    moment = datetime(int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"] or 0), int(g["mi"] or 0),
                      int(g["s"] or 0), int(fraction or 0))
    z = g["z"]
    if z == "Z":
        return moment.replace(tzinfo=timezone.utc)
    if z:
        return datetime.fromisoformat(moment.isoformat() + z[:3] + ":" + (z[-2:] if len(z) > 3 else "00"))
    return moment
