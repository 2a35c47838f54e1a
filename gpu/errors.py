"""The one error type of the compute backends (``gpu/`` imports nothing from ``pipeline/``)."""


class BackendError(ValueError):
    """A backend or kernel cannot serve a request the user made (exit status 2).

    ``exit_code`` is what the command line exits with; callers treat any exception carrying
    one as a one-line user-facing error.
    """

    exit_code = 2
