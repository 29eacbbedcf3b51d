"""A luigid user's configuration carries over: Luigi's luigi.cfg / luigi.toml under federation.toml.

Unit tests read files with Luigi's own parser (``federation.luigicfg.from_files``) and check the
values against luigid's ``scheduler`` Config class; subprocess tests run ``fedctl config show``
where Luigi's search path, ``LUIGI_CONFIG_PATH`` and ``LUIGI_CONFIG_PARSER`` apply; the end-to-end
tests start ``fedctl up --shards 3`` and a stock ``luigid`` with the same luigi.cfg and drive both
with the same calls over Luigi's HTTP RPC: the answers must be the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.config import (
    NOT_HONOURED,
    FederationConfig,
    SchedulerConfig,
    load_federation_config,
    mask_secrets,
    resolve_config,
)
from federation.errors import ConfigError
from federation.luigicfg import from_files
from loadtest.luigid import luigid_command
from tests.conftest import free_port
from tests.procs import call_ok, fed_env, wait_for

FED_TOML = """
[[shards]]
id = "s0"
endpoint = "tcp://127.0.0.1:6001"
store = "s0.db"

[[shards]]
id = "s1"
endpoint = "tcp://127.0.0.1:6002"
store = "postgresql://fed:hunter2@db.internal/luigi"
"""


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- reading: the same values as luigid ------------------------------------------------------------


def test_scheduler_config_mirrors_luigids_scheduler_class() -> None:
    """Same keys, same defaults, same types as luigi/scheduler.py's ``scheduler`` Config class."""
    import luigi.scheduler

    params = dict(luigi.scheduler.scheduler.get_params())
    ours = SchedulerConfig().to_dict()
    ours.pop("resources")
    assert set(params) == set(ours)
    for name, param in params.items():
        default = param._default
        default = getattr(default, "name", default)  # metrics_collector is an enum in luigi
        assert ours[name] == default, name
        assert type(ours[name]) is type(default) or default is None, name


def luigid_view(paths: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], dict[str, int]]:
    """What luigid's ``Scheduler()`` takes from these files: its ``scheduler`` config and resources."""
    import luigi.scheduler
    from luigi.configuration.cfg_parser import LuigiConfigParser

    parser = LuigiConfigParser()
    parser.read(paths)
    monkeypatch.setattr(LuigiConfigParser, "_instance", parser)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Luigi's own notes on dash spellings and unused [DEFAULT] keys
        sch = luigi.scheduler.Scheduler()
    cfg = {name: getattr(sch._config, name) for name, _ in luigi.scheduler.scheduler.get_params()}
    cfg["metrics_collector"] = cfg["metrics_collector"].name
    return cfg, dict(sch._resources)


def test_cfg_values_spellings_and_files_as_luigid_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FED_TEST_WINDOW", "120")
    base = write(
        tmp_path / "base.cfg",
        "[DEFAULT]\nhours = 3\n"
        "[scheduler]\nretry_delay = 1\nremove-delay = 7.5\nretry_count = 4\nprune_on_get_work = True\n"
        "[resources]\ndb = 5\nHive = 2\n",
    )
    top = write(
        tmp_path / "luigi.cfg",
        "[scheduler]\n"
        "retry_delay = 30\n"  # a later file wins
        "disable_window = ${FED_TEST_WINDOW}\n"  # Luigi's environment interpolation
        "disable-persist = %(hours)s00\n"  # dash spelling, and [DEFAULT] interpolation
        "max_shown_tasks = 5\n"
        "pause_enabled = false\n"
        "send_messages = FALSE\n"
        "stable_done_cooldown_secs = 0\n"
        "[resources]\ndb = 1\n",
    )
    luigi_cfg = from_files([base, top])
    resolved = resolve_config(None, env={}, luigi=luigi_cfg, federation=False)
    ours = resolved.scheduler.to_dict()
    resources = ours.pop("resources")
    want, want_resources = luigid_view([base, top], monkeypatch)
    assert ours == want
    assert resources == want_resources == {"db": 1, "Hive": 2}
    assert ours["retry_delay"] == 30.0 and ours["disable_window"] == 120 and ours["disable_persist"] == 300
    src = resolved.sources
    assert src["scheduler.retry_delay"].layer == "luigi" and src["scheduler.retry_delay"].where == (
        f"{top} [scheduler] retry_delay"
    )
    assert src["scheduler.remove_delay"].where == f"{base} [scheduler] remove-delay"
    assert src["scheduler.disable_persist"].where == f"{top} [scheduler] disable-persist"
    assert src["resources.Hive"].where == f"{base} [resources] Hive"
    assert src["resources.db"].where == f"{top} [resources] db"
    assert src["scheduler.worker_disconnect_delay"].layer == "default"
    assert resolved.warnings == ()


