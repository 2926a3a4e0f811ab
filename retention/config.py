"""Load and validate ``policies.toml``.

Validation runs in stages, each error naming the file, the rule (or section)
and the key:

1. TOML syntax (``tomllib``);
2. structure and types (pydantic models below; unknown keys are errors);
3. cross-references inside the file (unique names, known subjects, databases,
   strategies, duration sanity).

Binding to the live databases (tables, columns, foreign keys, constraint
conflicts) is :mod:`retention.schema`'s job.

Example::

    version = 1
    [databases.shop]
    url = "${SHOP_DATABASE_URL:-sqlite:///retention-demo.db}"

    [[rules]]
    name = "access-logs-180d"
    table = "shop.access_logs"
    clock = "created_at"
    after = "180d"
    action = "delete"
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model,
                      field_validator, model_validator)
from sqlalchemy.engine import make_url

from retention.anonymize import StrategyParamError, build
from retention.durations import Duration, DurationError, parse_duration
from retention.errors import ConfigError, ConfigErrors
from retention.where_sql import WhereSqlError, compile_where_sql

_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_TIMEOUT_MS = 2**31 - 1
#: TOML integers are 64-bit; tomllib reads larger ones, which no database column can hold
_INT64 = (-(2**63), 2**63 - 1)


def _duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    try:
        return parse_duration(value)
    except DurationError as e:
        raise ValueError(str(e)) from None


DurationField = Annotated[Duration, BeforeValidator(_duration)]
Scalar = str | int | float | bool | datetime | date


class _Model(BaseModel):
    # strict: TOML has real booleans, numbers and dates, so "no" is never false and
    # "0.5" never a number; durations are strings by design (their validator parses them).
    # defer_build: a model's validator is built when first used, not at import; a process
    # builds those of the sections its policy file has (see _validate)
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, strict=True,
                              defer_build=True)


class Settings(_Model):
    """``[settings]``: defaults for every rule and the run as a whole."""

    timezone: str = "UTC"
    state_url: str = "sqlite:///retention-state.db"
    batch_size: int = Field(5000, gt=0)
    max_batch_seconds: float = Field(0.2, gt=0)
    lock_timeout: DurationField = parse_duration("5s")
    statement_timeout: DurationField = parse_duration("60s")
    stop_timeout: DurationField = parse_duration("10s")    # SIGTERM/SIGINT: stopped and reported within this
    max_rows: int | None = Field(None, ge=0)
    max_fraction: float = Field(0.9, ge=0, le=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{v}' (use an IANA name such as 'UTC' or 'Europe/Paris')") from None
        return v

    @field_validator("lock_timeout", "statement_timeout", "stop_timeout")
    @classmethod
    def _no_calendar(cls, v: Duration) -> Duration:
        if v.months:
            raise ValueError("a timeout cannot be in months or years")
        if (v.days * 86400 + v.seconds) * 1000 > _MAX_TIMEOUT_MS:
            # PostgreSQL takes a timeout in milliseconds as a 32-bit integer
            raise ValueError(f"a timeout can be at most {_MAX_TIMEOUT_MS} ms (about 24 days), got '{v}'")
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DatabaseConfig(_Model):
    """``[databases.NAME]``: ``url`` (with ``${VAR}`` / ``${VAR:-default}``) or ``url_file``."""

    url: str | None = None
    url_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "DatabaseConfig":
        if bool(self.url) == bool(self.url_file):
            raise ValueError("give exactly one of 'url' or 'url_file'")
        return self


class SubjectConfig(_Model):
    table: str
    key: str = "id"


class Condition(_Model):
    """One column's structured condition: ``{is_null = true}``, ``{lt = ..}``, ``{gt = ..}`` ..."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    lt: Scalar | None = None
    le: Scalar | None = None
    gt: Scalar | None = None
    ge: Scalar | None = None
    is_null: bool | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None

    @model_validator(mode="after")
    def _some(self) -> "Condition":
        if not self.model_fields_set:
            raise ValueError("an empty condition matches nothing useful; use e.g. {is_null = true} or {lt = 10}")
        return self


def _condition(value: Any) -> Any:
    # equality and lists are sugar: status = "closed", status = ["a", "b"]
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list):
        return {"in": value}
    return {"eq": value}


Where = dict[str, Annotated[Condition, BeforeValidator(_condition)]]


class KAnonymityCheck(_Model):
    """``[rules.check]``: after anonymizing, every combination of ``quasi_identifiers`` is shared by >= k rows."""

    quasi_identifiers: list[str] = Field(min_length=1)
    k: int = Field(5, ge=2)

    @field_validator("quasi_identifiers")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a column is named twice")
        return v


