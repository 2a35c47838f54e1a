"""Errors a user or the environment can cause, each with the exit status the CLI ends with.

Every such error carries a one-line message that says what is wrong and what to do about it;
the command line prints it to stderr and exits with the error's ``exit_code`` (no traceback).
The codes are the same for every command (see DESIGN.md): 1 the data failed its checks, 2 wrong
usage or bad input, 3 a temporary failure worth retrying with ``--resume``, 130 interrupted.
``gpu/`` and ``cluster/`` raise their own ``ValueError`` subclasses with an ``exit_code``; the
command line treats every exception that carries one the same way.
"""


class UserError(ValueError):
    """A problem with the user's input, arguments or environment (exit status 2).

    A ValueError, so code written against TokenSmith (which raises ValueError) keeps working.
    """

    exit_code = 2


class SelectionOutOfRange(UserError, IndexError):
    """An id or range outside the data (exit status 2).

    Also an IndexError: code written for TokenSmith catches an id past the end with
    ``except IndexError`` (and a bad argument with ``except ValueError``); both keep working.
    """


class NotSupported(UserError, NotImplementedError):
    """A TokenSmith feature dexport does not provide (exit status 2); the message says where to
    do it instead. Also a NotImplementedError."""


class TemporaryFailure(RuntimeError):
    """Storage or cluster lost or unreachable, output locked: retry later with ``--resume`` (3)."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM on the command line (a scheduler or ``kill`` stopping the run): stopped as Ctrl-C
    is, finished parts kept for ``--resume``; exit status 143 (128 + 15)."""


class DataCheckFailed(RuntimeError):
    """The run finished but the data failed its checks (exit status 1)."""

    exit_code = 1


def gather(problems: list[str]) -> None:
    """Raise one UserError naming every problem found while checking arguments."""
    if problems:
        raise UserError("; ".join(problems))


def exit_code_of(exc: BaseException) -> int | None:
    """The exit status an exception asks for, or None for a bug (which keeps its traceback)."""
    code = getattr(exc, "exit_code", None)
    return code if isinstance(code, int) else None


class CorruptInput(UserError):
    """An input file that is not what its name says: a truncated or corrupt gzip/zstd stream,
    a plain file named ``.gz`` (exit status 2). The message names the file and, where known,
    the byte offset of the problem."""


class StorageUnreachable(TemporaryFailure):
    """The storage endpoint cannot be reached (connection refused, timed out): exit status 3."""
