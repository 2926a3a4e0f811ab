"""The ``retention`` command: click glue over :mod:`retention.commands`.

Options are parsed here, reports written to stdout (or ``--out``), logs to
stderr, and errors mapped to exit codes: 0 ok, 1 a rule failed, 2 invalid
policy file or command line, 3 a guard tripped, 4 another run holds the lock,
130/143 stopped by SIGINT/SIGTERM (the report of what was done is still written).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from retention import commands
from retention.errors import ConfigError, RetentionError
from retention.lazy import lazy
from retention.log import configure_logging, mask_text
from retention.report import FORMATS, render

# imported by the runs that write or push metrics only: cron pays every import on every run
metrics = lazy("retention.metrics")


def _parse_now(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an ISO 8601 date or time (e.g. 2026-01-31T12:00:00Z)",
                                 param_hint="--now") from None


def global_options(f):
    """--config, --only, --now, --log-format: accepted before or after the verb."""

    # no envvar here: RETENTION_CONFIG is read once, by the group, so an explicit
    # --config before the verb is never overridden by the environment
    @click.option("--config", "-c", "config", default=None,
                  help="Policy file (default ./policies.toml, env RETENTION_CONFIG).")
    @click.option("--only", "only", multiple=True, metavar="RULE", help="Run only this rule (repeatable).")
    @click.option("--now", "now", default=None, metavar="TIME",
                  help="Override the clock (ISO 8601), for reports 'as of' a moment.")
    @click.option("--log-format", "log_format", type=click.Choice(["json", "console"]), default=None,
                  help="Log format on stderr (default: console on a TTY, JSON otherwise).")
    @click.pass_context
    @functools.wraps(f)
    def wrapper(ctx: click.Context, config, only, now, log_format, **kwargs):
        obj = ctx.ensure_object(dict)
        opts = {
            "config": config or obj.get("config"),
            "only": list(only) or obj.get("only") or [],
            "now": _parse_now(now) or obj.get("now"),
            "log_format": log_format or obj.get("log_format"),
        }
        configure_logging(opts["log_format"])
        try:
            return f(opts, **kwargs)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except RetentionError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config", envvar="RETENTION_CONFIG", default=None,
              help="Policy file (default ./policies.toml, env RETENTION_CONFIG).")
@click.option("--only", "only", multiple=True, metavar="RULE", help="Run only this rule (repeatable).")
@click.option("--now", "now", default=None, metavar="TIME", help="Override the clock (ISO 8601).")
@click.option("--log-format", "log_format", type=click.Choice(["json", "console"]), default=None,
              help="Log format on stderr (default: console on a TTY, JSON otherwise).")
@click.version_option(package_name="retention")
@click.pass_context
def cli(ctx: click.Context, config, only, now, log_format) -> None:
    """Enforce data-retention and deletion rules from policies.toml."""
    ctx.obj = {"config": config, "only": list(only), "now": _parse_now(now), "log_format": log_format}


def _writable(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse an --out that cannot be written before anything runs, not after the run."""
    if value is None:
        return None
    parent = Path(value).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK) or (
            Path(value).exists() and not os.access(value, os.W_OK)):
        raise click.BadParameter(f"cannot write '{value}' (no such directory, or not writable)")
    return value


def report_options(f):
    f = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                     help="Report format (default: from --out's extension, .json, .md or .html; else text).")(f)
    f = click.option("--out", "out", type=click.Path(dir_okay=False), default=None, callback=_writable,
                     help="Write the report to FILE instead of stdout.")(f)
    f = click.option("--sql", "show_sql", is_flag=True, help="Show the statements each rule runs.")(f)
    f = click.option("--simulate", "simulate", is_flag=True,
                     help="Dry run that executes everything in one transaction per database and rolls it "
                          "back: exact numbers where rules overlap, but holds a run's locks until the end.")(f)
    f = click.option("--allow-large", "allow_large", is_flag=True,
                     help="Let rules touch more rows than their guard allows.")(f)
    return f


