"""Separate "machines" on one test box: Linux network namespaces joined by a bridge.

``HostNetwork`` builds, with ``ip`` (root only):

- a switch namespace holding a bridge;
- one namespace per host, each with loopback up and an ``eth0`` veth whose peer sits on the
  bridge, addressed ``10.231.N.(2+i)/24`` (``N`` chosen so the subnet is unused here);
- a veth from the test's own (root) namespace into the bridge, ``10.231.N.1/24``, so the test
  and the ``dexport`` command it runs reach every host as a client machine would.

Names carry the test process id, so concurrent sessions never collide. Processes are started
inside a host with ``ip netns exec`` in their own session; ``close()`` kills every process
left in the namespaces this object made and deletes them (which removes the veths too).
Cutting a host's link (``cut``) takes its ``eth0`` down: the host keeps running but can reach
nothing, as when a machine drops off the network.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

SUBNET_PREFIX = "10.231"


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no ``ip``, no kernel support)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class HostNetwork:
    """A bridge, a veth from this namespace, and one namespace per named host."""

    def __init__(self, hosts: Sequence[str]) -> None:
        remove_stale_namespaces()
        self.tag = f"dxh{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.root_link = f"{self.tag}r"[:15]
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.subnet = _free_subnet()
        self.client_address = f"{self.subnet}.1"
        self.addresses = {name: f"{self.subnet}.{2 + i}" for i, name in enumerate(hosts)}
        try:
            self._build()
        except subprocess.CalledProcessError as exc:
            self.close()
            raise NamespacesUnavailable(
                f"'{' '.join(exc.cmd)}' failed: {(exc.stderr or '').strip()}"
            ) from None
        except BaseException:
            self.close()
            raise

    def namespace(self, host: str) -> str:
        """The namespace name of ``host``."""
        return f"{self.tag}-{host}"

    def _add_namespace(self, name: str) -> None:
        result = _ip("netns", "add", name, check=False)
        if result.returncode != 0:
            raise NamespacesUnavailable(f"'ip netns add' failed: {result.stderr.strip()}")
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        # Created straight inside the namespaces: no interface name ever exists here, where it
        # could collide with the machine's own.
        for i, (host, address) in enumerate(self.addresses.items()):
            ns = self.namespace(host)
            self._add_namespace(ns)
            port = f"p{i}"
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                "netns", self.switch)  # fmt: skip
            self._attach(port)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "proot",
            "netns", self.switch)  # fmt: skip
        self._attach("proot")
        _ip("addr", "add", f"{self.client_address}/24", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")

    def _attach(self, port: str) -> None:
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")

    def start(
        self, host: str, command: Sequence[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` on ``host``; stdout and stderr go to ``log``."""
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(host), *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def cut(self, host: str) -> None:
        """Take ``host`` off the network (its processes keep running)."""
        _ip("-n", self.namespace(host), "link", "set", "eth0", "down")

    def close(self) -> None:
        """Kill what runs in the namespaces made here and delete them (idempotent)."""
        for process in self.processes:
            if process.poll() is None:
                _kill_group(process.pid, signal.SIGKILL)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()
        for ns in reversed(self.namespaces):
            # Anything still inside (a child that left its process group) goes with it.
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                _kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        # Deleting the switch deleted the peer of the root veth, and with it the veth itself;
        # this only matters if building stopped half way.
        _ip("link", "del", self.root_link, check=False)


def remove_stale_namespaces() -> None:
    """Delete namespaces left by a test process that was killed before its cleanup ran."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(r"dxh(\d+)-\w+", name)
        if match is None or _alive(int(match.group(1))):
            continue
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            _kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_subnet() -> str:
    """``10.231.N`` for an N whose /24 no route or address on this machine uses yet."""
    used = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
    start = os.getpid() % 250
    for step in range(250):
        candidate = f"{SUBNET_PREFIX}.{1 + (start + step) % 250}"
        if f"{candidate}." not in used:
            return candidate
    raise NamespacesUnavailable(f"no free /24 subnet under {SUBNET_PREFIX}.0.0/16")


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)
