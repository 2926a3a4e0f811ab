"""The ``retention`` command: click glue over :mod:`retention.commands`.

Options are parsed here, reports written to stdout (or ``--out``), logs to
stderr, and errors mapped to exit codes: 0 ok, 1 a rule failed, 2 invalid
policy file or command line, 3 a guard tripped, 4 another run holds the lock.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from retention import commands, metrics
from retention.errors import ConfigError, RetentionError
from retention.log import configure_logging, mask_text
from retention.report import FORMATS, render


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
    f = click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                     help="Report format.")(f)
    f = click.option("--out", "out", type=click.Path(dir_okay=False), default=None, callback=_writable,
                     help="Write the report to FILE instead of stdout.")(f)
    f = click.option("--sql", "show_sql", is_flag=True, help="Show the statements each rule runs.")(f)
    f = click.option("--simulate", "simulate", is_flag=True,
                     help="Dry run that executes everything in one transaction per database and rolls it "
                          "back: exact numbers where rules overlap, but holds a run's locks until the end.")(f)
    f = click.option("--allow-large", "allow_large", is_flag=True,
                     help="Let rules touch more rows than their guard allows.")(f)
    return f


def _emit(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text)
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
    _emit(render(report, fmt), out)
    sys.exit(report.exit_code)


@cli.command()
@click.option("--dry-run", "dry_run", is_flag=True, help="Report what would be done; change nothing.")
@click.option("--metrics-file", "metrics_file", type=click.Path(dir_okay=False), default=None,
              callback=_writable, help="Write Prometheus metrics to FILE (node-exporter textfile format).")
@click.option("--pushgateway", "pushgateway", default=None, metavar="URL",
              help="Push Prometheus metrics to this Pushgateway (job 'retention').")
@report_options
@global_options
def run(opts, dry_run, metrics_file, pushgateway, fmt, out, show_sql, simulate, allow_large) -> None:
    """Enforce the policy (or report, with --dry-run)."""
    started = time.monotonic()
    publish = functools.partial(metrics.publish, metrics_file=metrics_file, pushgateway=pushgateway)
    try:
        report = commands.run(opts["config"], dry_run=dry_run, only=opts["only"], now=opts["now"],
                              allow_large=allow_large, show_sql=show_sql, simulate=simulate)
    except RetentionError as e:
        if metrics_file or pushgateway:   # a run that never got going is a failure monitoring must see
            mode = "simulation" if simulate else "dry-run" if dry_run else "run"
            _publish_quietly(publish, metrics.from_failure(opts["config"], mode, e.exit_code,
                                                           time.monotonic() - started))
        raise
    _emit(render(report, fmt), out)
    code = report.exit_code
    if metrics_file or pushgateway:
        if not _publish_quietly(publish, metrics.from_report(report, time.monotonic() - started)):
            code = code or 1
    sys.exit(code)


def _publish_quietly(publish, m) -> bool:
    """Publish the metrics; on failure say so on stderr and return False (the run's work stands)."""
    try:
        publish(m)
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
    click.echo(f"demo shop built at {mask_text(url)}: " + ", ".join(f"{t} {n}" for t, n in counts.items()),
               err=True)
    _emit(render(report, fmt), out)
    sys.exit(report.exit_code)


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


def main() -> None:
    cli(prog_name="retention")
