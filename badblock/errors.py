"""The one exception type that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

import os


class BadInputError(Exception):
    """Bad input from the user: a file, a value or a combination that cannot work.

    ``where`` names the file (or config key) at fault, ``problem`` says what is wrong.
    The CLI prints ``badblock <command>: error: <where>: <problem>`` and exits with code 2.
    """

    def __init__(self, where: str | os.PathLike | None, problem: str):
        self.where = None if where is None else os.fspath(where)
        self.problem = problem
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.where}: {self.problem}" if self.where else self.problem
