"""Prometheus metrics of one run, for a batch job: a textfile or a Pushgateway push.

A batch job is not scraped while it runs; it leaves its numbers behind when it
ends.  Two ways are offered:

* ``--metrics-file PATH``: the node-exporter textfile collector format, written
  to a temporary file in the same directory and renamed over ``PATH``, so the
  collector never reads half a file;
* ``--pushgateway URL``: pushed with ``prometheus-client`` under the job name
  ``retention``, grouped by ``policy`` (the policy file's name without
  ``.toml``) and ``mode`` (``run``, ``dry-run``, ``simulation``), so a dry run
  never replaces the numbers of the enforcing job.

Every metric carries the ``policy`` and ``mode`` labels (two policies on one
host write two files without colliding series), and a shard of a sharded run
adds ``shard`` (``I/N``), so N shards never overwrite each other's series or
Pushgateway group.  Per-rule metrics add ``rule``;
labels hold rule, hold and floor names, actions and table names only, never a
row value or key.

``retention_last_success_timestamp_seconds`` only ever moves forward on a
successful run (exit code 0).  A failed run must not hide that nothing has
succeeded for days, so it keeps the previous value: the textfile carries over
the value of the file it replaces, and the Pushgateway gets a POST without that
metric (a POST replaces only the metric names it sends, so the last success
stays).  A successful run PUTs the whole group, dropping series of rules that
no longer exist.

Example alert: ``time() - retention_last_success_timestamp_seconds{mode="run"} > 26 * 3600``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from retention.errors import ConfigError, RetentionError
from retention.lazy import lazy
from retention.log import mask_text
from retention.report.model import Report
from retention.shards import parse_shard

# imported when metrics are written: a run without --metrics-file or --pushgateway never needs them
prometheus = lazy("prometheus_client")
prometheus_core = lazy("prometheus_client.core")
prometheus_parser = lazy("prometheus_client.parser")

JOB = "retention"
LAST_SUCCESS = "retention_last_success_timestamp_seconds"


class MetricsError(RetentionError):
    """The metrics could not be written or pushed (exit 1: the monitoring of the job is broken)."""

    exit_code = 1


@dataclass
class RunMetrics:
    """What one invocation of the job leaves for monitoring.

    ``report`` is None when the run ended before it had one (an unreachable
    database, an invalid policy file); ``exit_code`` is then the process's.
    """

    policy: str
    mode: str
    exit_code: int
    duration_seconds: float
    finished_at: float                       # Unix time the run ended (the last success, when it succeeded)
    report: Report | None = None
    #: "I/N" for a shard of a sharded run: a third label and grouping key, so N shards never overwrite each other
    shard: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def from_report(report: Report, duration_seconds: float) -> RunMetrics:
    """The metrics of a run that produced a report."""
    finished = report.finished_at.timestamp() if report.finished_at else time.time()
    return RunMetrics(policy=policy_name(report.config_path), mode=report.to_dict()["mode"],
                      exit_code=report.exit_code, duration_seconds=duration_seconds,
                      finished_at=finished, report=report, shard=report.shard)


def from_failure(config_path: str | None, mode: str, exit_code: int, duration_seconds: float,
                 shard: str | None = None) -> RunMetrics:
    """The metrics of a run that stopped before it had a report (the error's exit code)."""
    return RunMetrics(policy=policy_name(config_path), mode=mode, exit_code=exit_code,
                      duration_seconds=duration_seconds, finished_at=time.time(), shard=shard_label(shard))


def shard_label(text: str | None) -> str | None:
    """The ``shard`` label for ``--shard`` text: ``I/N`` as the shard's report writes it (``" 01/4"`` -> ``"1/4"``).

    A failed shard's series must be its successful runs' series, or its
    failure goes unseen and its last success is lost.  Text that names no
    shard stays as written: still apart from the whole run's series.

    >>> shard_label(" 01/4"), shard_label("1 of 4"), shard_label(None)
    ('1/4', '1 of 4', None)
    """
    if text is None:
        return None
    try:
        return str(parse_shard(text))
    except ConfigError:
        return text


def policy_name(config_path: str | None) -> str:
    """``/etc/retention/policies.toml`` -> ``policies``: the ``policy`` label and grouping key."""
    return Path(config_path or os.environ.get("RETENTION_CONFIG") or "policies.toml").stem


class _Collector:
    """Yields the metric families of one run (a custom collector: no global state)."""

    def __init__(self, m: RunMetrics, *, last_success: float | None) -> None:
        self.m = m
        self.last_success = last_success

    def collect(self) -> Iterable[prometheus_core.GaugeMetricFamily]:
        m = self.m
        base = ["policy", "mode"] + (["shard"] if m.shard else [])
        bv = [m.policy, m.mode] + ([m.shard] if m.shard else [])

        def gauge(name: str, doc: str, labels: list[str] | None = None):
            return prometheus_core.GaugeMetricFamily(name, doc, labels=base + (labels or []))

        if self.last_success is not None:
            g = gauge(LAST_SUCCESS, "Unix time the last successful run (exit code 0) ended.")
            g.add_metric(bv, self.last_success)
            yield g
        g = gauge("retention_last_run_timestamp_seconds", "Unix time the last run ended, whatever its outcome.")
        g.add_metric(bv, m.finished_at)
        yield g
        g = gauge("retention_run_duration_seconds", "How long the last run took, in seconds.")
        g.add_metric(bv, m.duration_seconds)
        yield g
        g = gauge("retention_run_exit_code", "Exit code of the last run (0 ok, 1 failed, 2 invalid policy, "
                                             "3 guard tripped, 4 lock held).")
        g.add_metric(bv, m.exit_code)
        yield g
        g = gauge("retention_run_success", "1 if the last run succeeded (exit code 0), else 0.")
        g.add_metric(bv, 1 if m.succeeded else 0)
        yield g
        if m.report is None:
            return
        yield from self._rules(m.report, gauge, bv)

    @staticmethod
    def _rules(report: Report, gauge, bv: list[str]) -> Iterable[prometheus_core.GaugeMetricFamily]:
        rows = gauge("retention_rows_total",
                     "Rows the last run touched per rule (would touch, in a dry run). action is the rule's "
                     "action for its own rows, cascade_delete or cascade_detach for rows in child tables.",
                     ["rule", "action"])
        due = gauge("retention_rows_due", "Rows whose retention period had run out, per rule.", ["rule"])
        remaining = gauge("retention_rows_remaining",
                          "Due rows left undone because the guard tripped or the rule failed.", ["rule"])
        protected = gauge("retention_rows_protected",
                          "Due rows kept by a protector, per rule: protection is hold, floor or children "
                          "(a blocking child table), protector its name.", ["rule", "protection", "protector"])
        guard = gauge("retention_guard_tripped", "1 if the rule's guard tripped (it touched nothing).", ["rule"])
        failed = gauge("retention_rule_failed", "1 if the rule failed.", ["rule"])
        seconds = gauge("retention_rule_duration_seconds", "How long the rule took, in seconds.", ["rule"])
        smallest = gauge("retention_k_anonymity_smallest_class",
                         "The smallest class of the rule's anonymized rows over its quasi-identifiers "
                         "([rules.check]); the check fails below k.", ["rule", "k"])
        for r in report.rules:
            rows.add_metric(bv + [r.rule, r.action], r.touch)
            by_action: dict[str, int] = {}
            for c in r.cascades:
                by_action[f"cascade_{c.action}"] = by_action.get(f"cascade_{c.action}", 0) + c.rows
            for action, n in sorted(by_action.items()):
                rows.add_metric(bv + [r.rule, action], n)
            due.add_metric(bv + [r.rule], r.due)
            remaining.add_metric(bv + [r.rule], r.remaining)
            for p in r.protected:
                protected.add_metric(bv + [r.rule, p.kind, p.name], p.rows)
            guard.add_metric(bv + [r.rule], 1 if r.status == "guard_tripped" else 0)
            failed.add_metric(bv + [r.rule], 1 if r.status in ("failed", "check_failed") else 0)
            seconds.add_metric(bv + [r.rule], r.duration_seconds)
            if r.check and r.check["smallest_class"] is not None:
                smallest.add_metric(bv + [r.rule, str(r.check["k"])], r.check["smallest_class"])
        yield from (rows, due, remaining, protected, guard, failed, seconds, smallest)


def registry(m: RunMetrics, *, last_success: float | None) -> prometheus.CollectorRegistry:
    """A registry holding exactly this run's metrics (``last_success`` None: that metric is left out)."""
    reg = prometheus.CollectorRegistry(auto_describe=True)
    reg.register(_Collector(m, last_success=last_success))
    return reg


def previous_last_success(path: Path, m: RunMetrics) -> float | None:
    """The last-success value in an earlier textfile for the same policy and mode, if any."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        for family in prometheus_parser.text_string_to_metric_families(text):
            for s in family.samples:
                if (s.name == LAST_SUCCESS and s.labels.get("policy") == m.policy
                        and s.labels.get("mode") == m.mode and s.labels.get("shard") == m.shard):
                    return s.value
    except ValueError:     # a damaged file: start afresh rather than fail the run's monitoring
        return None
    return None


def write_textfile(path: str | os.PathLike, m: RunMetrics) -> None:
    """Write the run's metrics for node-exporter's textfile collector, atomically.

    The text goes to a hidden temporary file in the same directory (the
    collector reads only ``*.prom``), is flushed to disk and renamed over
    ``path``: a reader sees the old file or the new one, never a mix.
    """
    target = Path(path)
    last = m.finished_at if m.succeeded else previous_last_success(target, m)
    data = prometheus.generate_latest(registry(m, last_success=last))
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise MetricsError(f"cannot write the metrics file '{target}': {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)          # node-exporter usually runs as another user
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise MetricsError(f"cannot write the metrics file '{target}': {e.strerror}") from None


def grouping_key(m: RunMetrics) -> dict[str, str]:
    """The Pushgateway group of a run: one per policy and mode (and shard, in a sharded run)."""
    return {"policy": m.policy, "mode": m.mode, **({"shard": m.shard} if m.shard else {})}


def push(url: str, m: RunMetrics, *, timeout: float = 10.0) -> None:
    """Push the run's metrics to a Pushgateway at ``url`` (job ``retention``).

    A successful run replaces its whole group (PUT).  A failed one adds with a
    POST and leaves ``retention_last_success_timestamp_seconds`` out, so the
    gateway keeps the value of the last success.
    """
    try:
        if m.succeeded:
            prometheus.push_to_gateway(url, job=JOB, registry=registry(m, last_success=m.finished_at),
                            grouping_key=grouping_key(m), timeout=timeout)
        else:
            prometheus.pushadd_to_gateway(url, job=JOB, registry=registry(m, last_success=None),
                               grouping_key=grouping_key(m), timeout=timeout)
    except Exception as e:   # urllib raises URLError, HTTPError, OSError, ValueError for a bad URL
        raise MetricsError(f"cannot push the metrics to {mask_text(url)}: {mask_text(str(e))}") from None


def publish(m: RunMetrics, *, metrics_file: str | None = None, pushgateway: str | None = None) -> None:
    """Write and/or push, as asked; raise :class:`MetricsError` if either fails (after trying both)."""
    errors = []
    for target, fn in ((metrics_file, write_textfile), (pushgateway, push)):
        if target:
            try:
                fn(target, m)
            except MetricsError as e:
                errors.append(str(e))
    if errors:
        raise MetricsError("; ".join(errors))
