"""The HTTP gateway: Luigi's /api/<method>, the visualiser, and unmodified `luigi` runs through it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fedcluster import FedCluster
from tests.procs import ROOT, fed_env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FedCluster]:
    c = FedCluster(tmp_path_factory.mktemp("httpfed"), 3, http=True)
    try:
        yield c.start()
    finally:
        c.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(
    url: str, *, method: str = "GET", data: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method=method)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def api(
    cluster: FedCluster, method: str, args: Any = None, *, verb: str = "POST", raw: str | None = None
) -> tuple[int, Any]:
    payload = raw if raw is not None else json.dumps(args if args is not None else {})
    if verb == "GET":
        status, _, body = request(
            f"{cluster.http_url}/api/{method}?" + urllib.parse.urlencode({"data": payload})
        )
    else:
        status, _, body = request(f"{cluster.http_url}/api/{method}", method="POST", data={"data": payload})
    return status, json.loads(body) if body else None


def test_luigi_envelope_post_and_get(cluster: FedCluster) -> None:
    worker = f"http-{uuid.uuid4().hex[:6]}"
    task = "Http_x_0123456789"
    status, body = api(
        cluster, "add_task", {"task_id": task, "worker": worker, "family": "Http", "status": "PENDING"}
    )
    assert (status, body) == (200, {"response": None})
    status, body = api(
        cluster, "task_list", {"status": "PENDING", "upstream_status": "", "search": ""}, verb="GET"
    )
    assert status == 200 and body["response"][task]["status"] == "PENDING"
    status, body = api(cluster, "get_work", {"worker": worker, "host": "h", "current_tasks": []})
    assert status == 200 and body["response"]["task_id"] == task
    # Luigi's client sends Infinity in add_task_batcher; JSON's Infinity goes through
    status, _ = api(
        cluster,
        "add_task_batcher",
        raw=json.dumps(
            {"worker": worker, "task_family": "Http", "batched_args": ["x"], "max_batch_size": float("inf")}
        ),
    )
    assert status == 200
    # federation_health is served too (the TUI's and `fedctl status`'s view)
    status, body = api(cluster, "federation_health", verb="GET")
    assert status == 200 and len(body["response"]["shards"]) == 3
    assert body["response"]["router"]["http"] == f"127.0.0.1:{cluster.http_port}"


def test_empty_or_missing_data_is_an_empty_object(cluster: FedCluster) -> None:
    # the visualiser's pause toggle sends data= with nothing in it
    status, body = api(cluster, "is_paused", raw="")
    assert (status, body) == (200, {"response": {"paused": False}})
    status, _, raw = request(f"{cluster.http_url}/api/is_pause_enabled")
    assert status == 200 and json.loads(raw) == {"response": {"enabled": True}}


def test_errors_are_clear_and_change_nothing(cluster: FedCluster) -> None:
    _, before = api(cluster, "task_list", {})
    status, body = api(cluster, "no_such_method", {})
    assert status == 404 and body["error"]["code"] == "unknown_method"
    status, body = api(cluster, "add_task", raw="{not json")
    assert status == 400 and body["error"]["code"] == "bad_request" and "JSON" in body["error"]["message"]
    status, body = api(cluster, "add_task", raw="[1, 2]")
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = api(cluster, "add_task", {"task_id": 3, "worker": "w"})
    assert status == 400 and body["error"]["code"] == "bad_arguments"
    status, body = api(cluster, "update_resource", {"resource": "db", "amount": 1, "bogus": 2})
    assert status == 400 and body["error"]["code"] == "bad_arguments"
    _, after = api(cluster, "task_list", {})
    assert after == before


def test_health_check_redirect_and_visualiser(cluster: FedCluster) -> None:
    status, _, body = request(cluster.http_url + "/", method="HEAD")
    assert status == 204 and body == b""
    status, headers, _ = request(cluster.http_url + "/")
    assert status == 302 and headers["Location"] == "static/visualiser/index.html"
    status, _, page = request(cluster.http_url + "/static/visualiser/index.html")
    assert status == 200 and b"Luigi" in page
    status, _, script = request(cluster.http_url + "/static/visualiser/js/luigi.js")
    assert status == 200 and b"LuigiAPI" in script


def run_daily(cmd: list[str], tmp_path: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = fed_env(FED_DAILY_ROOT=str(tmp_path / "data"), **env_extra)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


def assert_daily_done(cluster: FedCluster, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    health = cluster.health()
    per_shard = {s["shard_id"]: s["namespaces"].get("daily", {}) for s in health["shards"]}
    assert all(counts.get("DONE", 0) > 0 for counts in per_shard.values()), per_shard  # every shard worked
    assert (
        sum(c.get("DONE", 0) for c in per_shard.values()) == 19
    )  # 5 x (Extract, Transform, Load) + 4 Enrich
    assert not any(set(c) - {"DONE"} for c in per_shard.values())


@pytest.mark.e2e
def test_prometheus_metrics_of_the_router(cluster: FedCluster) -> None:
    api(cluster, "add_task", {"task_id": "metrics_T", "worker": "w-metrics"})
    api(cluster, "no_such_method_here", {})
    status, headers, body = request(f"{cluster.http_url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'fed_router_requests_total{method="add_task"}' in text
    for sid in cluster.config.shard_ids:
        assert f'fed_router_shard_up{{shard="{sid}"}} 1.0' in text
        assert f'fed_router_shard_seconds_count{{shard="{sid}"}}' in text
    assert "fed_router_inflight" in text


def test_unmodified_luigi_command_over_http(cluster: FedCluster, tmp_path: Path) -> None:
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(f"[core]\ndefault-scheduler-url = {cluster.http_url}\n")
    proc = run_daily(
        [
            sys.executable,
            "-m",
            "luigi",
            "--module",
            "examples.daily",
            "DailyBatch",
            "--date",
            "2026-11-20",
            "--workers",
            "4",
        ],
        tmp_path,
        {"LUIGI_CONFIG_PATH": str(cfg)},
    )
    assert_daily_done(cluster, proc)
    assert "This progress looks :)" in proc.stdout + proc.stderr


@pytest.mark.e2e
@pytest.mark.postgres
def test_daily_over_zeromq_on_postgres_schemas(
    pg_url: str, pg_schemas: Callable[[int], list[str]], tmp_path: Path
) -> None:
    schemas = pg_schemas(3)
    (tmp_path / "fed").mkdir()
    c = FedCluster(tmp_path / "fed", 3, pg_url=pg_url, schemas=schemas)
    try:
        c.start()
        h = c.health()
        assert [s["backend"] for s in h["shards"]] == ["postgresql"] * 3
        assert all(schema in s["location"] for schema, s in zip(schemas, h["shards"], strict=True))
        proc = run_daily(
            [
                sys.executable,
                "-m",
                "fedctl",
                "run",
                "--scheduler",
                c.endpoint,
                "--module",
                "examples.daily",
                "DailyBatch",
                "--date",
                "2026-11-21",
                "--workers",
                "4",
            ],
            tmp_path,
            {},
        )
        assert_daily_done(c, proc)
    finally:
        c.stop()
