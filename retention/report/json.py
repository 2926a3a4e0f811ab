"""The report for scripts: ``Report.to_dict()`` as indented JSON.

This is the contract documented in the README (``schema_version`` 1): keys
appear in the order :meth:`Report.to_dict` builds them, so two reports diff
line by line.  Datetimes are ISO 8601 strings.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from retention.log import mask_text
from retention.report.model import Report


def _default(value: Any) -> Any:
    # to_dict() already converts the datetimes it knows; this keeps fields
    # added later from breaking the renderer.
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"report value of type {type(value).__name__} is not JSON serializable")


def _masked(value: Any) -> Any:
    # Error messages can quote a connection URL; the report must not leak it.
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def render_json(report: Report) -> str:
    """``report`` as a JSON document (two-space indent, ends with a newline)."""
    # ASCII escapes: the output must survive a C-locale pipe byte for byte.
    return json.dumps(_masked(report.to_dict()), indent=2, sort_keys=False, default=_default) + "\n"
