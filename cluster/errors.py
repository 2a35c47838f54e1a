"""Errors of ``cluster/``: what the user asked for cannot be had.

``cluster/`` imports nothing from ``pipeline/``: the command line treats any exception carrying
an ``exit_code`` as a one-line error with that exit status.
"""


class ClusterError(ValueError):
    """The cluster the user asked for cannot be had (exit status ``exit_code``, 2)."""

    exit_code = 2


class SchedulerUnreachable(ClusterError):
    """No Dask scheduler answers at the address: worth retrying later (exit status 3)."""

    exit_code = 3


GPU_EXTRA_FIX = "install the gpu extra: pip install 'dexport[gpu]'"
