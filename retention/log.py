"""Logging and progress: structlog to stderr, credentials masked, bars only on a TTY.

Reports go to stdout and logs to stderr, so ``--format json`` output can be
piped into a parser while the job logs.  On a terminal the logs are for
people (console renderer); anywhere else they are JSON lines for machines::

    configure_logging(None)                      # JSON unless stderr is a TTY
    structlog.contextvars.bind_contextvars(run_id=run_id)   # once, by the caller
    structlog.get_logger().info("rule.done", rule="access-logs-180d", touched=120)
    # {"rule": "access-logs-180d", "touched": 120, "event": "rule.done",
    #  "run_id": "...", "level": "info", "timestamp": "2025-06-01T12:00:00.000000Z"}

Every string that reaches a log line passes :func:`mask_credentials`, so a
database URL in an event value or an exception message never shows its
password.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar
from urllib.parse import quote, unquote

import structlog
from structlog.dev import plain_traceback

T = TypeVar("T")

# scheme://user:password@host -- user may be empty (redis://:pw@host); the
# password runs to the last '@' before the path, so an unencoded '@' in it is
# still masked whole.
_URL_PASSWORD = re.compile(
    r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^\s/]*)@")
# Secret-bearing keys in libpq keyword DSNs ("host=db password=secret"), URL query
# strings (?sslpassword=..., ?password=... as some drivers take it) and ODBC strings
# (PWD=...), also percent-encoded (odbc_connect=...%3BPWD%3Dsecret): any key whose
# name holds one of these words, so sslpassword, private_key_passphrase, auth_token
# and client_secret are caught with password.  File paths (sslkey, passfile) are not
# secrets and stay readable.
_SECRET_WORDS = r"pass(?:word|wd|phrase)|pwd|secret|token|api_?key|credentials?"
_KEYWORD_PASSWORD = re.compile(
    rf"(?P<prefix>(?<![A-Za-z0-9])[A-Za-z0-9_.\-]*(?:{_SECRET_WORDS})[A-Za-z0-9_\-]*\s*(?:=|%3D)\s*)"
    r"(?P<password>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|(?:(?!%26|%3B)[^\s;&'\"])+)",
    re.IGNORECASE)

# the same keys quoted, as a dict's repr or JSON prints them: {'sslpassword': 'x'}
_QUOTED_SECRET = re.compile(
    rf"(?P<prefix>(?P<q>['\"])[A-Za-z0-9_.\-]*(?:{_SECRET_WORDS})[A-Za-z0-9_\-]*(?P=q)\s*:\s*)"
    r"(?P<password>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", re.IGNORECASE)
_SECRET_KEY = re.compile(rf"(?:{_SECRET_WORDS})", re.IGNORECASE)

MASK = "***"


def mask_url(url: str) -> str:
    """``url`` (or any text containing URLs) with every password replaced by ``***``.

    >>> mask_url("postgresql+psycopg://shop:s3cret@db:5432/shop")
    'postgresql+psycopg://shop:***@db:5432/shop'
    >>> mask_url("sqlite:///retention-demo.db")
    'sqlite:///retention-demo.db'
    """
    return _URL_PASSWORD.sub(lambda m: f"{m['prefix']}{MASK}@", url)


def url_secret(url: str) -> str | None:
    """The password in a database URL, as written: what to scrub from messages about it.

    Parsed the way a person reads it (everything between ``user:`` and the
    last ``@`` of the authority), so a password holding ``/``, spaces or ``@``
    is found whole even where a URL parser would split it.
    """
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:(.*)@[^@]*$", url.strip())
    return m.group(1) if m and m.group(1) else None


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (raw, percent-encoded or -decoded) and every URL password masked."""
    if secret:
        for form in sorted({secret, quote(secret, safe=""), unquote(secret)}, key=len, reverse=True):
            if form:
                text = text.replace(form, MASK)
    return mask_text(text)


def mask_text(text: str) -> str:
    """:func:`mask_url`, plus secret ``key=value`` pairs (libpq DSNs, URL query strings, ODBC).

    >>> mask_text("postgresql://u@db/shop?sslmode=require&sslpassword=k3y&sslkey=/etc/k.pem")
    'postgresql://u@db/shop?sslmode=require&sslpassword=***&sslkey=/etc/k.pem'
    >>> mask_text("host=db user=u password='a b' dbname=shop")
    'host=db user=u password=*** dbname=shop'
    """
    text = _KEYWORD_PASSWORD.sub(lambda m: f"{m['prefix']}{MASK}", mask_url(text))
    return _QUOTED_SECRET.sub(lambda m: f"{m['prefix']}{m['q']}{MASK}{m['q']}", text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: MASK if _is_secret_key(k, v) else _mask_value(v) for k, v in value.items()}
    if type(value) in (list, tuple):   # exact types: a namedtuple cannot be rebuilt from items
        return type(value)(_mask_value(v) for v in value)
    if value is None or isinstance(value, (int, float, bool)):
        return value
    # Anything else becomes its (masked) str(): the JSON renderer would
    # otherwise serialise a namedtuple such as SQLAlchemy's URL field by
    # field, password included.
    return mask_text(str(value))


