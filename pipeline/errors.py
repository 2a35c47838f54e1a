"""Errors a user can cause.

Every such error carries a one-line message that says what is wrong and what to do about it;
the command line prints it to stderr and exits with status 2 (no traceback).
"""


class UserError(ValueError):
    """A problem with the user's input, arguments or environment (exit status 2).

    A ValueError, so code written against TokenSmith (which raises ValueError) keeps working.
    """


def gather(problems: list[str]) -> None:
    """Raise one UserError naming every problem found while checking arguments."""
    if problems:
        raise UserError("; ".join(problems))