def test_toml_values_as_luigis_toml_reader_takes_them(tmp_path: Path) -> None:
    path = write(
        tmp_path / "luigi.toml",
        "[scheduler]\nretry_count = 3\nretry_delay = 2.5\npause_enabled = false\nretry-delay = 99\n"
        "[resources]\ngpu = 2\n",
    )
    resolved = resolve_config(None, env={}, luigi=from_files([path], "toml"), federation=False)
    assert resolved.scheduler.retry_count == 3 and resolved.scheduler.retry_delay == 2.5
    assert resolved.scheduler.pause_enabled is False and resolved.scheduler.resources == {"gpu": 2}
    # Luigi's TOML reader looks up the exact key only: luigid ignores the dash spelling there
    assert any("retry-delay" in w and "luigid ignores" in w for w in resolved.warnings), resolved.warnings


# -- layering and provenance -------------------------------------------------------------------------


def test_precedence_cli_env_federation_toml_luigi_defaults(tmp_path: Path) -> None:
    luigi_path = write(
        tmp_path / "luigi.cfg",
        "[scheduler]\nretry_delay = 1\nretry_count = 2\nmax_shown_tasks = 3\ndisable_window = 10\n"
        "[resources]\ndb = 1\nHiveDB = 1\nweb = 4\n",
    )
    fed = write(
        tmp_path / "federation.toml",
        FED_TOML + "[scheduler]\nretry-count = 5\nmax_shown_tasks = 6\n[resources]\nweb = 8\n",
    )
    env = {
        "FED_SCHEDULER_MAX_SHOWN_TASKS": "7",
        "FED_SCHEDULER_DISABLE_WINDOW": "11",
        "FED_RESOURCES_HIVEDB": "3",  # matches the name set below, whatever its case
        "FED_RESOURCES_GPU": "2",  # a new name: lowercase
    }
    resolved = resolve_config(
        fed,
        env=env,
        overrides={"scheduler.disable_window": 12, "router.zmq": None},
        luigi=from_files([luigi_path]),
    )
    s = resolved.scheduler
    assert (s.retry_delay, s.retry_count, s.max_shown_tasks, s.disable_window) == (1.0, 5, 7, 12)
    assert s.resources == {"db": 1, "HiveDB": 3, "web": 8, "gpu": 2}
    assert resolved.federation is not None and resolved.federation.scheduler == s
    layers = {k: src.layer for k, _, src in resolved.settings()}
    assert layers["scheduler.retry_delay"] == "luigi"
    assert layers["scheduler.retry_count"] == "federation.toml"
    assert layers["scheduler.max_shown_tasks"] == "env"
    assert layers["scheduler.disable_window"] == "command line"
    assert layers["scheduler.remove_delay"] == "default"
    assert layers["resources.db"] == "luigi" and layers["resources.web"] == "federation.toml"
    assert layers["resources.HiveDB"] == "env" and layers["resources.gpu"] == "env"
    assert layers["router.zmq"] == "default"  # a None override is a flag that was not given
    assert str(resolved.sources["scheduler.retry_count"]) == f"federation.toml: {fed} [scheduler] retry-count"
    assert str(resolved.sources["resources.gpu"]) == "env: FED_RESOURCES_GPU"
    # without the luigi layer (load_federation_config's default) nothing of luigi.cfg is used
    plain = load_federation_config(fed, env=env)
    assert plain.scheduler.retry_delay == 900.0 and "db" not in plain.scheduler.resources


def test_luigi_config_false_in_the_file_skips_luigis_configuration(tmp_path: Path) -> None:
    luigi_cfg = from_files([write(tmp_path / "luigi.cfg", "[scheduler]\nretry_count = 2\n")])
    fed = write(tmp_path / "federation.toml", "luigi_config = false\n" + FED_TOML)
    resolved = resolve_config(fed, env={}, luigi=luigi_cfg)
    assert resolved.luigi is None and resolved.scheduler.retry_count == 999999999
    with pytest.raises(ConfigError, match="luigi_config: must be true or false"):
        resolve_config(write(tmp_path / "bad.toml", 'luigi_config = "maybe"\n' + FED_TOML), env={})


