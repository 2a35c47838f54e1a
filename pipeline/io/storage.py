"""Storage: one place that turns ``url + storage_options`` into an fsspec filesystem.

Format code sees file handles only. Files are published atomically: locally by writing a
temporary sibling and renaming it; on object stores a single PUT or a completed multipart
upload is already atomic, so we write the final key directly.

Storage failures become one-line errors (:func:`storage_errors`): missing or wrong S3
credentials, a missing bucket, an unknown ``--storage-options`` key or a read-only folder are
the user's to fix (:class:`~pipeline.errors.UserError`, exit 2); an endpoint that cannot be
reached is temporary (:class:`~pipeline.errors.StorageUnreachable`, exit 3). Jobs call
:func:`check_reachable` first: an S3 endpoint named in the options is probed once per process
with one TCP connection (:data:`PROBE_TIMEOUT_S`), so a wrong or dead endpoint is reported in
seconds instead of after botocore's retries.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import socket
import traceback
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import StorageUnreachable, UserError

PROBE_TIMEOUT_S = 5.0
S3_PROTOCOLS = ("s3", "s3a")
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass "
    '--storage-options \'{"key": "...", "secret": "..."}\''
)
# Modules whose TypeError means "an option they were given does not exist", not a bug of ours.
STORAGE_MODULES = ("s3fs", "aiobotocore", "botocore", "aiohttp")


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """Parse ``--storage-options`` JSON (or return an empty dict)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"--storage-options is not valid JSON ({exc.msg}); pass a JSON object such as "
            f"'{{\"anon\": true}}'"
        ) from None
    if not isinstance(value, dict):
        raise UserError("--storage-options must be a JSON object such as '{\"anon\": true}'")
    return value