class RuleConfig(_Model):
    """``[[rules]]``: what to do with which rows, once their clock has run."""

    name: str
    table: str
    clock: str
    after: DurationField
    action: Literal["delete", "anonymize", "restrict"]
    basis: str = ""
    where: Where = Field(default_factory=dict)
    where_sql: str | None = None
    columns: dict[str, str | dict[str, Any]] = Field(default_factory=dict)
    mark: str | None = None
    restrict_column: str = "restricted_at"
    max_rows: int | None = Field(None, ge=0)
    max_fraction: float | None = Field(None, ge=0, le=1)
    check: KAnonymityCheck | None = None
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _kebab(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"'{v}' is not kebab-case (lowercase letters, digits and single dashes)")
        return v

    @model_validator(mode="after")
    def _action_keys(self) -> "RuleConfig":
        if self.action == "anonymize" and not self.columns:
            raise ValueError("action 'anonymize' needs 'columns' (column = strategy)")
        if self.action != "anonymize" and self.columns:
            raise ValueError(f"'columns' only applies to action 'anonymize', not '{self.action}'")
        if self.action != "anonymize" and self.mark:
            raise ValueError(f"'mark' only applies to action 'anonymize', not '{self.action}'")
        if self.action != "anonymize" and self.check:
            raise ValueError(f"'check' (k-anonymity) only applies to action 'anonymize', not '{self.action}'")
        if self.check and not self.mark:
            raise ValueError("'check' (k-anonymity) needs 'mark': the check judges the rows the rule anonymized, "
                             "and the mark is how the job knows them")
        return self


ParentAction = Literal["delete", "detach", "block"]


class TableConfig(_Model):
    """``[tables."db.table"]``: table-level settings for child tables."""

    on_parent_delete: ParentAction | dict[str, ParentAction] = "block"
    subject_path: list[str] | None = None
    #: how a partitioned table's rows go when a whole partition is due (retention.execute.partitions)
    partitions: Literal["delete", "detach", "drop"] = "delete"


class HoldConfig(_Model):
    name: str
    table: str
    subject: str
    subject_column: str
    active_where: Where = Field(default_factory=dict)
    basis: str = ""


class FloorConfig(_Model):
    name: str
    table: str
    clock: str
    keep: DurationField
    basis: str = ""
    columns: list[str] | None = None
    where: Where = Field(default_factory=dict)


class RequestConfig(_Model):
    name: str
    table: str
    subject: str
    subject_column: str
    received_column: str = "received_at"
    status_column: str = "status"
    deadline: DurationField = parse_duration("15d")
    action: Literal["delete", "anonymize"] = "delete"
    #: with action = "anonymize": linked tables left as they are (they hold nothing personal)
    keep: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keep_anonymizes(self) -> "RequestConfig":
        if self.keep and self.action != "anonymize":
            raise ValueError("'keep' only applies to action = \"anonymize\": a delete erases every linked table")
        return self


class RecipientConfig(_Model):
    """``[[recipients]]``: who is told of each erasure (see :mod:`retention.recipients`)."""

    name: str
    url: str
    timeout: DurationField = parse_duration("10s")     # one attempt's bound; failures retry on later runs

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("give an http:// or https:// URL")
        return v