def test_bad_values_name_their_file_or_variable_and_key_all_at_once(tmp_path: Path) -> None:
    luigi_path = write(
        tmp_path / "luigi.cfg",
        "[scheduler]\nretry_count = 2.5\npause_enabled = perhaps\nmetrics_collector = statsd\n"
        "[resources]\ndb = lots\n",
    )
    fed = write(tmp_path / "federation.toml", FED_TOML + "[scheduler]\nretry_delay = 'soon'\n")
    with pytest.raises(ConfigError) as e:
        resolve_config(
            fed,
            env={"FED_SCHEDULER_REMOVE_DELAY": "later", "FED_RESOURCES_GPU": "-1"},
            luigi=from_files([luigi_path]),
        )
    problems = e.value.problems
    for needle in (
        f"{luigi_path}: [scheduler] retry_count: must be a number (an integer)",
        f"{luigi_path}: [scheduler] pause_enabled: must be true or false",
        f"{luigi_path}: [scheduler] metrics_collector: must be one of",
        f"{luigi_path}: [resources] db: resource 'db' must be a non-negative integer",
        f"{fed}: [scheduler] retry_delay",
        "environment FED_SCHEDULER_REMOVE_DELAY",
        "environment FED_RESOURCES_GPU: resource 'gpu' must be a non-negative integer",
    ):
        assert any(needle in p for p in problems), (needle, problems)
    assert len(problems) == 7
    # a file Luigi cannot parse is named too
    broken = write(tmp_path / "broken.cfg", "[scheduler]\nretry_count = 1\nretry_count = 2\n")
    with pytest.raises(ConfigError, match="broken.cfg"):
        from_files([broken])


def test_every_unhonoured_luigid_setting_is_one_warning_naming_it(tmp_path: Path) -> None:
    luigi_path = write(
        tmp_path / "luigi.cfg",
        "[scheduler]\nrecord_task_history = true\nbatch_emails = true\nmetrics_collector = prometheus\n"
        "metrics_custom_import = my.Collector\nstate_path = /srv/luigi/state.pickle\n"
        "retry_cnt = 3\n"  # a typo: luigid ignores it silently, we say so
        "[cors]\nenabled = true\n",
    )
    resolved = resolve_config(None, env={}, luigi=from_files([luigi_path]), federation=False)
    warnings = resolved.warnings
    for key in NOT_HONOURED:
        hits = [w for w in warnings if f"[scheduler] {key} = " in w]
        assert len(hits) == 1, (key, warnings)
        assert luigi_path in hits[0] and "not honoured" in hits[0]
    assert any("retry_cnt" in w and "luigid ignores it" in w for w in warnings)
    assert any("[cors] enabled = true" in w and "no CORS headers" in w for w in warnings)
    assert len(warnings) == len(NOT_HONOURED) + 2
    # the same settings from federation.toml or the environment are warned about too
    env_only = resolve_config(None, env={"FED_SCHEDULER_BATCH_EMAILS": "yes"}, luigi=False, federation=False)
    assert len(env_only.warnings) == 1 and "FED_SCHEDULER_BATCH_EMAILS" in env_only.warnings[0]
    typo = resolve_config(None, env={"FED_SCHEDULER_RETRY_CNT": "3"}, luigi=False, federation=False)
    assert typo.warnings == ("environment FED_SCHEDULER_RETRY_CNT: not a [scheduler] setting; ignored",)
    # "none" is luigid's default collector under another name
    quiet = resolve_config(
        None, env={"FED_SCHEDULER_METRICS_COLLECTOR": "none"}, luigi=False, federation=False
    )
    assert quiet.warnings == ()


