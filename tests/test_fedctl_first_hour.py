"""The first hour with fedctl (issue 13): every trap a new user met, as subprocess tests.

A user mistake is one line on stderr starting ``fedctl: error:``, exit status 2,
and nothing written or changed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedctl.cli import build_parser, env_name
from tests.conftest import free_port
from tests.procs import ROOT, ShardProcess, call_ok, fed_env, wait_for


def fedctl(
    *args: str, cwd: Path = ROOT, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedctl", *args],
        env=fed_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused(r: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refused command (exit 2, no traceback, nothing else on stderr)."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedctl: error:"), r.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime: what "nothing changed" compares."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Up:
    """``fedctl up`` in the background on free ports, data dir ``<cwd>/.federation``."""

    def __init__(self, cwd: Path, shards: int = 2) -> None:
        self.cwd = cwd
        self.zmq = f"tcp://127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.data_dir = cwd / ".federation"
        self.out = cwd / "up.out"
        self.err = cwd / "up.err"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedctl",
                "up",
                "--shards",
                str(shards),
                "--zmq",
                self.zmq,
                "--http",
                self.http,
            ],
            env=fed_env(),
            cwd=cwd,
            stdout=open(self.out, "ab"),
            stderr=open(self.err, "ab"),
        )
        wait_for(
            lambda: self.proc.poll() is not None or call_ok(self.zmq, "federation_health", timeout=1.0),
            90,
            what="fedctl up",
        )
        assert self.proc.poll() is None, self.err.read_text()
        wait_for(self.all_up, 60, what="every shard up")
        # the supervisor has finished starting its children (it prints the banner after): a child
        # killed from here on is a restart, not a start that failed
        wait_for(
            lambda: (
                self.proc.poll() is not None
                or "Ctrl-C stops everything" in self.out.read_text("utf-8", "replace")
            ),
            60,
            what="fedctl up's banner",
        )

    def all_up(self) -> bool:
        health = call_ok(self.zmq, "federation_health", timeout=2.0)
        return bool(health) and all(s["up"] for s in health["shards"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def shard_pids(cwd: Path, sid: str) -> list[int]:
    """Processes of ``fedctl shard serve ... --id sid`` started from ``cwd`` (this test's federation only)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            here = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"shard" in argv and b"serve" in argv and argv[-2:-1] == [sid.encode()] and here == str(cwd):
            pids.append(int(proc.name))
    return pids


# -- 1. a second fedctl up on a running data dir ------------------------------------------------------
@pytest.mark.e2e
def test_second_up_on_a_running_data_dir_changes_nothing_and_says_why(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        before = snapshot(up.data_dir)
        config_before = (up.data_dir / "federation.toml").read_text()
        # other ports, so only the lock can stop it
        r = fedctl(
            "up", "--shards", "2", "--zmq", f"tcp://127.0.0.1:{free_port()}", "--http", "", cwd=tmp_path
        )
        line = refused(r)
        assert "already running from .federation" in line and f"pid {up.proc.pid}" in line
        assert (up.data_dir / "federation.toml").read_text() == config_before
        after = snapshot(up.data_dir)
        # the running federation's logs may grow; nothing else may change
        assert {k: v for k, v in after.items() if not k.startswith("logs/")} == {
            k: v for k, v in before.items() if not k.startswith("logs/")
        }
        assert r.stdout == ""  # no banner, no stale log lines of earlier runs (item 8)
        # the first federation is untouched: a shard killed now comes back on the port the router dials
        pids = shard_pids(tmp_path, "s1")
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: not up.all_up(), 30, what="s1 seen down")
        wait_for(up.all_up, 60, what="s1 back up")

        # history export without --config finds ./.federation/federation.toml (item 6)
        r = fedctl("history", "export", "--out", str(tmp_path / "h.parquet"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "written to" in r.stdout and (tmp_path / "h.parquet").exists()
    finally:
        assert up.stop() == 0


# -- 2. a child that cannot bind ---------------------------------------------------------------------
def test_up_with_the_router_port_taken_stops_before_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = fedctl(
            "up", "--data-dir", str(tmp_path / "fed"), "--zmq", f"tcp://127.0.0.1:{port}", "--http", ""
        )
    line = refused(r)
    assert f"tcp://127.0.0.1:{port} is already in use" in line
    assert "luigi-federation" not in r.stdout  # no banner
    assert not (tmp_path / "fed").exists()


def test_up_with_the_http_port_taken_stops_before_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = fedctl(
            "demo",
            "--data-dir",
            str(tmp_path / "fed"),
            "--zmq",
            f"tcp://127.0.0.1:{free_port()}",
            "--http",
            f"127.0.0.1:{port}",
        )
    assert f"127.0.0.1:{port} is already in use" in refused(r)
    assert not (tmp_path / "fed").exists()


@pytest.mark.e2e
def test_a_child_that_cannot_bind_on_restart_stops_up_with_one_line(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        from federation.config import load_federation_config

        cfg = load_federation_config(str(up.data_dir / "federation.toml"))
        port = int(cfg.shard("s1").endpoint.rpartition(":")[2])
        mine = shard_pids(tmp_path, "s1")
        assert len(mine) == 1
        thief = socket.socket()
        # the killed shard's connections linger in TIME_WAIT; a listener may still take the port
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(mine[0], signal.SIGKILL)

        def steal() -> bool:
            try:
                thief.bind(("127.0.0.1", port))
            except OSError:
                return False
            thief.listen()
            return True

        wait_for(steal, 10, interval=0.01, what="the port of s1")
        try:
            code = up.proc.wait(60)
        finally:
            thief.close()
        err = [line for line in up.err.read_text().splitlines() if line.strip()]
        assert code == 2 and len(err) == 1, up.err.read_text()
        assert err[0].startswith("fedctl: error: shard-s1 stopped: cannot bind") and str(port) in err[0]
        assert not up.all_up()  # everything was stopped
    finally:
        up.stop()


# -- 3. an unusable data dir ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["up", "demo"])
def test_unusable_data_dir_is_one_line(tmp_path: Path, command: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for data_dir, says in (
        (a_file, "not a directory"),
        (a_file / "below", "Not a directory"),
        (Path("/proc/no-federation-here"), "--data-dir /proc/no-federation-here"),
    ):
        r = fedctl(
            command, "--data-dir", str(data_dir), "--zmq", f"tcp://127.0.0.1:{free_port()}", "--http", ""
        )
        assert says in refused(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# -- 5. --pg-url's default ---------------------------------------------------------------------------
def test_pg_url_default_is_in_help() -> None:
    for command in ("up", "demo"):
        r = fedctl(command, "--help")
        assert r.returncode == 0
        text = " ".join(r.stdout.split())
        assert "(default postgresql+psycopg2://postgres@127.0.0.1:5432/test" in text


# -- 6. history export without --config ----------------------------------------------------------------
def test_history_export_without_config_says_what_to_pass(tmp_path: Path) -> None:
    line = refused(fedctl("history", "export", "--out", "h.parquet", cwd=tmp_path))
    assert "--config" in line and ".federation/federation.toml" in line
    assert list(tmp_path.iterdir()) == []


# -- 7. demo without --keep ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_demo_without_keep_ends_with_the_final_state_and_no_tui_hint(tmp_path: Path) -> None:
    r = fedctl(
        "demo",
        "--shards",
        "2",
        "--days",
        "1",
        "--workers",
        "2",
        "--zmq",
        f"tcp://127.0.0.1:{free_port()}",
        "--http",
        "",
        cwd=tmp_path,
        timeout=300,
        FED_DAILY_ROOT=str(tmp_path / "out"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fedctl tui" not in r.stdout
    assert "pipeline finished" in r.stdout
    progress = [line for line in r.stdout.splitlines() if "daily pipeline" in line]
    assert progress, r.stdout
    assert "running 0 · pending 0 · failed 0" in progress[-1], progress[-1]
    assert re.search(r"\b(\d+)/\1\b", progress[-1]), progress[-1]  # 21/21: the bar is full


# -- 8. no abbreviations; status against a shard ------------------------------------------------------
def test_flags_are_never_abbreviated(tmp_path: Path) -> None:
    line = refused(fedctl("up", "--shard", "2", "--data-dir", str(tmp_path / "fed")))
    assert "unrecognized arguments: --shard" in line
    line = refused(fedctl("status", "--rout", "tcp://127.0.0.1:1"))
    assert "--rout" in line
    assert list(tmp_path.iterdir()) == []
    parser = build_parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        assert p.allow_abbrev is False, p.prog
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())


def test_status_against_a_standalone_shard_says_so(tmp_path: Path) -> None:
    shard = ShardProcess("s0", f"sqlite:///{tmp_path}/s0.db").start()
    try:
        line = refused(fedctl("status", "--router", shard.endpoint, "--timeout", "5"))
        assert "standalone shard (s0)" in line and "router" in line
    finally:
        shard.stop()


# -- 9. every flag reads an environment variable ----------------------------------------------------
def _all_options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    out = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in dict.fromkeys(a.choices.values()):
                out += _all_options(sub)
        elif a.option_strings and not isinstance(a, argparse._HelpAction | argparse._VersionAction):
            out.append((parser.prog, a))
    return out


def test_every_flag_names_its_environment_variable_in_help() -> None:
    options = _all_options(build_parser(with_loadtest=True))
    assert len(options) > 60
    missing = [
        f"{prog} {a.option_strings[-1]}" for prog, a in options if f"[{env_name(a)}]" not in (a.help or "")
    ]
    assert missing == []


def test_environment_variables_are_read_and_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FED_ROUTER_ZMQ", "tcp://127.0.0.1:7001")  # router serve named it but never read it
    monkeypatch.setenv("FED_JSON", "yes")
    monkeypatch.setenv("FED_SHARD", "s0,s1")
    monkeypatch.setenv("FED_OUT", "env.parquet")
    monkeypatch.setenv("FED_SHARDS", "5")
    p = build_parser()
    assert p.parse_args(["router", "serve"]).zmq == "tcp://127.0.0.1:7001"
    assert p.parse_args(["router", "serve", "--zmq", "tcp://127.0.0.1:7002"]).zmq == "tcp://127.0.0.1:7002"
    assert p.parse_args(["status"]).json is True
    args = p.parse_args(["history", "export"])  # --out is required, but FED_OUT gives it
    assert args.out == "env.parquet" and args.shard == ["s0", "s1"]
    assert p.parse_args(["up"]).shards == 5
    assert p.parse_args(["up", "--shards", "2"]).shards == 2


def test_a_bad_environment_value_is_one_line(tmp_path: Path) -> None:
    assert "--shards" in refused(fedctl("up", "--data-dir", str(tmp_path / "f"), FED_SHARDS="three"))
    assert "FED_STORE" in refused(fedctl("up", "--data-dir", str(tmp_path / "f"), FED_STORE="mysql"))
    assert "FED_JSON" in refused(fedctl("status", FED_JSON="maybe"))
    assert list(tmp_path.iterdir()) == []


def test_status_help_has_a_description() -> None:
    r = fedctl("status", "--help")
    assert r.returncode == 0 and "federation_health" in r.stdout and "Exits 1" in " ".join(r.stdout.split())


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_luigi_cfg_is_consumed_by_luigi_without_warning(tmp_path: Path) -> None:
    block = re.search(r"```ini\n(\[core\]\n.*?)```", _readme(), re.S)
    assert block, "README shows the luigi.cfg"
    port = free_port()  # nobody listens: luigi reports the URL it would use
    # the README's file as ./luigi.cfg (Luigi reads it from the working directory), and a second file
    # that only makes the failing connection give up at once
    (tmp_path / "luigi.cfg").write_text(block.group(1).replace("127.0.0.1:8082", f"127.0.0.1:{port}"))
    (tmp_path / "fast.cfg").write_text("[core]\nrpc_retry_attempts = 1\nrpc_retry_wait = 0\n")
    (tmp_path / "m13.py").write_text(
        "import luigi\n\nclass T(luigi.Task):\n    def complete(self):\n        return False\n"
    )
    luigi_bin = str(Path(sys.executable).parent / "luigi")
    r = subprocess.run(
        [luigi_bin, "--module", "m13", "T"],
        env=fed_env(LUIGI_CONFIG_PATH=str(tmp_path / "fast.cfg"), PYTHONPATH=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert f"http://127.0.0.1:{port}" in out, out[-2000:]
    about_the_url = [line for line in out.splitlines() if "Warning" in line and "scheduler" in line]
    assert about_the_url == [], about_the_url


def test_readme_benchmark_commands_name_modules_that_exist_and_say_where_to_run_them() -> None:
    readme = _readme()
    modules = re.findall(r"python -m ((?:benchmarks|loadtest|tui)\.[a-z0-9_]+)", readme)
    assert modules
    for mod in modules:
        assert (ROOT / (mod.replace(".", "/") + ".py")).is_file(), mod
    assert "`benchmarks/` are not" in readme and "root of a clone" in readme
    assert "Benchmarks live in `loadtest/`" not in readme


def test_docs_point_at_files_that_exist() -> None:
    tui_md = (ROOT / "docs" / "tui.md").read_text()
    for path in re.findall(r"`((?:tui|tests|docs|shared)/[\w./]+\.(?:py|md|tcss))`", tui_md):
        assert (ROOT / path).exists(), path
    federation_md = (ROOT / "docs" / "federation.md").read_text()
    assert "thread pool" not in federation_md and "DEALER" in federation_md


def test_a_child_refused_at_start_is_one_line_without_earlier_runs_logs(tmp_path: Path) -> None:
    """Stores served by another process: the shard's own one-line reason, not a dump of its log file."""
    shard = ShardProcess("s0", f"sqlite:///{tmp_path}/s0.db").start()
    try:
        cfg = tmp_path / "federation.toml"
        cfg.write_text(
            f'[router]\nzmq = "tcp://127.0.0.1:{free_port()}"\nhttp = ""\n'
            f'[[shards]]\nid = "s0"\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
            f'store = "sqlite:///{tmp_path}/s0.db"\n'
        )
        logs = tmp_path / "other" / "logs"
        logs.mkdir(parents=True)
        (logs / "shard-s0.log").write_text("OLD RUN: shard s0 listening\nfedctl: error: OLD RUN failure\n")
        r = fedctl("up", "--config", str(cfg), "--data-dir", str(tmp_path / "other"))
        line = refused(r)
        assert "shard-s0 could not start" in line and "already served" in line, line
        assert "OLD RUN" not in r.stderr + r.stdout
        assert call_ok(shard.endpoint, "shard_info")  # the running shard is untouched
    finally:
        shard.stop()


def test_tui_finds_the_federation_fedctl_up_wrote_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedctl.cli as cli

    seen: dict[str, Any] = {}

    def fake_run(router: str, *args: Any, **kwargs: Any) -> int:
        seen.update(router=router, config=kwargs["config_path"])
        return 0

    monkeypatch.setattr("tui.app.run", fake_run)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tui"]) == 0 and seen == {"router": "tcp://127.0.0.1:5555", "config": None}
    (tmp_path / ".federation").mkdir()
    (tmp_path / ".federation" / "federation.toml").write_text('[router]\nzmq = "tcp://127.0.0.1:6001"\n')
    assert cli.main(["tui"]) == 0
    assert seen == {"router": "tcp://127.0.0.1:6001", "config": ".federation/federation.toml"}
    assert (
        cli.main(["tui", "--router", "tcp://127.0.0.1:7001"]) == 0
        and seen["router"] == "tcp://127.0.0.1:7001"
    )
