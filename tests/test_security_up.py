"""``fedctl up --secure`` on a fresh data directory, end to end: keys and tokens generated, every
link secured, the README's way of pointing Luigi, fedctl and the TUI at it works, no secret out."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _drop_schemas, free_port
from tests.procs import ROOT, fed_env, wait_for

pytestmark = pytest.mark.e2e


def fedctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedctl", *args],
        env=fed_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_secure_on_a_fresh_data_dir(tmp_path: Path) -> None:
    zmq, http = f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    data = tmp_path / "fed"
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedctl", "up", "--secure", "--shards", "2", "--data-dir", str(data)]
        + ["--zmq", zmq, "--http", http],
        env=fed_env(),
        cwd=ROOT,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )
    keys = data / "keys"
    try:
        wait_for(
            lambda: proc.poll() is not None or "Ctrl-C stops everything" in log.read_text(), 90, what="up"
        )
        assert proc.poll() is None, log.read_text()
        banner = log.read_text()
        tokens = {
            name: (keys / f"{name}.token").read_text().strip() for name in ("admin", "worker", "viewer")
        }
        # credentials: 0600 secrets in a 0700 folder, the config names files and hashes only
        assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
        for secret in [*keys.glob("*.key_secret"), *keys.glob("*.token")]:
            assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600, secret
        config = data / "federation.toml"
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
        text = config.read_text()
        assert "[security]" in text and "token_sha256" in text
        for token in tokens.values():
            assert token not in text and token not in banner
        for secret in keys.glob("*.key_secret"):
            z85 = [ln for ln in secret.read_text().splitlines() if "secret-key" in ln][0].split('"')[1]
            assert z85 not in text and z85 not in banner
        # the children's command lines carry nothing secret either
        out = subprocess.run(["pgrep", "-af", str(data)], capture_output=True, text=True).stdout
        assert "shard serve" in out and "router serve" in out
        for token in tokens.values():
            assert token not in out
        # without a key: nothing; with the viewer's key: status, but no action
        bare = fedctl("status", "--router", zmq, "--timeout", "1")
        assert bare.returncode == 2
        viewer = str(keys / "viewer.key_secret")
        status = fedctl("status", "--router", zmq, "--key", viewer)
        assert status.returncode == 0, status.stderr
        refused = fedctl("call", "pause", "--router", zmq, "--key", viewer)
        assert refused.returncode == 2 and "viewer" in refused.stderr and "pause" in refused.stderr
        assert (
            fedctl("call", "is_paused", "--router", zmq, "--key", str(keys / "admin.key_secret")).returncode
            == 0
        )
        # the README's luigi.cfg: unmodified luigi with the worker's token in scheduler_url
        cfg = tmp_path / "luigi.cfg"
        cfg.write_text(
            f"[core]\nscheduler_url = http://worker:{tokens['worker']}@{http}\nrpc_retry_wait = 1\n"
        )
        luigi_bin = shutil.which("luigi") or str(Path(sys.executable).parent / "luigi")
        run = subprocess.run(
            [luigi_bin, "--module", "examples.daily", "DailyBatch", "--date", "2026-11-20", "--workers", "2"],
            env=fed_env(LUIGI_CONFIG_PATH=str(cfg), FED_DAILY_ROOT=str(tmp_path / "out")),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        # fedctl run over ZeroMQ with the worker's key (FED_KEY)
        zrun = subprocess.run(
            [sys.executable, "-m", "fedctl", "run", "--scheduler", zmq, "--module", "examples.daily"]
            + ["DailyBatch", "--date", "2026-11-21", "--workers", "2"],
            env=fed_env(FED_KEY=str(keys / "worker.key_secret"), FED_DAILY_ROOT=str(tmp_path / "out")),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert zrun.returncode == 0, zrun.stderr[-3000:]
        logs = "".join(p.read_text(errors="replace") for p in (data / "logs").glob("*.log"))
        for token in tokens.values():
            assert token not in logs
    finally:
        proc.terminate()
        proc.wait(30)


def test_an_open_bind_without_security_is_refused_in_one_line(tmp_path: Path) -> None:
    r = fedctl(
        "up", "--data-dir", str(tmp_path / "fed"), "--zmq", f"tcp://0.0.0.0:{free_port()}", "--http", ""
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--insecure" in r.stderr and "[security]" in r.stderr
    assert not (tmp_path / "fed" / "federation.toml").exists()


@pytest.mark.postgres
def test_a_postgres_password_never_leaves(tmp_path: Path, pg_url: str) -> None:
    """The password of --pg-url (given as FED_PG_URL) is in none of: the banner, the children's
    command lines, their logs, fedctl status --json, /metrics; the generated federation.toml is 0600."""
    password = "Sekr1t-" + os.urandom(4).hex()
    url = pg_url.replace("postgres@", f"postgres:{password}@", 1)
    assert password in url  # the local server trusts, so the password is carried and ignored
    prefix = f"fedtest_{os.urandom(6).hex()}_"
    zmq, http = f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    data = tmp_path / "fed"
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedctl",
            "up",
            "--shards",
            "2",
            "--data-dir",
            str(data),
            "--store",
            "postgres",
        ]
        + ["--schema-prefix", prefix, "--zmq", zmq, "--http", http],
        env=fed_env(FED_PG_URL=url),
        cwd=ROOT,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or "Ctrl-C stops everything" in log.read_text(), 90, what="up"
        )
        assert proc.poll() is None, log.read_text()
        assert stat.S_IMODE(os.stat(data / "federation.toml").st_mode) == 0o600
        status = fedctl("status", "--router", zmq, "--json")
        assert status.returncode == 0, status.stderr
        import urllib.request

        with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        cmdlines = subprocess.run(["pgrep", "-af", str(data)], capture_output=True, text=True).stdout
        assert "shard serve" in cmdlines
        logs = "".join(p.read_text(errors="replace") for p in (data / "logs").glob("*.log"))
        for where, text in {
            "banner": log.read_text(),
            "status": status.stdout,
            "metrics": metrics,
            "command lines": cmdlines,
            "logs": logs,
        }.items():
            assert password not in text, where
    finally:
        proc.terminate()
        proc.wait(30)
        _drop_schemas(pg_url, [f"{prefix}s0", f"{prefix}s1"])