def _format(fmt: str | None, out: str | None, *, default: str = "text", choices: tuple[str, ...] = FORMATS) -> str:
    """--format, else what --out's name says among ``choices`` (plan.json is JSON: the plan ``run --plan``
    applies), else ``default``."""
    if fmt:
        return fmt
    suffix = Path(out).suffix.lower() if out else ""
    named = {".json": "json", ".md": "markdown", ".html": "html", ".htm": "html"}.get(suffix)
    return named if named in choices else default


def _emit(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=not text.endswith("\n"))


@cli.command()
@global_options
def check(opts) -> None:
    """Validate the policy file and bind it to the live schemas; touch no data."""
    result = commands.check(opts["config"])
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    for note in result.privilege_notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{result.config_path}: OK ({result.rules} rules on {len(result.tables)} tables)")


@cli.command()
@report_options
@global_options
def plan(opts, fmt, out, show_sql, simulate, allow_large) -> None:
    """The dry-run report: what a run would touch, protect and cascade."""
    report = commands.plan(opts["config"], only=opts["only"], now=opts["now"],
                           allow_large=allow_large, show_sql=show_sql, simulate=simulate)
    _emit(render(report, _format(fmt, out)), out)
    sys.exit(report.exit_code)


@cli.command()
@click.option("--dry-run", "dry_run", is_flag=True, help="Report what would be done; change nothing.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), default=None, metavar="PLAN.json",
              help="Apply this reviewed plan exactly (written by `retention plan --out plan.json`).")
@click.option("--max-drift", "max_drift", default=None, metavar="N|P%",
              help="With --plan: how many more rows (or percent) a rule may have to touch than the plan "
                   "counted before it is refused (default 0).")
@click.option("--metrics-file", "metrics_file", type=click.Path(dir_okay=False), default=None,
              callback=_writable, help="Write Prometheus metrics to FILE (node-exporter textfile format).")
@click.option("--pushgateway", "pushgateway", default=None, metavar="URL",
              help="Push Prometheus metrics to this Pushgateway (job 'retention').")
@click.option("--workers", "workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Run each rule's batches on this many connections at once, over disjoint key ranges "
                   "(PostgreSQL, MariaDB/MySQL; SQLite writes one batch at a time and runs with 1).")
@click.option("--shard", "shard", default=None, metavar="I/N",
              help="Do shard I of N (I from 0): every rule on its 1/N of the keys, so N runs together do "
                   "one run's work; requests and notifications are shard 0's. On a Kubernetes Indexed Job: "
                   "--shard $(JOB_COMPLETION_INDEX)/N.")
@report_options
@global_options
def run(opts, dry_run, plan_file, max_drift, metrics_file, pushgateway, workers, fmt, out, show_sql, simulate,
        allow_large, shard) -> None:
    """Enforce the policy (or report, with --dry-run)."""
    started = time.monotonic()
    try:
        report = commands.run(opts["config"], dry_run=dry_run, only=opts["only"], now=opts["now"],
                              allow_large=allow_large, show_sql=show_sql, simulate=simulate,
                              plan_file=plan_file, max_drift=max_drift, workers=workers, shard=shard)
    except RetentionError as e:
        if metrics_file or pushgateway:   # a run that never got going is a failure monitoring must see
            mode = "simulation" if simulate else "dry-run" if dry_run else "run"
            _publish_quietly(metrics_file, pushgateway,
                             metrics.from_failure(opts["config"], mode, e.exit_code, time.monotonic() - started,
                                                  shard=shard))
        raise
    _emit(render(report, _format(fmt, out)), out)
    code = report.exit_code
    if metrics_file or pushgateway:
        if not _publish_quietly(metrics_file, pushgateway, metrics.from_report(report, time.monotonic() - started)):
            code = code or 1
    sys.exit(code)


def _publish_quietly(metrics_file, pushgateway, m) -> bool:
    """Publish the metrics; on failure say so on stderr and return False (the run's work stands)."""
    try:
        metrics.publish(m, metrics_file=metrics_file, pushgateway=pushgateway)
        return True
    except metrics.MetricsError as e:
        click.echo(f"error: {e}", err=True)
        return False


