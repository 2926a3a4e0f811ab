"""Reports: one data model (:mod:`retention.report.model`), one renderer per format."""

from __future__ import annotations

from retention.report.model import Cascade, Guard, Protection, Report, RuleOutcome

FORMATS = ("text", "json", "markdown", "html")


def render(report: Report, fmt: str) -> str:
    """Render a report in one of :data:`FORMATS`."""
    if fmt == "json":
        from retention.report.json import render_json
        return render_json(report)
    if fmt == "markdown":
        from retention.report.markdown import render_markdown
        return render_markdown(report)
    if fmt == "html":
        from retention.report.html import render_html
        return render_html(report)
    if fmt == "text":
        from retention.report.text import render_text
        return render_text(report)
    raise ValueError(f"unknown report format '{fmt}' (choose from {', '.join(FORMATS)})")


__all__ = ["FORMATS", "Cascade", "Guard", "Protection", "Report", "RuleOutcome", "render"]
