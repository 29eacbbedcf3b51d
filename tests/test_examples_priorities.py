"""``examples/priorities.py`` run with ``luigi --workers 4``: stock ``luigid`` against a 3-shard federation.

The pipeline (priorities, a batchable family, ``[resources] db = 1`` in its ``luigi.cfg``) is
built so that Luigi's scheduler alone decides the order of every ``run()``: the ``db`` limit
lets one task run at a time, priorities and the batch choose which.  The same unmodified
``luigi`` command runs once against ``luigid`` (a subprocess, reading the same
``priorities.cfg``) and once against a federation of a router and 3 shard processes over HTTP
(the shards read ``[resources]`` from the same file, as a luigid user's ``luigi.cfg`` is carried
over); the order of the runs (``order.log``) and Luigi's execution summary must be the same.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.priorities import TOPICS, Nightly, Publish, Snapshot
from tests.conftest import free_port
from tests.fedcluster import FedCluster
from tests.procs import ROOT, fed_env, wait_for

CFG = ROOT / "examples" / "priorities.cfg"
DATE = "2026-11-20"
LUIGI = str(Path(sys.executable).with_name("luigi"))
LUIGID = str(Path(sys.executable).with_name("luigid"))

#: what luigid does with this pipeline (checked below): billing (90) first, batched with the next
#: snapshot in Luigi's rank; search and orders (60) before clicks (30) before audit (0)
LUIGID_ORDER = [
    f"Snapshot {DATE} billing,search",
    f"Publish {DATE} billing",
    f"Publish {DATE} search",
    f"Snapshot {DATE} orders,clicks",
    f"Publish {DATE} orders",
    f"Publish {DATE} clicks",
    f"Snapshot {DATE} audit",
    f"Publish {DATE} audit",
]


def _http_up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/is_paused", timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def luigid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Stock ``luigid`` with the pipeline's ``luigi.cfg``; its URL."""
    tmp = tmp_path_factory.mktemp("luigid")
    (tmp / "log").mkdir()
    port = free_port()
    log = open(tmp / "luigid.out", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            LUIGID,
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
            "--state-path",
            str(tmp / "state.pickle"),
            "--logdir",
            str(tmp / "log"),
        ],
        env=fed_env(LUIGI_CONFIG_PATH=str(CFG)),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or _http_up(url), 30, what="luigid")
        assert proc.poll() is None, (tmp / "luigid.out").read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FedCluster]:
    """A router (HTTP gateway) and 3 shard processes; the shards read ``[resources]`` from the
    pipeline's ``luigi.cfg`` (``LUIGI_CONFIG_PATH``), as fedctl carries a luigid user's over."""
    saved = os.environ.get("LUIGI_CONFIG_PATH")
    os.environ["LUIGI_CONFIG_PATH"] = str(CFG)  # the children inherit it
    cluster = FedCluster(tmp_path_factory.mktemp("fed"), 3, http=True)
    try:
        cluster.start()
    finally:
        if saved is None:
            del os.environ["LUIGI_CONFIG_PATH"]
        else:
            os.environ["LUIGI_CONFIG_PATH"] = saved
    try:
        yield cluster
    finally:
        cluster.stop()


def run_pipeline(scheduler_url: str, root: Path) -> tuple[list[str], str]:
    """``luigi --module examples.priorities Nightly --workers 4``: the order of the runs and the summary."""
    proc = subprocess.run(
        [
            LUIGI,
            "--module",
            "examples.priorities",
            "Nightly",
            "--date",
            DATE,
            "--workers",
            "4",
            "--scheduler-url",
            scheduler_url,
            "--priorities-root",
            str(root),
        ],
        env=fed_env(LUIGI_CONFIG_PATH=str(CFG)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    marker = "===== Luigi Execution Summary ====="
    first = out.index(marker)
    summary = out[first : out.index(marker, first + len(marker)) + len(marker)]
    return (root / "order.log").read_text().splitlines(), summary


@pytest.fixture(scope="module")
def against_luigid(luigid: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    return run_pipeline(luigid, tmp_path_factory.mktemp("out-luigid"))


@pytest.fixture(scope="module")
def against_federation(
    federation: FedCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], str]:
    return run_pipeline(federation.http_url, tmp_path_factory.mktemp("out-fed"))


def test_luigid_decides_the_order_by_priority_batch_and_resource(
    against_luigid: tuple[list[str], str],
) -> None:
    order, summary = against_luigid
    assert order == LUIGID_ORDER
    assert f"Scheduled {1 + 2 * len(TOPICS) + 2} tasks of which:" in summary
    assert "This progress looks :)" in summary


def test_the_pipeline_spreads_over_the_three_shards(federation: FedCluster) -> None:
    date = dt.date.fromisoformat(DATE)
    tasks = [Nightly(date=date), *(cls(date=date, topic=t) for t in TOPICS for cls in (Snapshot, Publish))]
    owners = {t.task_id: federation.call("owner", task_id=t.task_id)["shard_id"] for t in tasks}
    assert set(owners.values()) == set(federation.config.shard_ids), owners


def test_the_federation_runs_every_task_once_one_at_a_time(
    against_federation: tuple[list[str], str], against_luigid: tuple[list[str], str]
) -> None:
    """What holds today: the same tasks run, each once, the ``db`` limit respected, the highest
    priority first, and the same counts in the summary."""
    order, summary = against_federation
    runs = [line.split() for line in order]
    assert sorted(t for kind, _, topics in runs if kind == "Snapshot" for t in topics.split(",")) == sorted(
        TOPICS
    )
    assert sorted(topics for kind, _, topics in runs if kind == "Publish") == sorted(TOPICS)
    assert order[0].startswith(f"Snapshot {DATE} billing")
    assert order[1] == f"Publish {DATE} billing"
    luigid_summary = against_luigid[1]
    for line in ("Scheduled 13 tasks of which:", "* 11 ran successfully:", "This progress looks :)"):
        assert line in summary and line in luigid_summary


def test_the_federation_runs_the_pipeline_as_luigid_does(
    against_federation: tuple[list[str], str], against_luigid: tuple[list[str], str]
) -> None:
    assert against_federation[0] == against_luigid[0]
    assert against_federation[1] == against_luigid[1]