def resolve(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or a URL such as ``s3://bucket/key``."""
    url = os.fspath(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open {url!r}: {exc}; use a local path or an s3:// URL") from None
    except TypeError as exc:
        raise UserError(f"--storage-options: {_one_line(exc)}") from None
    if not is_local(fs):
        _check_s3_options(fs)
    return fs, path


def check_reachable(urls: list[str], storage_options: dict[str, Any] | None = None) -> None:
    """StorageUnreachable when an S3 endpoint named in the options does not answer.

    Called by jobs before their first storage request: one TCP connection per endpoint and
    process (:data:`PROBE_TIMEOUT_S` at most), instead of botocore's retries for each request.
    """
    for url in urls:
        if str(url).split("://", 1)[0] in S3_PROTOCOLS:
            fs, _ = resolve(url, storage_options)
            _probe_endpoint(storage_options or {}, fs)
            return  # one endpoint for every s3:// URL of a run


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_s3_options(fs: Any) -> None:
    """Refuse ``--storage-options`` keys s3fs would only reject at the first request."""
    if type(fs).__name__ != "S3FileSystem":
        return
    unknown = sorted(set(getattr(fs, "kwargs", None) or {}) - _session_options())
    if unknown:
        raise UserError(
            f"--storage-options: unknown option {', '.join(map(repr, unknown))} for S3; s3fs "
            "takes key, secret, token, anon, endpoint_url, client_kwargs, config_kwargs, ..."
        )


@functools.cache
def _session_options() -> frozenset[str]:
    """The keys s3fs passes on to the session (what it does not take itself)."""
    import inspect

    from aiobotocore.session import AioSession

    return frozenset(inspect.signature(AioSession.__init__).parameters) - {"self"}


def _endpoint(options: dict[str, Any]) -> str | None:
    client = options.get("client_kwargs") or {}
    return (
        (client.get("endpoint_url") if isinstance(client, dict) else None)
        or options.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def _probe_endpoint(options: dict[str, Any], fs: Any) -> None:
    """Connect once to an explicitly named S3 endpoint; StorageUnreachable when it is down."""
    if getattr(fs, "protocol", None) and not set(S3_PROTOCOLS) & set(
        fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    ):
        return
    endpoint = _endpoint(options)
    config = options.get("config_kwargs") or {}
    if not endpoint or (isinstance(config, dict) and config.get("proxies")):
        return
    parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if not parsed.hostname:
        return
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    if _behind_proxy(parsed.scheme, parsed.hostname):
        return
    reason = _connect(parsed.hostname, port)
    if reason is not None:
        raise StorageUnreachable(
            f"cannot reach the S3 endpoint {endpoint} ({reason}); check that the server is up "
            "and the endpoint_url in --storage-options, then retry"
        )


def _behind_proxy(scheme: str, host: str) -> bool:
    """True when botocore would go through a proxy (then a direct probe proves nothing)."""
    import urllib.request

    proxy = os.environ.get(f"{scheme}_proxy") or os.environ.get(f"{scheme.upper()}_PROXY")
    return bool(proxy) and not urllib.request.proxy_bypass(host)


def _connect(host: str, port: int) -> str | None:
    """None when a TCP connection opens (remembered for the process), else the reason."""
    if (host, port) in _REACHED:
        return None
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        if isinstance(exc, TimeoutError | socket.timeout):
            return f"no answer within {PROBE_TIMEOUT_S:g} s"
        return exc.strerror or _one_line(exc)
    _REACHED.add((host, port))
    return None


_REACHED: set[tuple[str, int]] = set()


# -- errors --------------------------------------------------------------------------------
@contextlib.contextmanager
def storage_errors(what: str | None = None) -> Iterator[None]:
    """Turn storage failures raised inside into one-line errors (see the module notes)."""
    try:
        yield
    except Exception as exc:
        mapped = storage_error(exc, what)
        if mapped is None:
            raise
        raise mapped from None


def storage_error(exc: BaseException, what: str | None = None) -> Exception | None:
    """The UserError / StorageUnreachable a storage failure stands for, or None."""
    if getattr(exc, "exit_code", None) is not None:
        return None
    name = type(exc).__name__
    names = {t.__name__ for t in type(exc).__mro__}
    where = f" ({what})" if what else ""
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return UserError(f"no S3 credentials found{where}: {CREDENTIALS_HINT}")
    if names & {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
    }:
        return StorageUnreachable(
            f"cannot reach the storage{where}: {_one_line(exc)}; check that the server is up "
            "and the endpoint_url in --storage-options, then retry"
        )
    code = _client_error_code(exc)
    if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"} or (
        isinstance(exc, PermissionError) and _from_s3(exc)
    ):
        return UserError(
            f"S3 refused access{where} ({code or _one_line(exc)}): the credentials are wrong or "
            f"lack permission; {CREDENTIALS_HINT}"
        )
    if code == "NoSuchBucket" or "bucket does not exist" in str(exc).lower():
        return UserError(f"the S3 bucket does not exist{where}; create it or fix the s3:// URL")
    if isinstance(exc, PermissionError):
        target = exc.filename or what or "the file"
        return UserError(
            f"permission denied: cannot access {target}; check the folder's permissions or "
            "choose another path"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return UserError(
            f"cannot write {exc.filename or what or 'the output'}: read-only file system; "
            "choose another --out"
        )
    if name == "TypeError" and "unexpected keyword" in str(exc) and _raised_in(exc):
        return UserError(f"--storage-options: {_one_line(exc)}; remove or correct that option")
    return None


def _client_error_code(exc: BaseException) -> str | None:
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            code = error.get("Code")
            if code:
                return str(code)
    return None


def _from_s3(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return exc.filename is None and (
        cause is not None and type(cause).__module__.startswith(("botocore", "aiobotocore"))
    )


def _raised_in(exc: BaseException) -> bool:
    """True when the innermost frames are a storage library's (an option it was given)."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return any(f"/{m}/" in frame.filename for frame in frames for m in STORAGE_MODULES)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (where rename is atomic and memory maps work)."""
    return isinstance(fs, LocalFileSystem)


def join(base: str, *parts: str) -> str:
    """Join path components with '/', the separator of every fsspec filesystem."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def is_utf8_name(name: str) -> bool:
    """Whether a path is valid UTF-8. A file name made of other bytes reaches Python as lone
    surrogates, and cannot be recorded in the UTF-8 JSON of manifests and progress records."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def atomic_open(
    fs: fsspec.AbstractFileSystem, path: str, mode: str = "wb", *, durable: bool = True
) -> Iterator[IO]:
    """Open ``path`` for writing so that readers see either nothing or the whole file.

    ``durable``: the data reaches the disk before the file appears (``fsync``). A file that is
    checked before it is used again (a staged part, whose record holds its sha256) may skip it:
    a power cut then costs that file, never a wrong one."""
    if not is_local(fs):
        # An S3 object appears only when its PUT or multipart upload completes. fsspec would
        # complete it even when the writer fails (``__exit__`` closes), so commit explicitly
        # on success and abort the multipart upload on failure.
        handle = fs.open(path, mode, autocommit=False)
        try:
            yield handle
            handle.close()
            handle.commit()
        except BaseException:
            abort = getattr(handle, "_abort_mpu", None)
            if abort is not None and getattr(handle, "mpu", None):
                with contextlib.suppress(Exception):
                    abort()
            handle.closed = True
            raise
        return
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes_atomic(
    fs: fsspec.AbstractFileSystem, path: str, data: bytes, *, durable: bool = True
) -> None:
    """Publish ``data`` at ``path`` atomically (``durable``: see :func:`atomic_open`)."""
    with atomic_open(fs, path, "wb", durable=durable) as handle:
        handle.write(data)


def load_npy(fs: fsspec.AbstractFileSystem, path: str) -> np.ndarray:
    """Load a ``.npy``: memory-mapped locally (index arrays can be large), fetched whole
    remotely."""
    if is_local(fs):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False)
