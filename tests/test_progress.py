"""The progress bar is a run subscriber: it follows the committed batches, on a terminal only."""

from __future__ import annotations

import io
import sys
from datetime import datetime

from tests.shopkit import LOGS_PURGE, outcome


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _logs(shop, n: int) -> None:
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1))
                          for i in range(1, n + 1)])


def test_the_bar_counts_the_committed_rows_of_each_rule(sqlite_shop, monkeypatch):
    _logs(sqlite_shop, 5)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = sqlite_shop.run(sqlite_shop.policy(LOGS_PURGE, settings="batch_size = 2"), now=datetime(2025, 1, 1))
    assert outcome(report, "logs-purge").touch == 5
    drawn = terminal.getvalue()
    assert "logs-purge [" in drawn and "5/5 100%" in drawn
    assert "3/5" not in drawn.rsplit("\r", 1)[-1]          # the last drawing is the finished bar


def test_a_dry_run_and_a_non_terminal_draw_no_bar(sqlite_shop, monkeypatch):
    _logs(sqlite_shop, 3)
    policy = sqlite_shop.policy(LOGS_PURGE)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    sqlite_shop.run(policy, dry_run=True, now=datetime(2025, 1, 1))
    assert "logs-purge [" not in terminal.getvalue()
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    sqlite_shop.run(policy, now=datetime(2025, 1, 1))
    assert "logs-purge [" not in plain.getvalue()
