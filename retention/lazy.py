"""Modules imported on first use, for what only some commands or some policies need.

A run pays for every import at process start, and cron starts a process
each time.  sqlglot is needed only by a rule with ``where_sql`` text,
prometheus-client only when metrics are written: a module bound with
:func:`lazy` is imported when one of its attributes is first read, so a
policy that never reaches it never pays for it.  Engine modules are loaded
the same way, by the dialect registry (:func:`retention.dialects.impl_for`).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for the module ``name`` until an attribute is read, then imports it (once)."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        module = self._module
        if module is None:
            # the import system's lock makes a first use from two threads import once
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


def lazy(name: str) -> LazyModule:
    """The module ``name``, imported when an attribute of it is first read.

    >>> json = lazy("json")
    >>> json.dumps([1])
    '[1]'
    """
    return LazyModule(name)
