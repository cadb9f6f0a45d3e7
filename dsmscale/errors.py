"""One error type for bad user input, so every entry point reports it the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike


class InputError(ValueError):
    """Bad user input: a file, table, config or coordinate the job cannot use.

    The message is one line that names the offending file (when there is one) and the problem;
    the CLI prints it and exits with status 2 without a traceback.
    """

    def __init__(self, source: str | PathLike | None, problem: str):
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)

    def __reduce__(self):  # keeps the error intact when it crosses a Ray task boundary
        return (type(self), (self.source, self.problem))


class InputWarning(UserWarning):
    """Input the job can use, but not as it is (e.g. an MRC opened in permissive mode); the CLI
    prints it on one line, as it does an `InputError`."""


def user_facing_error(exc: BaseException) -> InputError | OSError | None:
    """The `InputError` or `OSError` behind ``exc``, also after it crossed a Ray task or actor
    boundary (Ray wraps it, keeping the original as ``cause``); ``None`` for anything else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):  # a Ray wrapper (RayTaskError and kin)
            exc = cause
            continue
        if isinstance(exc, (InputError, OSError)):
            return exc
        exc = exc.__cause__  # explicit chaining only: a context may be unrelated
    return None


def one_line(exc: InputError | OSError) -> str:
    """The message of a user-facing error on one line, naming the file when known."""
    if isinstance(exc, InputError):
        return str(exc)
    where = exc.filename if isinstance(exc.filename, str) and "\n" not in exc.filename else None
    problem = exc.strerror or str(exc).splitlines()[0]
    return f"{where}: {problem}" if where else problem


@contextmanager
def naming_io_errors(what: str) -> Iterator[None]:
    """Re-raise an `OSError` with ``what`` (the file or folder and the action) in its message.

    Ray Data appends its retry note to a failed task's exception, and the pickled `OSError`
    then loses its ``filename``; the message keeps it.
    """
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror or exc} ({what})") from exc
