"""One error hierarchy; each class maps to one process exit code."""

from __future__ import annotations


class RetentionError(Exception):
    """Base of every error the job raises on purpose."""

    exit_code = 1


class ConfigError(RetentionError):
    """The policy file or the command line is invalid.

    The message names the file, the rule (or section) and the key, so an
    operator can go straight to the line to fix::

        policies.toml: rule 'access-logs' key 'after': '3m' is ambiguous; write '3mo' or '3min'
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, where: str | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.where = where
        self.key = key
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:")
        if self.where:
            parts.append(f"{self.where}")
        if self.key:
            parts.append(f"key '{self.key}':")
        elif self.where:
            parts[-1] += ":"
        parts.append(self.detail)
        return " ".join(parts)


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.detail, file=first.file, where=first.where, key=first.key)

    def _render(self) -> str:  # pragma: no cover - exercised via str()
        return "\n".join(ConfigError._render(e) for e in self.errors)


class GuardTripped(RetentionError):
    """A rule would touch more rows than its guard allows."""

    exit_code = 3


class LockHeld(RetentionError):
    """Another run holds the lock."""

    exit_code = 4


class RuleFailed(RetentionError):
    """A rule failed while running (SQL error, timeout); the others went on."""

    exit_code = 1
