"""``fedctl history export``: every shard's event history, read-only from the stores, into one Parquet file."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import luigi.task
import pandas as pd
import pytest

from fedctl.cli import main
from federation.errors import StorageError
from federation.placement import Placement
from shard.history import StoreRef, export_history, read_history
from shard.store import open_store
from tests.fedcluster import FedCluster


def _tid(family: str, i: int | str) -> str:
    return luigi.task.task_id_str(family, {"i": str(i)})


def _drive(cluster: FedCluster, tag: str = "") -> dict[str, str]:
    """Two namespaces' tasks through the router: DONE, FAILED and PENDING ones. Returns id -> final status."""
    client = cluster.client()
    final: dict[str, str] = {}
    worker = "w-hist"
    for i in range(12):
        family = "fin.ledger.Post" if i % 2 else "mkt.Load"
        tid = _tid(family, f"{tag}{i}")
        client.call("add_task", {"task_id": tid, "worker": worker, "family": family})
        final[tid] = "PENDING"
    for _ in range(8):
        r = client.call("get_work", {"worker": worker, "current_tasks": []})
        tid = r["task_id"]
        assert tid is not None
        status = "FAILED" if len([s for s in final.values() if s != "PENDING"]) % 4 == 3 else "DONE"
        client.call(
            "add_task",
            {
                "task_id": tid,
                "worker": worker,
                "status": status,
                "runnable": None,
                "family": tid.split("_")[0],
            },
        )
        final[tid] = status
    return final


def _expected_events(cluster: FedCluster) -> list[tuple[str, Any]]:
    rows = []
    for sid in cluster.config.shard_ids:
        spec = cluster.config.shard(sid)
        with open_store(spec.store, sid, schema=spec.schema, readonly=True) as store:
            rows += [(sid, ev) for ev in store.events()]
    return rows