def test_resolved_file_for_children_is_self_contained(tmp_path: Path) -> None:
    """What ``fedctl up`` hands its children: later changes to luigi.cfg do not reach a restart."""
    luigi_path = tmp_path / "luigi.cfg"
    write(luigi_path, "[scheduler]\nretry_count = 2\nmax_shown_tasks = 4\n[resources]\ndb = 1\n")
    fed = write(tmp_path / "federation.toml", FED_TOML)
    resolved = resolve_config(fed, env={"FED_RESOURCES_GPU": "3"}, luigi=from_files([str(luigi_path)]))
    out = write(tmp_path / "federation.resolved.toml", resolved.to_toml("written by a test"))
    text = Path(out).read_text()
    assert text.startswith("# written by a test\n")
    assert f"# scheduler.retry_count = 2 from luigi: {luigi_path} [scheduler] retry_count" in text
    write(luigi_path, "[scheduler]\nretry_count = 50\nmax_shown_tasks = 400\n")
    again = resolve_config(out, env={}, luigi=from_files([str(luigi_path)]))
    assert again.luigi is None
    assert again.scheduler == resolved.scheduler
    assert again.scheduler.resources == {"db": 1, "gpu": 3}
    assert again.federation is not None and resolved.federation is not None
    assert again.federation.shards == resolved.federation.shards  # store paths made absolute
    assert again.federation.replace(source="") == resolved.federation.replace(source="", luigi_config=False)


def test_mask_secrets() -> None:
    assert (
        mask_secrets("postgresql+psycopg2://fed:hunter2@db/luigi") == "postgresql+psycopg2://fed:***@db/luigi"
    )
    assert mask_secrets("postgresql://fed@db/luigi") == "postgresql://fed@db/luigi"
    assert mask_secrets("sqlite:////var/lib/s0.db") == "sqlite:////var/lib/s0.db"


def test_to_toml_round_trips_luigi_config_flag(tmp_path: Path) -> None:
    cfg = FederationConfig.local(1, data_dir=str(tmp_path), shard_ports=[7001], http=None)
    assert "luigi_config" not in cfg.to_toml()
    off = cfg.replace(luigi_config=False)
    again = load_federation_config(write(tmp_path / "f.toml", off.to_toml()), env={})
    assert again.luigi_config is False


# -- fedctl config show: Luigi's search path, LUIGI_CONFIG_PATH, LUIGI_CONFIG_PARSER -------------------