class BackupConfig(_Model):
    """``[[backups]]``: a backup store and its rotation (see :mod:`retention.backups`)."""

    name: str
    location: str
    pattern: str | None = None
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: DurationField | None = None
    keep_within_hourly: DurationField | None = None
    keep_within_daily: DurationField | None = None
    keep_within_weekly: DurationField | None = None
    keep_within_monthly: DurationField | None = None
    keep_within_yearly: DurationField | None = None
    keep_tags: list[list[str]] | None = None
    max_age: DurationField | None = None
    max_gap: DurationField | None = None
    anchor: Literal["now", "latest"] = "now"

    @field_validator("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
    @classmethod
    def _count(cls, v: int | None) -> int | None:
        if v is not None and v < -1:
            raise ValueError(f"{v} is not a count: write a number of backups, 0 for none or -1 for all")
        return v


class PolicyFile(_Model):
    version: Literal[1]
    settings: Settings = Field(default_factory=Settings)
    databases: dict[str, DatabaseConfig]
    subjects: dict[str, SubjectConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)
    tables: dict[str, TableConfig] = Field(default_factory=dict)
    holds: list[HoldConfig] = Field(default_factory=list)
    floors: list[FloorConfig] = Field(default_factory=list)
    requests: list[RequestConfig] = Field(default_factory=list)
    recipients: list[RecipientConfig] = Field(default_factory=list)
    backups: list[BackupConfig] = Field(default_factory=list)


#: the top-level keys a policy file has -> the model validating just those (built once per process)
_TOP_MODELS: dict[tuple[str, ...], type[_Model]] = {}


def _validate(data: Mapping[str, Any]) -> PolicyFile:
    """``PolicyFile.model_validate(data)``, building the models of the sections ``data`` has only.

    Building pydantic's validator for every section model costs each process
    start as much as the whole validation of a policy file many times over;
    most files have a few of the sections.  The model used has PolicyFile's
    required keys and the known keys ``data`` has, in PolicyFile's order (so
    errors come in the same order, with the same locations); the result is a
    PolicyFile whose absent sections hold their defaults.
    """
    fields = PolicyFile.model_fields
    names = tuple(n for n, f in fields.items() if n in data or f.is_required())
    model = _TOP_MODELS.get(names)
    if model is None:
        model = _TOP_MODELS[names] = create_model(
            "PolicyFile", __base__=_Model, __module__=__name__, **{n: (fields[n].annotation, fields[n]) for n in names})
    validated = model.model_validate(data)
    return PolicyFile.model_construct(validated.model_fields_set, **{n: getattr(validated, n) for n in names})


class Config:
    """A validated policy file plus where it came from."""

    def __init__(self, model: PolicyFile, path: str, sha256: str, urls: dict[str, str]) -> None:
        self.model = model
        self.path = path
        self.sha256 = sha256
        self.urls = urls                   # database name -> resolved URL (secret: never log)

    @property
    def settings(self) -> Settings:
        return self.model.settings

    @property
    def rules(self) -> list[RuleConfig]:
        return self.model.rules

    def rule(self, name: str) -> RuleConfig:
        for r in self.model.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def error(self, message: str, where: str | None = None, key: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.path, where=where, key=key)


def expand_env(text: str, env: Mapping[str, str], *, file: str, where: str, key: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from ``env``."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (write ${{{name}:-default}} for a default)",
                          file=file, where=where, key=key)

    return _ENV.sub(sub, text)


_TOO_DEEP = "not a policy file: tables or arrays are nested too deeply"


def _walk(data: Any) -> list[tuple[tuple, Any]]:
    """Every (location, value) in parsed TOML, iteratively: nesting depth costs no stack."""
    out, stack = [], [((), data)]
    while stack:
        loc, value = stack.pop()
        out.append((loc, value))
        if isinstance(value, Mapping):
            stack.extend(((*loc, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(value))
    return out


def _located(data: Mapping, loc: tuple, message: str, path: str) -> ConfigError:
    where, rest = _where_of(data, loc)
    return ConfigError(message, file=path, where=where, key=_format_key(rest))


def _value_problems(data: Mapping, path: str) -> list[ConfigError]:
    """Integers beyond 64 bits, which TOML does not allow and no database column holds."""
    return [_located(data, loc, f"{value} does not fit in 64 bits", path)
            for loc, value in _walk(data)
            if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]]


# -- keys the spec defines whose behaviour is not built yet ------------------------------------
#
# Accepting such a key and ignoring it would let an operator believe a promise is
# kept (requests answered, backups rotated). Each entry is refused with its message;
# delete an entry when its part is built. A path is dotted keys, with "[]" for every
# item of an array and "*" for every value of a table; ``refuse`` decides on the value.

NOT_BUILT_YET: list[tuple[str, Any, str]] = [
    ("rules[].columns.*", lambda v: v == "fake" or (isinstance(v, Mapping) and v.get("strategy") == "fake"),
     "the 'fake' strategy is not built yet; use 'hash', 'mask', 'constant' or 'null'"),
]


def not_built_yet(data: Mapping, path: str) -> list[ConfigError]:
    """A ConfigError for every key in ``data`` that :data:`NOT_BUILT_YET` lists."""
    errors = []
    for pattern, refuse, message in NOT_BUILT_YET:
        for loc, value in _matches(data, pattern.split(".")):
            if refuse is None or refuse(value):
                errors.append(_located(data, loc, message, path))
    return errors


def _matches(value: Any, parts: list[str], loc: tuple = ()) -> list[tuple[tuple, Any]]:
    if not parts:
        return [(loc, value)]
    head, rest = parts[0], parts[1:]
    array = head.endswith("[]")
    name = head[:-2] if array else head
    if not isinstance(value, Mapping):
        return []
    items = list(value.items()) if name == "*" else [(name, value[name])] if name in value else []
    found = []
    for key, child in items:
        if array:
            for i, item in enumerate(child if isinstance(child, list) else []):
                found += _matches(item, rest, (*loc, key, i))
        else:
            found += _matches(child, rest, (*loc, key))
    return found


def _where_of(data: Mapping, loc: tuple) -> tuple[str | None, tuple]:
    """Name the section a pydantic error location points into: ("rule 'x'", rest of loc)."""
    if not loc:
        return None, loc
    head = loc[0]
    sections = {"rules": "rule", "holds": "hold", "floors": "floor", "requests": "request",
                "recipients": "recipient", "backups": "backup"}
    if head in sections and len(loc) > 1 and isinstance(loc[1], int):
        items = data.get(head) or []
        item = items[loc[1]] if loc[1] < len(items) else {}
        name = item.get("name") if isinstance(item, Mapping) else None
        label = f"{sections[head]} '{name}'" if name else f"{sections[head]} #{loc[1] + 1}"
        return label, loc[2:]
    if head in ("databases", "subjects", "tables") and len(loc) > 1:
        return f"[{head}.{loc[1]}]", loc[2:]
    if head == "settings":
        return "[settings]", loc[1:]
    return None, loc


def _format_key(rest: tuple) -> str | None:
    parts = [str(p) for p in rest if not isinstance(p, int) and not str(p).startswith(("function-", "str", "dict", "list", "int", "float", "bool", "datetime", "date", "literal["))]
    return ".".join(parts) if parts else None


def _pydantic_errors(e: ValidationError, data: Mapping, path: str) -> ConfigErrors:
    errors = []
    for err in e.errors():
        loc = tuple(err["loc"])
        where, rest = _where_of(data, loc)
        key = _format_key(rest)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"].endswith("_type") and isinstance(err.get("input"), (str, int, float, bool)):
            msg += f", got {err['input']!r}"     # strict types: say what was written
        errors.append(ConfigError(msg, file=path, where=where, key=key))
    # one message per (where, key): pydantic repeats union branches
    seen, unique = set(), []
    for err in errors:
        ident = (err.where, err.key, err.detail)
        if ident not in seen:
            seen.add(ident)
            unique.append(err)
    return ConfigErrors(unique)


def load_config(path: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
                resolve_urls: bool = True) -> Config:
    """Read, parse and validate a policy file; raise :class:`ConfigError` on any problem.

    ``resolve_urls=False`` leaves the databases' URLs alone (``Config.urls`` is
    empty): for what reads the file only, such as the schedule, where the
    environment variables and secret files the URLs name need not exist.
    """
    env = os.environ if env is None else env
    path = str(path or env.get("RETENTION_CONFIG") or "policies.toml")
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the policy file: {e.strerror}", file=path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))     # Windows editors write a byte-order mark
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"not valid TOML: {e}", file=path) from None
    except RecursionError:
        raise ConfigError(_TOO_DEEP, file=path) from None
    problems = _value_problems(data, path) + not_built_yet(data, path)
    if problems:
        raise ConfigErrors(problems)
    try:
        model = _validate(data)
    except ValidationError as e:
        raise _pydantic_errors(e, data, path) from None
    except RecursionError:
        raise ConfigError(_TOO_DEEP, file=path) from None
    urls = _resolve_urls(model, path, env) if resolve_urls else {}
    _cross_check(model, path, urls)
    return Config(model, path, hashlib.sha256(raw).hexdigest(), urls)


def _resolve_urls(model: PolicyFile, path: str, env: Mapping[str, str]) -> dict[str, str]:
    urls = {}
    for name, db in model.databases.items():
        where = f"[databases.{name}]"
        if db.url:
            urls[name] = expand_env(db.url, env, file=path, where=where, key="url")
        else:
            file = expand_env(db.url_file, env, file=path, where=where, key="url_file")
            try:
                urls[name] = Path(file).read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ConfigError(f"cannot read '{file}': {e.strerror}", file=path, where=where, key="url_file") from None
            except UnicodeDecodeError:
                raise ConfigError(f"'{file}' is not UTF-8 text (a database URL is expected)",
                                  file=path, where=where, key="url_file") from None
            if not urls[name]:
                raise ConfigError(f"'{file}' is empty", file=path, where=where, key="url_file")
    return urls


def backup_problems(backup: BackupConfig) -> list[tuple[str, str]]:
    """(key, message) for each problem a ``[[backups]]`` entry has beyond its types."""
    from retention.backups.naming import PatternError, compile_pattern
    from retention.backups.policy import Policy

    problems = []
    if Policy.from_config(backup).is_empty():
        problems.append(("keep_*", "no keep_* key is set: this policy would remove every backup; set at least "
                                   "one of keep_last, keep_hourly .. keep_yearly, keep_within*, keep_tags"))
    location = backup.location.strip()
    if not location:
        problems.append(("location", "an empty location; write a directory or s3://bucket/prefix"))
    elif location.startswith("s3://"):
        if not location[len("s3://"):].partition("/")[0]:
            problems.append(("location", f"'{location}' names no bucket; write s3://bucket/prefix"))
    elif "://" in location:
        problems.append(("location", f"'{location}': a location is a directory or s3://bucket/prefix"))
    if backup.pattern is not None:
        try:
            compile_pattern(backup.pattern)
        except PatternError as e:
            problems.append(("pattern", str(e)))
    if backup.keep_tags is not None:
        if not location.startswith("s3://"):
            problems.append(("keep_tags", "a local directory has no tags; keep_tags needs an s3:// location "
                                          "(object tags)"))
        if any(not tag_set for tag_set in backup.keep_tags):
            problems.append(("keep_tags", "an empty tag set would keep every backup; list at least one tag"))
    for key in ("max_age", "max_gap"):
        span = getattr(backup, key)
        if span is not None and not (span.months or span.days or span.seconds):
            problems.append((key, f"{key} must be longer than zero"))
    return problems


def split_table(ref: str) -> tuple[str, str]:
    """``"shop.users"`` -> ``("shop", "users")``."""
    db, _, table = ref.partition(".")
    return db, table


def _backends(urls: Mapping[str, str]) -> dict[str, str]:
    """Database name -> SQLAlchemy backend name, for the URLs that parse (the others fail on connect)."""
    out = {}
    for name, url in urls.items():
        try:
            out[name] = make_url(url).get_backend_name()
        except Exception:  # noqa: BLE001 - any parse failure: reported, masked, when the database is opened
            continue
    return out


def _cross_check(model: PolicyFile, path: str, urls: Mapping[str, str]) -> None:
    errors: list[ConfigError] = []
    backends = _backends(urls)

    def err(msg: str, where: str | None, key: str | None) -> None:
        errors.append(ConfigError(msg, file=path, where=where, key=key))

    def check_table(ref: str, where: str, key: str = "table") -> None:
        db, table = split_table(ref)
        if not table:
            err(f"'{ref}' must be written database.table (e.g. 'shop.users')", where, key)
        elif db not in model.databases and db != "state":
            known = ", ".join(sorted(model.databases)) or "none"
            err(f"unknown database '{db}' in '{ref}' (databases: {known})", where, key)

    for name in model.databases:
        if not _IDENT.match(name):
            # tables are written database.table: a dot in the name could never be told apart
            err(f"'{name}' is not a valid database name (letters, digits and '_', not starting with a digit)",
                f"[databases.{name}]", None)
    for name, subj in model.subjects.items():
        check_table(subj.table, f"[subjects.{name}]")
    for ref in model.tables:
        check_table(ref, f'[tables."{ref}"]', "table")
    seen: set[str] = set()
    for rule in model.rules:
        where = f"rule '{rule.name}'"
        if rule.name in seen:
            err(f"duplicate rule name '{rule.name}'", where, "name")
        seen.add(rule.name)
        check_table(rule.table, where)
        for column, spec in rule.columns.items():
            try:
                build(spec)
            except StrategyParamError as e:
                key = f"columns.{column}" + (f".{e.key}" if e.key and e.key != "strategy" else "")
                err(e.message, where, key)
        backend = backends.get(split_table(rule.table)[0])
        if rule.where_sql is not None and backend:
            # parsed for the engine the rule runs on; the plan parses it again and runs what the parser wrote
            try:
                compile_where_sql(rule.where_sql, backend)
            except WhereSqlError as e:
                err(f"where_sql {e}", where, "where_sql")
    for kind, items in (("hold", model.holds), ("floor", model.floors), ("request", model.requests),
                        ("recipient", model.recipients), ("backup", model.backups)):
        names: set[str] = set()
        for item in items:
            where = f"{kind} '{item.name}'"
            if item.name in names:
                err(f"duplicate {kind} name '{item.name}'", where, "name")
            names.add(item.name)
            if hasattr(item, "table"):
                check_table(item.table, where)
            if kind == "backup":
                for key, message in backup_problems(item):
                    err(message, where, key)
            subject = getattr(item, "subject", None)
            if subject is not None and subject not in model.subjects:
                known = ", ".join(sorted(model.subjects)) or "none"
                err(f"unknown subject '{subject}' (subjects: {known})", where, "subject")
    if errors:
        raise ConfigErrors(errors)
