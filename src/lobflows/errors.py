"""Every exception LoB Flows raises, arranged by who must act.

    LobflowsError
    ├── DefinitionError          a flow, mapping or connection file is wrong (fix the file)
    │   └── FlowFileError        one file failed to load; carries every problem found
    ├── ConfigurationError       settings, secrets or connections are missing or wrong
    │   └── SecretNotFoundError
    ├── ConnectorError           a call to another system failed
    │   ├── TransportError       connection refused, reset, timed out (retryable)
    │   ├── RemoteStatusError    the system answered with an error status
    │   └── BlockedAddressError  the address is link-local or metadata (never retryable)
    ├── RunError                 a run could not go on
    │   ├── StepInputError       a step's input could not be built from the run data
    │   ├── TemplateError        a template or condition failed or was refused
    │   └── RunNotFoundError
    └── StoreError               the run store refused an operation
        └── UserNotFoundError

Retryability is decided where an error is raised: `retryable` and, when the
other side said so, `retry_after_seconds`.
"""

from __future__ import annotations

from typing import Any


class LobflowsError(Exception):
    """Something in LoB Flows went wrong."""

    retryable: bool = False
    retry_after_seconds: float | None = None

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (self.__doc__ or type(self).__name__).strip()
        self.context = context
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class DefinitionError(LobflowsError):
    """A flow, mapping or connection definition is invalid."""


class FlowFileError(DefinitionError):
    """A flow file failed to load."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{path}: {len(problems)} problem(s)\n{lines}")


class Problem:
    """One problem in a definition file: where it is and what was expected."""

    __slots__ = ("path", "line", "field", "message")

    def __init__(
        self, *, path: str, line: int | None, field: str, message: str
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "field": self.field,
            "message": self.message,
        }


class ConfigurationError(LobflowsError):
    """Settings, secrets or connections are missing or invalid."""


class SecretNotFoundError(ConfigurationError):
    """A secret was referenced by name but is not defined."""


class ConnectorError(LobflowsError):
    """A call to another system failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        retryable: bool | None = None,
        retry_after_seconds: float | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        if retryable is not None:
            self.retryable = retryable
        self.retry_after_seconds = retry_after_seconds


class TransportError(ConnectorError):
    """The other system could not be reached or did not answer in time."""

    retryable = True


class CircuitOpenError(TransportError):
    """The connection's breaker is open: the call was not made. Waiting for
    the breaker spends none of the step's attempts."""


class RemoteStatusError(ConnectorError):
    """The other system answered with an error."""

    def __init__(self, message: str, *, status: int, **kwargs: Any) -> None:
        self.status = status
        super().__init__(message, status=status, **kwargs)


class BlockedAddressError(ConnectorError):
    """The address is link-local or a cloud metadata endpoint; calls to it are refused."""


class RunError(LobflowsError):
    """A run could not go on."""


class StepInputError(RunError):
    """A step's input could not be built from the run data."""


class TemplateError(RunError):
    """A template or condition failed or was refused by the sandbox."""


class RunNotFoundError(RunError):
    """No run or dead letter has that id."""


class StoreError(LobflowsError):
    """The run store refused an operation."""


class TaskNotFoundError(RunNotFoundError):
    """No task has that id."""


class UserNotFoundError(StoreError):
    """No user or API token has that name."""


class DecisionRefusedError(LobflowsError):
    """A decision or delegation the task does not accept: not an assignee,
    the requester approving their own request, a closed task, a bad form."""


class InvalidDecisionError(DecisionRefusedError):
    """A decision the task's kind does not take (an approval takes approve or
    reject, a review complete): the request is wrong, not the task's state."""


class RecordFileError(LobflowsError):
    """A file of records cannot be read or written."""

    def __init__(self, path: Any, message: str, *, row: int | None = None) -> None:
        where = f"{path}, row {row}" if row is not None else str(path)
        super().__init__(f"{where}: {message}", path=str(path), row=row)
        self.path = path
        self.row = row
