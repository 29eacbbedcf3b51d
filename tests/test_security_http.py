"""Security of the HTTP gateway: tokens (Basic with the token as password, Bearer), Luigi's error
envelope for 401/403, the visualiser behind the browser's Basic prompt, and an unmodified
``luigi`` run with a worker token in its scheduler URL."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import ROOT, fed_env
from tests.securecluster import SecureCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    c = SecureCluster(tmp_path_factory.mktemp("sechttp"), 2, http=True)
    try:
        yield c.start()
    finally:
        c.stop()


def request(
    url: str, *, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def basic(token: str, user: str = "someone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def api(cluster: SecureCluster, method: str, args: Any, headers: dict[str, str] | None) -> tuple[int, Any]:
    status, _, body = request(
        f"{cluster.http_url}/api/{method}", data={"data": json.dumps(args)}, headers=headers
    )
    return status, json.loads(body)


def test_no_token_or_a_wrong_one_is_401_with_a_basic_challenge(cluster: SecureCluster) -> None:
    for headers in (None, basic("wrong"), {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!"}):
        status, hdrs, body = request(
            f"{cluster.http_url}/api/task_list", data={"data": "{}"}, headers=headers
        )
        assert status == 401, headers
        assert hdrs["WWW-Authenticate"].startswith('Basic realm="luigi-federation"')
        assert json.loads(body)["error"]["code"] == "unauthenticated"


def test_a_fin_token_cannot_change_an_mkt_task_over_http(cluster: SecureCluster) -> None:
    mkt = basic(cluster.creds.tokens["mkt-worker"])
    assert (
        api(cluster, "add_task", {"task_id": "mkt.H_1_aaaa", "worker": "w", "status": "PENDING"}, mkt)[0]
        == 200
    )
    before = cluster.all_tasks()
    fin = basic(cluster.creds.tokens["fin-worker"])
    status, body = api(
        cluster, "add_task", {"task_id": "mkt.H_1_aaaa", "worker": "w2", "status": "DONE"}, fin
    )
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert "fin-worker" in body["error"]["message"] and "add_task" in body["error"]["message"]
    assert "'mkt'" in body["error"]["message"]
    assert cluster.all_tasks() == before
    bearer = {"Authorization": "Bearer " + cluster.creds.tokens["fin-worker"]}
    assert (
        api(cluster, "add_task", {"task_id": "fin.H_1_bbbb", "worker": "w2", "status": "DONE"}, bearer)[0]
        == 200
    )


def test_a_viewer_token_reads_and_cannot_mutate_over_http(cluster: SecureCluster) -> None:
    viewer = basic(cluster.creds.tokens["viewer"])
    status, body = api(cluster, "task_list", {"status": "PENDING", "upstream_status": ""}, viewer)
    assert status == 200 and "response" in body
    before = cluster.all_tasks()
    for method, args in (
        ("pause", {}),
        ("add_task", {"task_id": "v.X_1_cccc", "worker": "w"}),
        ("mark_as_done", {"task_id": "mkt.H_1_aaaa"}),
        ("disable_worker", {"worker": "w"}),
    ):
        status, body = api(cluster, method, args, viewer)
        assert status == 403 and body["error"]["code"] == "forbidden", method
    assert cluster.all_tasks() == before


def test_the_visualiser_asks_for_a_token_and_serves_a_viewer(cluster: SecureCluster) -> None:
    status, hdrs, _ = request(f"{cluster.http_url}/static/visualiser/index.html")
    assert status == 401 and "Basic" in hdrs["WWW-Authenticate"]
    status, _, page = request(
        f"{cluster.http_url}/static/visualiser/index.html", headers=basic(cluster.creds.tokens["viewer"])
    )
    assert status == 200 and b"<html" in page.lower()
    # /metrics is open unless [security] metrics_auth, and it holds no secret
    status, _, text = request(f"{cluster.http_url}/metrics")
    assert status == 200
    for token in cluster.creds.tokens.values():
        assert token.encode() not in text


def luigi_run(cluster: SecureCluster, tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(f"[core]\nscheduler_url = {url}\nrpc_retry_attempts = 1\nrpc_retry_wait = 1\n")
    env = fed_env(LUIGI_CONFIG_PATH=str(cfg), FED_DAILY_ROOT=str(tmp_path / "out"))
    return subprocess.run(
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
            "2",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_unmodified_luigi_with_a_worker_token_in_the_url(cluster: SecureCluster, tmp_path: Path) -> None:
    token = cluster.creds.tokens["worker"]
    host = cluster.http_url.removeprefix("http://")
    wrong = luigi_run(cluster, tmp_path / "wrong", f"http://worker:not-the-token@{host}")
    assert wrong.returncode != 0
    assert "401" in wrong.stdout + wrong.stderr
    ok = luigi_run(cluster, tmp_path / "ok", f"http://worker:{token}@{host}")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "This progress looks :)" in ok.stdout + ok.stderr
    done = cluster.client_as("viewer").call("task_list", {"status": "DONE", "upstream_status": ""})
    assert any(t.startswith("daily.Load") for t in done)
    # the token never shows in the router's log
    assert token not in cluster.log("router")