def _is_secret_key(key: Any, value: Any) -> bool:
    return isinstance(key, str) and value is not None and _SECRET_KEY.search(key) is not None


def mask_credentials(logger: Any, method_name: str, event_dict: dict) -> dict:
    """structlog processor: mask passwords in every string value of the event.

    Lists, tuples and dicts are masked item by item; any other object (say a
    SQLAlchemy ``URL``) is replaced by its masked ``str()``, because a
    renderer would otherwise print it, or its fields, unmasked.
    """
    for key, value in event_dict.items():
        # exc_info is for the renderer to format (through _masked_traceback);
        # turning it into text here would lose the traceback.
        if key != "exc_info":
            event_dict[key] = MASK if _is_secret_key(key, value) else _mask_value(value)
    return event_dict


def _masked_traceback(sio: TextIO, exc_info: Any) -> None:
    # Exception messages carry connection URLs (SQLAlchemy puts them in
    # OperationalError); plain, because rich tracebacks would print locals.
    buf = io.StringIO()
    plain_traceback(buf, exc_info)
    sio.write(mask_text(buf.getvalue()))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def configure_logging(fmt: str | None, *, stream: TextIO | None = None, level: str = "info") -> None:
    """Configure structlog for the job.

    ``fmt`` is ``"json"`` (one JSON object per line), ``"console"`` (for
    people), or ``None``: console when ``stream`` is a TTY, JSON otherwise.
    ``stream`` defaults to ``sys.stderr`` as it is at call time.  Context bound
    with ``structlog.contextvars.bind_contextvars`` (the run id) is merged into
    every line.  Timestamps are ISO 8601 in UTC.
    """
    stream = stream if stream is not None else sys.stderr
    if fmt not in (None, "json", "console"):
        raise ValueError(f"unknown log format '{fmt}' (choose from json, console)")
    as_json = fmt == "json" or (fmt is None and not _isatty(stream))

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if as_json:
        processors += [structlog.processors.format_exc_info, mask_credentials,
                       structlog.processors.JSONRenderer(default=str)]
    else:
        processors += [mask_credentials,
                       structlog.dev.ConsoleRenderer(colors=_isatty(stream),
                                                     exception_formatter=_masked_traceback)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level.lower()),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        # Not cached: tests and the CLI may configure more than once per process.
        cache_logger_on_first_use=False,
    )


class Progress:
    """A progress bar on a TTY; silent anywhere else (logs say what happened).

    Use :func:`progress` to make one.  Redraws at most ten times a second so a
    tight loop does not spend its time writing to the terminal.
    """

    width = 30
    interval = 0.1

    def __init__(self, total: int | None, label: str, stream: TextIO) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.stream = stream
        self.enabled = _isatty(stream)
        self._last_draw = 0.0
        self._drawn = False

    def __enter__(self) -> "Progress":
        self._draw(force=True)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done and redraw if it is time."""
        self.done += n
        self._draw()

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, advancing by one after each; ends the bar's line when done."""
        try:
            for item in items:
                if not self._drawn:
                    self._draw(force=True)
                yield item
                self.advance()
        finally:
            self.close()

    def __iter__(self) -> Iterator[int]:
        """Iterate ``range(total)``, advancing as it goes."""
        return self.track(range(self.total or 0))

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled and self._drawn:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
        self.enabled = False

    def render(self) -> str:
        """The bar as text: ``label [#####-----] 50/100  50%``."""
        if not self.total:
            return f"{self.label} {self.done:,}"
        share = min(1.0, self.done / self.total)
        filled = int(share * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"{self.label} [{bar}] {self.done:,}/{self.total:,} {share:4.0%}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        # \r and clear-to-end-of-line: redraw in place without leftovers.
        self.stream.write("\r" + self.render() + "\x1b[K")
        self.stream.flush()
        self._drawn = True


def progress(total: int | None, label: str, *, stream: TextIO | None = None) -> Progress:
    """A :class:`Progress` over ``total`` units, drawn on stderr only when it is a TTY.

    ::

        with progress(rows_due, "access-logs-180d") as bar:
            for batch in batches:
                delete(batch)
                bar.advance(len(batch))

        for i in progress(3, "warming up"):   # iterating yields 0..total-1
            ...
    """
    return Progress(total, label, stream if stream is not None else sys.stderr)


class ProgressDisplay:
    """A run subscriber (:meth:`retention.runtime.Run.subscribe`): one bar per rule that touches rows.

    The bar opens when a rule is counted and guarded (its total is what the
    rule may touch), advances as batches commit, and closes when the rule ends.
    Like every :class:`Progress`, it draws only on a TTY.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.bar: Progress | None = None

    def __call__(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "RuleCounted":
            self._close()
            if event.run.mode.executes and event.outcome.guard.rows and event.outcome.status == "ok":
                self.bar = progress(event.outcome.guard.rows, event.plan.rule.name, stream=self.stream).__enter__()
        elif kind == "BatchCommitted" and self.bar is not None:
            self.bar.advance(event.touched)
        elif kind in ("RuleEnded", "RunEnded"):
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