@cli.command()
@click.option("--url", default=commands.DEMO_URL, show_default=True,
              help="Where to build the demo shop; an earlier demo there is rebuilt, and tables of "
                   "the same names that the demo did not create are never touched (it refuses).")
@click.option("--seed", default=7, show_default=True, help="Random seed of the demo data.")
@report_options
@global_options
def demo(opts, url, seed, fmt, out, show_sql, simulate, allow_large) -> None:
    """Build the embedded SQLite demo shop and print the dry-run report of policies.toml.

    The report is always a simulation (exact numbers): the demo database is the job's own.
    """
    counts, report = commands.demo(opts["config"], url=url, now=opts["now"], seed=seed, only=opts["only"],
                                   show_sql=show_sql, allow_large=allow_large)
    fmt = _format(fmt, out)
    click.echo(f"demo shop built at {mask_text(url)}: " + ", ".join(f"{t} {n}" for t, n in counts.items()),
               err=True)
    _emit(render(report, fmt), out)
    sys.exit(report.exit_code)


@cli.group()
def state() -> None:
    """The job's own tables (settings.state_url): audit log, leases."""


@state.command("upgrade")
@global_options
def state_upgrade(opts) -> None:
    """Create or upgrade the state store's tables (runs also do it on first use)."""
    where, before, after = commands.state_upgrade(opts["config"])
    if before == after:
        click.echo(f"{where}: at schema version {after}, nothing to do")
    else:
        click.echo(f"{where}: upgraded from schema version {before} to {after}")


@cli.group()
def audit() -> None:
    """The hash-chained audit log in the state store."""


@audit.command("verify")
@click.option("--head", default=None, metavar="SHA256",
              help="A chain head a report printed: it must still be in the log (catches a cut-off tail).")
@global_options
def audit_verify(opts, head) -> None:
    """Check the chain; name the first entry that was edited, inserted, deleted or moved (exit 1)."""
    verdict = commands.audit_verify(opts["config"], head=head)
    if verdict.ok:
        click.echo(f"audit log OK: {verdict.checked} entries, head {verdict.head}")
        return
    where = f"entry {verdict.bad_seq}" if verdict.bad_seq is not None else "the log"
    click.echo(f"audit log BROKEN at {where}: {verdict.reason} ({verdict.checked} entries before it are intact)",
               err=True)
    sys.exit(1)


def _parse_since(value: str | None) -> datetime | None:
    moment = _parse_now(value) if value else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


