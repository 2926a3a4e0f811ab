"""Anonymization strategies: how an ``anonymize`` rule rewrites one column.

Each strategy is a small class registered by name in :data:`STRATEGIES`;
:func:`build` turns a policy-file value into an instance::

    columns.email = "hash"
    columns.phone = { strategy = "mask", keep_last = 4 }

Every strategy has two paths that must agree byte for byte: :meth:`Strategy.sql`
(a Core expression, used when the dialect can express it) and
:meth:`Strategy.apply` (Python, for one batch of values). NULL stays NULL: there
is nothing to anonymize. :meth:`Strategy.done` recognises values that need no
change, so a second run touches nothing; for every strategy but ``hash``,
``apply(apply(v)) == apply(v)``.
"""

from __future__ import annotations

from typing import Any, Mapping

from retention.anonymize.base import ColumnInfo, Strategy, StrategyParamError
from retention.anonymize.generalize import Generalize
from retention.anonymize.strategies import Constant, Hash, Mask, Null, RedactEmail

__all__ = ["STRATEGIES", "ColumnInfo", "Strategy", "StrategyParamError", "build",
           "Constant", "Generalize", "Hash", "Mask", "Null", "RedactEmail"]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Null, Constant, Hash, Mask, Generalize, RedactEmail)
}


def build(spec: str | Mapping[str, Any]) -> Strategy:
    """A strategy from its policy-file form: ``"hash"`` or ``{strategy = "mask", keep_last = 4}``."""
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("strategy", None)
        if name is None:
            raise StrategyParamError("strategy", f"missing 'strategy'; choose from: {', '.join(sorted(STRATEGIES))}")
    else:
        raise StrategyParamError("strategy", "expected a strategy name or a table such as "
                                             "{ strategy = \"mask\", keep_last = 4 }")
    cls = STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise StrategyParamError("strategy", f"unknown strategy '{name}'; choose from: {', '.join(sorted(STRATEGIES))}")
    return cls(**params)