def _check_export(
    cluster: FedCluster, final: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "history.parquet"
    assert main(["history", "export", "--config", str(cluster.config_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    df = pd.read_parquet(out)
    expected = _expected_events(cluster)
    assert len(df) == len(expected) > 0
    assert f"{len(df)} events from {len(cluster.config.shard_ids)} shard(s)" in printed
    assert "DONE" in printed and "fin.ledger" in printed
    # every event once, on the shard that owns the task, in commit order per shard
    placement = Placement.from_config(cluster.config)
    assert (df["shard"] == df["task_id"].map(placement.owner)).all()
    for _sid, part in df.groupby("shard"):
        assert part["event_id"].is_monotonic_increasing and part["event_id"].is_unique
    got = sorted(zip(df["shard"], df["task_id"], df["status"], df["worker"], strict=True))
    want = sorted((sid, ev.task_id, ev.status, ev.worker) for sid, ev in expected)
    assert got == want
    # the last event of each task is its final status; family and namespace come from the tasks table
    last = df.sort_values(["shard", "event_id"]).groupby("task_id").last()
    assert last["status"].to_dict() == final
    assert set(last["family"]) == {"fin.ledger.Post", "mkt.Load"}
    assert set(last["namespace"]) == {"fin.ledger", "mkt"}
    assert str(df["time"].dtype) == "datetime64[us, UTC]"
    now = pd.Timestamp.now(tz="UTC")
    assert ((df["time"] > now - pd.Timedelta(minutes=10)) & (df["time"] <= now)).all()

    # a namespace keeps itself and what is below it
    fin = tmp_path / "fin.parquet"
    assert (
        main(
            [
                "history",
                "export",
                "--config",
                str(cluster.config_path),
                "--out",
                str(fin),
                "--namespace",
                "fin",
            ]
        )
        == 0
    )
    fin_df = read_history(fin)
    assert len(fin_df) == (df["namespace"] == "fin.ledger").sum() > 0
    # one shard only
    sid = cluster.config.shard_ids[0]
    one = tmp_path / "one.parquet"
    assert (
        main(["history", "export", "--config", str(cluster.config_path), "--out", str(one), "--shard", sid])
        == 0
    )
    assert len(read_history(one)) == (df["shard"] == sid).sum()
    # a time window: nothing before the first event, everything up to one after the last
    first, last_t = df["time"].min(), df["time"].max()
    win = tmp_path / "win.parquet"
    assert (
        main(
            [
                "history",
                "export",
                "--config",
                str(cluster.config_path),
                "--out",
                str(win),
                "--since",
                (last_t + pd.Timedelta(seconds=1)).isoformat(),
            ]
        )
        == 0
    )
    assert len(read_history(win)) == 0
    assert (
        main(
            [
                "history",
                "export",
                "--config",
                str(cluster.config_path),
                "--out",
                str(win),
                "--since",
                str(first.timestamp() - 1),
                "--until",
                (last_t + pd.Timedelta(seconds=1)).isoformat(),
            ]
        )
        == 0
    )
    assert len(read_history(win)) == len(df)
    # paging gives the same rows as one page
    refs = [
        StoreRef(s, cluster.config.shard(s).store, cluster.config.shard(s).schema)
        for s in cluster.config.shard_ids
    ]
    paged = export_history(refs, tmp_path / "paged.parquet", page=3)
    assert paged.rows == len(df) and sum(paged.by_shard.values()) == len(df)
    assert read_history(paged.path).equals(df)


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Iterator[FedCluster]:
    (tmp_path / "fed").mkdir()
    c = FedCluster(tmp_path / "fed", 2)
    try:
        yield c.start()
    finally:
        c.stop()


def test_export_from_running_sqlite_shards(
    sqlite_cluster: FedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = _drive(sqlite_cluster)
    time.sleep(0.2)
    _check_export(sqlite_cluster, final, tmp_path, capsys)


def test_export_from_postgres_schemas(
    pg_url: str, pg_schemas: Callable[[int], list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = pg_schemas(3)
    (tmp_path / "fed").mkdir()
    c = FedCluster(tmp_path / "fed", 3, pg_url=pg_url, schemas=schemas)
    try:
        c.start()
        final = _drive(c)
        _check_export(c, final, tmp_path, capsys)
        # pruning on Postgres, in slices
        client = c.client()
        before = len(_expected_events(c))
        deleted, calls = 0, 0
        while True:
            r = client.call("prune_history", {"before": time.time() + 60, "limit": 7})
            deleted, calls = deleted + r["deleted"], calls + 1
            if not r["more"]:
                break
        assert calls > 1 and deleted == before > 0
        assert _expected_events(c) == []
    finally:
        c.stop()


def test_bad_input_is_one_clear_error_and_writes_nothing(
    sqlite_cluster: FedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(sqlite_cluster.config_path)
    out = tmp_path / "x.parquet"
    cases = [
        (["--shard", "nope"], "no shard nope"),
        (["--since", "yesterday-ish"], "--since 'yesterday-ish'"),
        (["--since", "2026-11-25T10:00", "--until", "2026-11-25T09:00"], "must be after"),
    ]
    for extra, message in cases:
        assert main(["history", "export", "--config", cfg, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not out.exists()
    # a store that is not there: the error names the shard, no file (and no temporary file) is left
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="shard s9 .*no such file"):
        export_history([StoreRef("s9", str(missing))], out)
    assert not out.exists() and not list(tmp_path.glob(".x.parquet*"))
    assert not missing.exists()


def test_prune_history_through_the_router(
    sqlite_cluster: FedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from federation.errors import BadArgumentsError

    cluster = sqlite_cluster
    final = _drive(cluster)
    time.sleep(0.05)
    final.update(_drive(cluster, "b"))  # a second, later wave of events
    out = tmp_path / "all.parquet"
    assert main(["history", "export", "--config", str(cluster.config_path), "--out", str(out)]) == 0
    df = read_history(out)
    times = sorted(set(df["time"]))
    cut = next(
        a + (b - a) / 2
        for a, b in zip(times[len(times) // 2 :], times[len(times) // 2 + 1 :], strict=False)
        if b - a > pd.Timedelta(microseconds=20)
    )
    keep = int((df["time"] >= cut).sum())
    assert 0 < keep < len(df)
    client = cluster.client()
    # bad input: a clear error, nothing deleted
    for bad in ("yesterday", None, True, float("nan")):
        with pytest.raises(BadArgumentsError, match="before must be a time"):
            client.call("prune_history", {"before": bad})
    assert main(["history", "prune", "--router", cluster.endpoint, "--before", "soon"]) == 2
    assert "--before 'soon'" in capsys.readouterr().err
    assert main(["history", "export", "--config", str(cluster.config_path), "--out", str(out)]) == 0
    assert len(read_history(out)) == len(df)
    capsys.readouterr()
    # prune before the cut: exactly the older events go, on every shard, task state untouched
    assert main(["history", "prune", "--router", cluster.endpoint, "--before", cut.isoformat()]) == 0
    printed = capsys.readouterr().out
    assert f"{len(df) - keep} history events before" in printed
    assert main(["history", "export", "--config", str(cluster.config_path), "--out", str(out)]) == 0
    left = read_history(out)
    assert len(left) == keep and (left["time"] >= cut).all()
    listed = {
        **client.call("task_list", {"status": "DONE"}),
        **client.call("task_list", {"status": "FAILED"}),
    }
    assert {t: s for t, s in final.items() if s != "PENDING"} == {
        t: listed[t]["status"] for t in final if t in listed
    }
    # a bounded slice per call: `more` until everything before the time is gone
    r = client.call("prune_history", {"before": time.time() + 60, "limit": 1})
    assert r["more"] is True and r["deleted"] == len(r["shards"]) == len(cluster.config.shard_ids)
    assert main(["history", "prune", "--router", cluster.endpoint, "--before", str(time.time() + 60)]) == 0
    assert main(["history", "export", "--config", str(cluster.config_path), "--out", str(out)]) == 0
    assert len(read_history(out)) == 0