def fedctl(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in fed_env().items() if not k.startswith(("FED_", "LUIGI_CONFIG"))}
    return subprocess.run(
        [sys.executable, "-m", "fedctl", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def shown(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    doc["by_key"] = {s["key"]: s for s in doc["settings"]}
    return doc


def test_config_show_follows_luigis_search_path_and_masks_secrets(tmp_path: Path) -> None:
    write(tmp_path / "luigi.cfg", "[scheduler]\nretry_count = 2\nretry_delay = 5\n[resources]\ndb = 1\n")
    extra = write(tmp_path / "extra.cfg", "[scheduler]\nretry_count = 3\n")
    fed = write(tmp_path / "federation.toml", FED_TOML + "[scheduler]\nretry_delay = 6\n")
    doc = shown(
        fedctl(
            tmp_path,
            "config",
            "show",
            "--json",
            "--config",
            fed,
            LUIGI_CONFIG_PATH=extra,
            FED_RESOURCES_GPU="2",
        )
    )
    assert doc["luigi"]["parser"] == "cfg"
    assert doc["luigi"]["files"] == [str(tmp_path / "luigi.cfg"), extra]  # LUIGI_CONFIG_PATH last: wins
    by_key = doc["by_key"]
    assert by_key["scheduler.retry_count"] == {
        "key": "scheduler.retry_count",
        "value": 3,
        "layer": "luigi",
        "from": f"{extra} [scheduler] retry_count",
    }
    assert by_key["scheduler.retry_delay"]["value"] == 6.0
    assert by_key["scheduler.retry_delay"]["layer"] == "federation.toml"
    assert by_key["resources.db"]["layer"] == "luigi" and by_key["resources.gpu"]["layer"] == "env"
    assert [s["store"] for s in doc["shards"]] == [
        f"sqlite:///{tmp_path / 's0.db'}",
        "postgresql://fed:***@db.internal/luigi",
    ]
    text = fedctl(tmp_path, "config", "show", "--config", fed, LUIGI_CONFIG_PATH=extra)
    assert text.returncode == 0 and "hunter2" not in text.stdout + text.stderr
    assert "scheduler.retry_count" in text.stdout and f"luigi: {extra} [scheduler] retry_count" in text.stdout


def test_config_show_with_luigi_toml(tmp_path: Path) -> None:
    write(tmp_path / "luigi.toml", "[scheduler]\nretry_count = 4\n[resources]\ngpu = 2\n")
    write(tmp_path / "luigi.cfg", "[scheduler]\nretry_count = 9\n")  # not read under the toml parser
    doc = shown(fedctl(tmp_path, "config", "show", "--json", LUIGI_CONFIG_PARSER="toml"))
    assert doc["luigi"]["parser"] == "toml" and doc["luigi"]["files"] == [str(tmp_path / "luigi.toml")]
    assert doc["by_key"]["scheduler.retry_count"]["value"] == 4
    assert doc["by_key"]["resources.gpu"]["from"] == f"{tmp_path / 'luigi.toml'} [resources] gpu"
    write(tmp_path / "luigi.toml", "[scheduler\nretry_count = 4\n")
    proc = fedctl(tmp_path, "config", "show", LUIGI_CONFIG_PARSER="toml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"fedctl: error: {tmp_path / 'luigi.toml'}: not a valid Luigi TOML file")


def test_bad_luigi_cfg_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    write(tmp_path / "luigi.cfg", "[scheduler]\nretry_count = often\n")
    for args in (("config", "show"), ("shard", "serve", "--id", "s0", "--db", f"sqlite:///{tmp_path}/s0.db")):
        proc = fedctl(tmp_path, *args)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{tmp_path / 'luigi.cfg'}: [scheduler] retry_count: must be a number (an integer)" in lines[0]
    # a file Luigi cannot parse at all (luigid would not even import Luigi)
    write(tmp_path / "luigi.cfg", "retry_count = 2\n")
    proc = fedctl(tmp_path, "config", "show")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"fedctl: error: {tmp_path / 'luigi.cfg'}: not a valid Luigi config file")
    write(tmp_path / "luigi.cfg", "[scheduler]\nretry_count = 2\n")
    proc = fedctl(tmp_path, "config", "show", LUIGI_CONFIG_PATH=str(tmp_path / "nope.cfg"))
    assert proc.returncode == 0 and f"LUIGI_CONFIG_PATH={tmp_path / 'nope.cfg'}: no such file" in proc.stdout


# -- end to end: fedctl up --shards 3 and luigid with the same luigi.cfg ------------------------------

LUIGI_CFG = """
[scheduler]
retry_count = 2
disable_window = 600
disable_persist = 2
retry_delay = 2
max_shown_tasks = 5
max_graph_nodes = 3
pause_enabled = false
send_messages = false
stable_done_cooldown_secs = 0
state_path = {state}
bogus_setting = 1
"""
# through LUIGI_CONFIG_PATH, on top of luigi.cfg found in the working directory
EXTRA_CFG = "[resources]\ndb = 1\n"
# luigid's extra file also has gpu = 1, which the federation gets from FED_RESOURCES_GPU instead
LUIGID_EXTRA_CFG = "[resources]\ndb = 1\ngpu = 1\n"


def rpc(url: str, method: str, **kwargs: Any) -> Any:
    body = urllib.parse.urlencode({"data": json.dumps(kwargs)}).encode()
    with urllib.request.urlopen(f"{url}/api/{method}", data=body, timeout=30) as r:
        return json.loads(r.read())["response"]


VOLATILE = {"start_time", "last_updated", "time_running", "last_active", "started"}


def normal(value: Any) -> Any:
    """An answer without its clock readings, so two schedulers' answers can be compared."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


class Pair:
    """luigid and ``fedctl up --shards 3``, started from one folder with the same luigi.cfg."""

    def __init__(self, root: Path) -> None:
        self.root = root
        write(root / "luigi.cfg", LUIGI_CFG.format(state=root / "ignored.pickle"))
        write(root / "extra.cfg", EXTRA_CFG)
        write(root / "luigid-extra.cfg", LUIGID_EXTRA_CFG)
        clean = {k: v for k, v in fed_env().items() if not k.startswith(("FED_", "LUIGI_CONFIG"))}
        luigid_port = free_port()
        self.luigid_url = f"http://127.0.0.1:{luigid_port}"
        self.luigid = subprocess.Popen(
            [
                *luigid_command(),
                "--port",
                str(luigid_port),
                "--address",
                "127.0.0.1",
                "--state-path",
                str(root / "luigid-state.pickle"),
                "--logdir",
                str(root),
            ],
            cwd=root,
            env={**clean, "LUIGI_CONFIG_PATH": str(root / "luigid-extra.cfg")},
            stdout=open(root / "luigid.out", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.zmq = f"tcp://127.0.0.1:{free_port()}"
        self.fed_url = f"http://127.0.0.1:{free_port()}"
        self.up_log = root / "up.log"
        self.up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedctl",
                "up",
                "--shards",
                "3",
                "--data-dir",
                str(root / "fed"),
                "--zmq",
                self.zmq,
                "--http",
                self.fed_url.removeprefix("http://"),
            ],
            cwd=root,
            env={**clean, "LUIGI_CONFIG_PATH": str(root / "extra.cfg"), "FED_RESOURCES_GPU": "1"},
            stdout=open(self.up_log, "ab"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def luigid_up() -> bool:
            assert self.luigid.poll() is None, (self.root / "luigid.out").read_text()
            try:
                rpc(self.luigid_url, "is_pause_enabled")
                return True
            except OSError:
                return False

        wait_for(luigid_up, 60, what="luigid")
        self.wait_federation()

    def wait_federation(self, after: float = 0.0) -> None:
        def up() -> bool:
            assert self.up.poll() is None, self.up_log.read_text()
            h = call_ok(self.zmq, "federation_health", timeout=2.0)
            return bool(
                h
                and h["router"]["time"] > after
                and all(s["up"] and (s.get("started") or 0) > after for s in h["shards"])
            )

        wait_for(up, 90, interval=0.2, what="fedctl up: router and 3 shards")
        wait_for(lambda: self._http_up(), 30, what="the federation's HTTP gateway")

    def _http_up(self) -> bool:
        try:
            rpc(self.fed_url, "is_pause_enabled")
            return True
        except OSError:
            return False

    def both(self, method: str, **kwargs: Any) -> tuple[Any, Any]:
        return rpc(self.luigid_url, method, **kwargs), rpc(self.fed_url, method, **kwargs)

    def same(self, method: str, **kwargs: Any) -> Any:
        """Send one call to both; their answers (clock readings aside) must be equal."""
        luigid, fed = self.both(method, **kwargs)
        assert normal(fed) == normal(luigid), (method, kwargs, luigid, fed)
        return fed

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.up.pid}/task/{self.up.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def stop(self) -> None:
        for proc in (self.up, self.luigid):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.up, self.luigid):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(tmp_path_factory.mktemp("luigi-cfg"))
    try:
        p.wait_ready()
        yield p
    finally:
        p.stop()


def get_work(pair: Pair, worker: str) -> str | None:
    """The task both hand out.  With a task, the federation's counters cover only the shards it
    asked (docs/federation.md); with none, all of them, and the whole answer is luigid's."""
    luigid, fed = pair.both("get_work", worker=worker)
    assert fed["task_id"] == luigid["task_id"], (luigid, fed)
    if fed["task_id"] is None:
        for answer in (luigid, fed):  # one list per shard, concatenated: order is not luigid's
            answer["running_tasks"].sort(key=lambda r: r["task_id"])
        assert normal(fed) == normal(luigid), (luigid, fed)
    return fed["task_id"]


def add(pair: Pair, task_id: str, worker: str, **kwargs: Any) -> None:
    kwargs.setdefault("family", task_id.split("_")[0])
    pair.same("add_task", task_id=task_id, worker=worker, **kwargs)


@pytest.mark.e2e
def test_up_warns_once_and_hands_the_children_the_resolved_values(pair: Pair) -> None:
    log = pair.up_log.read_text()
    assert log.count("fedctl: warning:") == 2, log
    assert "[scheduler] state_path" in log and "not honoured" in log
    assert "bogus_setting: not a luigid setting" in log
    resolved = (pair.root / "fed" / "federation.toml").read_text()  # generated, then resolved
    assert "luigi_config = false" in resolved and "retry_count = 2" in resolved and "gpu = 1" in resolved


@pytest.mark.e2e
def test_retry_count_and_disable_window_disable_a_task_like_luigid(pair: Pair) -> None:
    """[scheduler] retry_count = 2 within disable_window: the second failure disables the task;
    disable_persist = 2 re-enables it; retry_delay = 2 puts a failed task back to PENDING (2 s: long
    enough that the checks right after the failures see them, on a busy machine too)."""
    for tid in ("Flaky_a_1", "Flaky_b_2", "Once_c_3"):
        add(pair, tid, "w-retry")
    for tid in ("Flaky_a_1", "Flaky_b_2"):
        add(pair, tid, "w-retry", status="FAILED", expl='"boom"')
        add(pair, tid, "w-retry", status="FAILED", expl='"boom"')
    add(pair, "Once_c_3", "w-retry", status="FAILED", expl='"boom"')
    disabled = pair.same("task_list", status="DISABLED", upstream_status="", search="Flaky")
    assert set(disabled) == {"Flaky_a_1", "Flaky_b_2"}
    assert all(t["re_enable_able"] for t in disabled.values())
    assert set(pair.same("task_list", status="FAILED", upstream_status="", search="Once")) == {"Once_c_3"}
    pair.same("re_enable_task", task_id="Flaky_b_2")

    # retry_delay = 2 and disable_persist = 2: prunes after that put all three back to PENDING
    def back_to_pending() -> bool:
        seen: list[set[str]] = [set(), set()]
        for family in ("Flaky", "Once"):  # search matches the display name, Family(params)
            for i, answer in enumerate(
                pair.both("task_list", status="PENDING", upstream_status="", search=family)
            ):
                seen[i] |= set(answer)
        want = {"Flaky_a_1", "Flaky_b_2", "Once_c_3"}
        return seen[0] == want and seen[1] == want

    wait_for(back_to_pending, 30, interval=0.2, what="retry_delay / disable_persist to expire")
    pair.same("task_list", status="PENDING", upstream_status="", search="Flaky")


@pytest.mark.e2e
def test_max_shown_tasks_and_max_graph_nodes_limit_reads_like_luigid(pair: Pair) -> None:
    ids = [f"Chain_{i}_x" for i in range(7)]
    for i, tid in enumerate(ids):
        add(pair, tid, "w-limits", deps=ids[i + 1 : i + 2], params={"n": str(i)})
    listed = pair.same("task_list", status="PENDING", upstream_status="", search="Chain")
    assert listed == {"num_tasks": 7}  # max_shown_tasks = 5
    few = pair.same("task_list", status="PENDING", upstream_status="", search="Chain n=3")
    assert set(few) == {"Chain_3_x"}
    graph = pair.same("dep_graph", task_id="Chain_0_x")
    assert len(graph) == 3  # max_graph_nodes = 3
    # the router walks the graph as luigid: the same 3 nodes, the cut-off one listing its
    # dependent beyond the cut
    inverse = pair.same("inverse_dep_graph", task_id="Chain_6_x")
    assert list(inverse) == ["Chain_6_x", "Chain_5_x", "Chain_4_x"]


@pytest.mark.e2e
def test_pause_messages_and_cooldown_switches_like_luigid(pair: Pair) -> None:
    assert pair.same("is_pause_enabled") == {"enabled": False}
    pair.same("pause")
    assert pair.same("is_paused") == {"paused": False}
    add(pair, "Talk_1_x", "w-msg", accepts_messages=True)
    assert get_work(pair, "w-msg") == "Talk_1_x"
    assert pair.same("send_scheduler_message", worker="w-msg", task="Talk_1_x", content="hi") == {
        "message_id": None
    }
    running = pair.same("task_list", status="RUNNING", upstream_status="", search="Talk")
    assert "accepts_messages" not in running["Talk_1_x"]  # send_messages = false
    add(pair, "Talk_1_x", "w-msg", status="DONE")
    # stable_done_cooldown_secs = 0: a DONE task scheduled again is PENDING at once (default: 10 s DONE)
    add(pair, "Talk_1_x", "w-msg-2")
    assert set(pair.same("task_list", status="PENDING", upstream_status="", search="Talk")) == {"Talk_1_x"}


@pytest.mark.e2e
def test_resources_limit_concurrency_like_luigid(pair: Pair) -> None:
    """[resources] db = 1 from LUIGI_CONFIG_PATH, gpu = 1 from FED_RESOURCES_GPU (luigid: its file)."""
    for tid, res in (("Load_1_x", {"db": 1}), ("Load_2_x", {"db": 1}), ("Train_1_x", {"gpu": 1})):
        add(pair, tid, "w-res-1", resources=res)
        add(pair, tid, "w-res-2", resources=res)
    assert {r["name"]: r["num_total"] for r in pair.same("resource_list")} == {"db": 1, "gpu": 1}
    first = {
        get_work(pair, "w-res-1"),
        get_work(pair, "w-res-2"),
    }
    assert first == {"Load_1_x", "Train_1_x"}  # Load_2_x waits for db
    assert get_work(pair, "w-res-1") is None
    used = {r["name"]: r["num_used"] for r in pair.same("resource_list")}
    assert used == {"db": 1, "gpu": 1}
    add(pair, "Load_1_x", "w-res-1", status="DONE")
    add(pair, "Train_1_x", "w-res-1", status="DONE")
    add(pair, "Train_1_x", "w-res-2", status="DONE")
    assert rpc(pair.luigid_url, "get_work", worker="w-res-2")["task_id"] == "Load_2_x"
    # the router learns that db was freed on Load_1_x's shard from that shard's next usage report
    # (a change-feed pull, every relay_interval): until then it counts db as used, never as free
    wait_for(
        lambda: rpc(pair.fed_url, "get_work", worker="w-res-2")["task_id"] == "Load_2_x",
        10,
        interval=0.1,
        what="the federation to hand out Load_2_x once db is free",
    )
    add(pair, "Load_2_x", "w-res-2", status="DONE")


@pytest.mark.e2e
def test_restarted_children_keep_the_values_resolved_at_start(pair: Pair) -> None:
    """Every child killed; luigi.cfg changed meanwhile: the restarts still run with the first values."""
    write(pair.root / "luigi.cfg", "[scheduler]\nmax_shown_tasks = 1000\npause_enabled = true\n")
    write(pair.root / "extra.cfg", "[resources]\ndb = 5\nweb = 2\n")  # web: a new one
    before = time.time()
    children = pair.children()
    assert len(children) == 4
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    pair.wait_federation(after=before)
    assert rpc(pair.fed_url, "is_pause_enabled") == {"enabled": False}
    listed = rpc(pair.fed_url, "task_list", status="PENDING", upstream_status="", search="Chain")
    assert listed == {"num_tasks": 7}
    assert {r["name"]: r["num_total"] for r in rpc(pair.fed_url, "resource_list")} == {"db": 1, "gpu": 1}


@pytest.mark.e2e
def test_shard_serve_and_router_serve_read_luigi_cfg_themselves(tmp_path: Path) -> None:
    """Without fedctl up: each server command reads luigi.cfg from its working directory (and warns)."""
    write(
        tmp_path / "luigi.cfg",
        "[scheduler]\nmax_shown_tasks = 1\npause_enabled = false\nbatch_emails = true\n",
    )
    zmq, shard_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    fed = write(
        tmp_path / "federation.toml",
        f'[router]\nzmq = "{zmq}"\nhttp = ""\n[[shards]]\nid = "s0"\nendpoint = "{shard_ep}"\nstore = "s0.db"\n',
    )
    clean = {k: v for k, v in fed_env().items() if not k.startswith(("FED_", "LUIGI_CONFIG"))}
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedctl", *args],
            cwd=tmp_path,
            env={**clean, **env},
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
        )
        procs.append((proc, log))
        return proc

    def answered(endpoint: str, method: str, **kwargs: Any) -> Any:
        for proc, log in procs:
            assert proc.poll() is None, log.read_text()
        return call_ok(endpoint, method, timeout=2.0, **kwargs)

    alone_ep = f"tcp://127.0.0.1:{free_port()}"
    try:
        start("s0", "shard", "serve", "--config", fed, "--id", "s0")
        start("router", "router", "serve", "--config", fed)
        start(
            "alone",
            "shard",
            "serve",
            "--id",
            "alone",
            "--bind",
            alone_ep,
            "--db",
            f"sqlite:///{tmp_path}/alone.db",
            FED_RESOURCES_DB="2",
        )
        wait_for(lambda: answered(alone_ep, "shard_info"), 60, what="the standalone shard")
        wait_for(
            lambda: (h := answered(zmq, "federation_health")) and all(s["up"] for s in h["shards"]),
            60,
            what="router and shard",
        )
        assert answered(alone_ep, "is_pause_enabled") == {"enabled": False}
        assert [(r["name"], r["num_total"]) for r in answered(alone_ep, "resource_list")] == [("db", 2)]
        for i in range(2):
            answered(zmq, "add_task", task_id=f"T_{i}", worker="w", family="T")
        assert answered(zmq, "task_list", status="PENDING", upstream_status="") == {"num_tasks": 2}
        assert answered(zmq, "is_pause_enabled") == {"enabled": False}
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            proc.wait(30)
    for name in ("s0", "router", "alone"):
        text = (tmp_path / f"{name}.log").read_text()
        assert text.count("[scheduler] batch_emails = true") == 1, (name, text)
        assert f"{tmp_path / 'luigi.cfg'} [scheduler] batch_emails" in text