@audit.command("show")
@click.option("--run", "run_id", default=None, metavar="ID", help="Only this run's entries.")
@click.option("--since", default=None, metavar="DATE", help="Only entries at or after this moment (ISO 8601).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@global_options
def audit_show(opts, run_id, since, fmt) -> None:
    """The audit log: one summary line per run, then its entries."""
    from retention.audit import runs
    try:
        moment = _parse_since(since)
    except click.BadParameter:
        raise click.BadParameter(f"'{since}' is not an ISO 8601 date or time", param_hint="--since") from None
    entries = commands.audit_entries(opts["config"], run_id=run_id, since=moment)
    if fmt == "json":
        click.echo(json.dumps({"runs": runs(entries), "entries": [e.to_dict() for e in entries]}, indent=2))
        return
    for r in runs(entries):
        click.echo(f"run {r['run_id']}  {r['mode'] or '?'}"
                   + (f"  shard {r['shard']}" if r.get("shard") else "") + f"  started {r['started_at'] or '?'}  "
                   f"ended {r['ended_at'] or '-'}  outcome {r['outcome']}  by {r.get('user') or '?'}@"
                   f"{r.get('host') or '?'}  batches {r['batches']}"
                   + (f"  (batch {r['open_batch']} intended, outcome not recorded)" if r["open_batch"] else ""))
    for e in entries:
        click.echo(f"{e.seq:>6}  {e.at}  {e.run_id}  {e.kind:<16} {json.dumps(e.body, sort_keys=True)}")


@cli.group()
def backups() -> None:
    """Backup sets ([[backups]]): rotation."""


@backups.command("rotate")
@click.option("--dry-run", "dry_run", is_flag=True, help="List what would be kept and removed; remove nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@global_options
def backups_rotate(opts, dry_run, fmt) -> None:
    """Keep and remove backups per their policy (restic forget semantics, max_age, max_gap).

    --only names backup sets here.
    """
    report = commands.backups_rotate(opts["config"], dry_run=dry_run, now=opts["now"], only=opts["only"])
    _emit(json.dumps(report.to_dict(), indent=2) if fmt == "json" else report.render_text(), None)
    sys.exit(report.exit_code)


@cli.group()
def request() -> None:
    """File an erasure request ([[requests]])."""


@request.command("erase")
@click.argument("target", metavar="SUBJECT:KEY")
@click.option("--reason", default=None, help="Why (kept with the request where the queue has a reason column).")
@click.option("--queue", default=None, metavar="NAME", help="The [[requests]] entry, when several take the subject.")
@global_options
def request_erase(opts, target, reason, queue) -> None:
    """File a request to erase everything about SUBJECT:KEY (e.g. customer:42); the next run fulfils it."""
    from retention.requests.commands import file_request
    item = file_request(opts["config"], target, reason=reason, queue=queue, now=opts["now"])
    click.echo(f"filed {item['request']} for {target}: deadline {item['deadline']} ({item['days_left']} days)")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["markdown", "html"]), default=None,
              help="Document format (default: from --out's extension, .html or .md; else markdown).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, callback=_writable,
              help="Write the document to FILE instead of stdout.")
@global_options
def schedule(opts, fmt, out) -> None:
    """The retention schedule as a document: data, period, basis, action; from the policy file alone."""
    from retention.schedule import render as render_schedule
    document = commands.schedule(opts["config"], only=opts["only"], now=opts["now"])
    _emit(render_schedule(document, _format(fmt, out, default="markdown", choices=("markdown", "html"))), out)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown", "html"]), default=None,
              help="Format (default: from --out's extension, .json, .md or .html; else text).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, callback=_writable,
              help="Write the list to FILE instead of stdout.")
@global_options
def coverage(opts, fmt, out) -> None:
    """Personal-looking columns in every table, and what in the policy deletes or rewrites each."""
    from retention.coverage import render as render_coverage
    _emit(render_coverage(commands.coverage(opts["config"]), _format(fmt, out)), out)


@cli.command("requests")
@click.option("--outbox", "show_outbox", is_flag=True, help="Also list the recipients' undelivered notifications.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@global_options
def requests_list(opts, show_outbox, fmt) -> None:
    """Erasure requests with received date, deadline, days left, status; the ledger; the outbox."""
    from retention.requests.commands import list_requests, render_listing
    data = list_requests(opts["config"], now=opts["now"], outbox=show_outbox)
    _emit(json.dumps(data, indent=2, default=str) + "\n" if fmt == "json" else render_listing(data), None)


@cli.command()
@click.option("--backup-time", "backup_time", default=None, metavar="TIME",
              help="When the restored backup was taken (ISO 8601).")
@click.option("--backup", "backup_name", default=None, metavar="NAME",
              help="The restored backup's name: its time is read from the [[backups]] inventory.")
@click.option("--dry-run", "dry_run", is_flag=True, help="Show what would be erased again; change nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@global_options
def replay(opts, backup_time, backup_name, dry_run, fmt) -> None:
    """After a restore: erase again every subject the ledger erased after the backup was taken."""
    from retention.replay import replay as run_replay
    when = _parse_since(backup_time) if backup_time else None
    result = run_replay(opts["config"], backup_time=when, backup=backup_name, dry_run=dry_run)
    _emit(json.dumps(result.to_dict(), indent=2) + "\n" if fmt == "json" else result.render_text(), None)


def main() -> None:
    cli(prog_name="retention")
