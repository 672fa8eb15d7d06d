"""One error hierarchy. The CLI maps each class to a documented exit code; nothing else catches broadly."""

from __future__ import annotations


class MicrosegError(Exception):
    """Base of every error microseg raises on purpose."""

    exit_code = 1


class InputError(MicrosegError):
    """Malformed input: names the file, line (1-based, when known) and field."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, field: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" [{self.field}]" if self.field else ""
        return f"{where}{field}: {self.message}"


class TooManyBadLines(InputError):
    """More unparseable flow lines than the threshold allows."""


class UnsupportedFeature(MicrosegError):
    """An IR construct the target cannot express. Raised instead of emitting a wider rule."""

    exit_code = 3

    def __init__(self, target: str, feature: str, rule_id: str | None = None) -> None:
        self.target = target
        self.feature = feature
        self.rule_id = rule_id
        rule = f" (rule {rule_id})" if rule_id else ""
        super().__init__(f"{target} cannot express {feature}{rule}")


class ValidationFailed(MicrosegError):
    """`validate` found a violation: an intended flow denied or a forbidden flow allowed."""

    exit_code = 4
