"""Batches over where rows are stored, not over their keys: ``PageWalk``.

Where the engine can select the rows stored on a range of pages directly
(PostgreSQL's TID ranges: ``ctid >= '(p,0)' AND ctid < '(q,0)'``, read by a
TID Range Scan, see :meth:`DialectImpl.page_range`), a batch is the rule's
whole statement over pages ``[p, q)``: ``DELETE ... WHERE <pages> AND <work>``.
SQLite's rowids serve as pages (``rowid >= p AND rowid < q``): a rowid table
is stored in rowid order and an update keeps a row's rowid, so what follows
holds there with "rowid" for "page" (and no row ever moves).
No query finds a batch's bound first, whatever the key (UUID, text,
composite), and the batch reads only its own pages.

How many pages a range spans is learned, as :class:`KeyWalk` learns key
density: the rows the last range held per page, aiming at the pace's rows;
never more than four times the last range's pages (a run of sparse pages
does not send the next range blindly across dense ones), and never more
pages than the last range's time per page fits into the batch's time.  The
first range assumes the rows the run counted are spread evenly and takes a
quarter of that, since they may be bunched (an insertion-ordered table keeps
old rows together).  The table's size is read once; when the walk reaches
its end it is read again, and pages added meanwhile are walked too.

Why every row is touched at most once, and none that the rule protects:

* Each batch carries the whole rule (``<work>``), re-checked by the write
  itself, as with key ranges: a hold placed meanwhile keeps its rows.
* A row the walk updates (anonymize, restrict) gets a new version, often on
  another page, maybe one not yet walked.  When the walk reaches it, it no
  longer matches: a restricted row's column is set, an anonymized row is
  done (its mark is set, or the SQL path's ``done`` test excludes it).  The
  Python path of ``anonymize`` reads it again and finds every value done
  (a strategy's output is ``done``: the contract the key walk relies on
  across runs), so it is skipped, neither written nor counted.
* A row the application moves (an update of any column) meanwhile is where
  its newest version is: on a page not yet walked it is done there, once; on
  a page already walked it waits for the next run and is reported remaining,
  as a row whose key range was passed would be.  A row the application
  updates while a batch's statement reads it is followed to its newest
  version by the statement (PostgreSQL re-checks the rule on it), and then
  no longer matches when its new page is walked.
* The run never touches more than it counted, and no batch more than the
  ceiling: a range's rows are known only once written, so a range over the
  allowance or the ceiling is rolled back and done again by batches whose
  query stops in time (key order within the range's pages).
* Workers take disjoint page ranges under the walk's lock.  Deletes that
  lock keys first (cascades, blocking children) select the keys with the
  range, then lock, re-check and write them as over a key range.

Where this does not apply the walk is not used (:func:`pages_of` is None)
and batches walk keys: partitioned tables (a ``ctid`` per partition),
tables with triggers or rules (a batch must count the rows it selects to
tell refused rows), integer keys (:class:`KeyWalk` needs no query either),
SQLite's WITHOUT ROWID tables and tables given negative rowids by hand.
"""

from __future__ import annotations

from retention.plan import RulePlan


class PageWalk:
    """Page ranges ``[lo, hi)`` over a table of ``pages`` pages, sized by the rows they held."""

    def __init__(self, pages: int, rows: int) -> None:
        self.end = pages                                # the table's pages when last read
        self.density = rows / pages if pages else 0.0   # rows needing work per page
        self.span = 0                                   # the last range's pages (0: none yet)
        self.page_seconds = 0.0                         # the last range's statements' time per page

    def step(self, lo: int, rows: int, seconds: float) -> int:
        """The ``hi`` of the range from page ``lo`` meant to hold about ``rows`` rows in ``seconds``."""
        if self.density > 0:
            want = rows / self.density
        else:
            want = 4 * self.span if self.span else float(self.end - lo)
        if self.span:
            want = min(want, 4 * self.span)
        else:
            want /= 4
        if self.page_seconds > 0:
            want = min(want, seconds / self.page_seconds)
        return lo + max(1, int(want))

    def next_range(self, conn, plan: RulePlan, lo: int | None, rows: int, seconds: float) -> tuple:
        """``(lo, hi)`` of the next range from page ``lo`` (None: the first page); ``hi`` None: no page left."""
        lo = lo or 0
        if lo >= self.end:
            # the end as the walk knew it: pages added meanwhile are walked too
            self.end = pages_of(conn, plan) or 0
            if lo >= self.end:
                return lo, None
        return lo, self.step(lo, rows, seconds)

    def learn(self, lo: int, hi: int, rows: int, seconds: float) -> None:
        """The range ``[lo, hi)`` held ``rows`` rows, its statements took ``seconds``."""
        self.span = max(1, hi - lo)
        self.density = rows / self.span
        self.page_seconds = seconds / self.span


def pages_of(conn, plan: RulePlan) -> int | None:
    """The pages of the rule's table where batches may walk them (see the module), else None."""
    return plan.impl.heap_pages(conn, plan.table.table)
