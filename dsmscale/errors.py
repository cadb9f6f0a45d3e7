"""One error type for bad user input, so every entry point reports it the same way."""

from __future__ import annotations

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
