"""Errors the testbed reports to its user, with the exit code each one means."""

from __future__ import annotations


class TestbedError(Exception):
    """A failure the user should see as one line, not as a traceback."""

    __test__ = False  # not a pytest test class
    exit_code = 1


class SpecError(TestbedError):
    """Bad input (a topology, an experiment, an option): names where it is wrong; exit code 2."""

    exit_code = 2

    def __init__(self, path: str, message: str, source: str | None = None) -> None:
        self.path = path
        self.message = message
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        at = f"{self.path}: " if self.path else ""
        return f"{where}{at}{self.message}"


class UsageError(TestbedError):
    """A command line that cannot be carried out as given; exit code 2."""

    exit_code = 2


class CommandError(TestbedError):
    """An external command failed; carries its arguments, exit status and stderr."""

    def __init__(self, args: list[str], returncode: int | None, stderr: str) -> None:
        self.args_list = args
        self.returncode = returncode
        self.stderr = stderr.strip()
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = f": {self.stderr.splitlines()[-1]}" if self.stderr else ""
        super().__init__(f"{' '.join(args)} {status}{tail}")
