"""How many rows the next batch takes: sized by time, not by a fixed count.

A batch is a transaction holding locks the application may wait on, so its
length is what matters (``max_batch_seconds``), and the row count that fits
depends on the table, the engine and the load.  The first batch is small; each
committed batch tells how many rows per second its statements went at, and
what the batch cost besides them (its commit, its audit entry: the same for
any number of rows).  The next batch is sized so that both together last a
little under the target, growing at most fourfold at a time so that one quick
batch does not make the next one huge.  Where that fixed cost alone takes most
of the target (a slow disk's fsync), the statements still get half of it:
smaller batches would not be shorter, only more numerous.
"""

from __future__ import annotations

#: the first batch's rows: small enough to be quick anywhere, large enough to measure
FIRST_ROWS = 500
#: with no ``batch_size`` in the policy, no batch takes more than this many rows
CEILING = 100_000
#: batches aim at this share of ``max_batch_seconds``, so that their jitter stays under it
AIM = 0.75


class Pace:
    """Rows per batch for one rule, steered towards ``seconds`` per batch, never above ``ceiling``."""

    def __init__(self, seconds: float, ceiling: int) -> None:
        self.seconds = seconds
        self.ceiling = max(1, ceiling)
        self.rows = min(FIRST_ROWS, self.ceiling)

    def learn(self, rows: int, seconds: float, working: float | None = None) -> None:
        """A batch of ``rows`` rows took ``seconds``, ``working`` of them in its statements: size the next one."""
        working = seconds if working is None else min(working, seconds)
        if rows <= 0 or working <= 0:
            return
        aim = self.seconds * AIM
        budget = max(aim - (seconds - working), aim / 2)
        ideal = rows * budget / working
        self.rows = int(max(1, min(ideal, self.rows * 4, self.ceiling)))


def ceiling(settings, locked_key_columns: int | None, max_bind_params: int | None) -> int:
    """The most rows a batch may take: the policy's ``batch_size`` when it sets one, else :data:`CEILING`;
    and where a batch binds its locked keys one parameter per key column, what the engine can bind."""
    top = settings.batch_size if "batch_size" in settings.model_fields_set else CEILING
    if locked_key_columns and max_bind_params:
        top = min(top, max_bind_params // locked_key_columns)
    return top
