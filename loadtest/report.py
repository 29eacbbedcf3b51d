"""Load-test results: the Parquet file, the closing summary table, and ``compare``'s ratio tables.

The Parquet file holds one row per run, target and phase (``register`` or ``run``); appending
rewrites the file with the old rows plus the new ones (columns added by a newer version are null
in older rows).  Main columns:

=========================  ==========================================================================
``run_id``, ``label``      the run (``label`` is ``--label``), ``started`` (UTC), ``git_rev``, ``host``
``target``, ``via``        ``federation`` or ``luigid``; ``zmq`` or ``http``
parameters                 ``days``, ``topics``, ``tasks``, ``edges``, ``workers``, ``shape``, ``shards``,
                           ``store``, ``fan_in``, ``fan_out``, ``fail_rate``, ``perm_fail_rate``,
                           ``resources``, ``task_ms``, ``wait_interval``, ``retry_delay``
``phase``                  ``register``: ``calls`` add_task, ``rate_per_s`` add_task/s, ``lat_*`` add_task;
                           ``run``: ``tasks_done``, ``rate_per_s`` tasks/s, ``lat_*`` get_work,
                           ``report_*`` the DONE/FAILED add_task, ``timeline`` DONE per second
latency                    ``lat_p50_ms``, ``lat_p95_ms``, ``lat_p99_ms``
CPU and memory             ``server_cpu_s`` (router + shards, or luigid), ``router_cpu_s``, ``shards_cpu_s``,
                           ``postgres_cpu_s`` (every postgres process on the host), ``driver_cpu_s``,
                           ``server_cpu_ms_per_item``, ``machine_busy_cores``, ``foreign_cores`` (CPU used
                           by processes that are not part of the test), ``server_peak_rss_mb``
placement                  ``shard_tasks`` (JSON, from federation_health), ``balance_max_over_mean``,
                           ``cross_shard_edges`` (share of dependency edges between two shards)
checks                     ``checks_ok``, ``violations``, ``check_summary``
=========================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS: list[tuple[str, str | None]] = [
    ("target", None),
    ("phase", "phase"),
    ("n", None),
    ("s", "seconds"),
    ("rate/s", "rate_per_s"),
    ("p50 ms", "lat_p50_ms"),
    ("p95 ms", "lat_p95_ms"),
    ("p99 ms", "lat_p99_ms"),
    ("srv CPU s", "server_cpu_s"),
    ("ms/item", "server_cpu_ms_per_item"),
    ("drv CPU s", "driver_cpu_s"),
    ("RSS MB", "server_peak_rss_mb"),
    ("busy", "machine_busy_cores"),
    ("foreign", "foreign_cores"),
]


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> int:
    """Append ``rows`` to the Parquet file at ``path`` (created if missing); returns the total row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    keys = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist takes the columns of row 0 only
    new = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    if path.exists():
        old = pq.read_table(path)
        table = pa.concat_tables([old, new], promote_options="permissive")
    else:
        table = new
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # never leave a half-written report behind
    return table.num_rows


def read_rows(path: str | Path) -> Any:
    """The report as a pandas DataFrame."""
    import pandas as pd

    return pd.read_parquet(path)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if value.is_integer() and abs(value) < 1e12:
            return f"{int(value):,}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def summary_table(rows: Iterable[dict[str, Any]], title: str = "") -> Any:
    """The closing summary (a rich Table): one line per target and phase, then the checks."""
    from rich.table import Table

    table = Table(title=title or None, show_lines=False, pad_edge=False)
    for name, _ in SUMMARY_COLUMNS:
        table.add_column(name, justify="left" if name in ("target", "phase") else "right", no_wrap=True)
    table.add_column("checks")
    for r in rows:
        cells = []
        for name, key in SUMMARY_COLUMNS:
            if name == "target":
                cells.append(
                    f"{'fed' if r.get('target') == 'federation' else r.get('target')}/{r.get('via')}"
                )
            elif name == "n":
                cells.append(_fmt(r.get("calls") if r.get("phase") == "register" else r.get("tasks_done")))
            else:
                cells.append(_fmt(r.get(key)) if key is not None else "")
        cells.append(
            "[green]ok[/green]" if r.get("checks_ok") else f"[red]{r.get('violations')} violations[/red]"
        )
        table.add_row(*cells)
    return table


def placement_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r.get("phase") == "run" and r.get("target") == "federation" and r.get("shard_tasks"):
            out.append(
                f"{r['target']}/{r['via']}: tasks per shard {r['shard_tasks']} (max/mean "
                f"{_fmt(r.get('balance_max_over_mean'))}), dependency edges crossing shards "
                f"{100 * (r.get('cross_shard_edges') or 0):.1f}%"
            )
    return out


def ratio_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Within one run: each federation transport against luigid (x = how many times better)."""
    by = {(r["target"], r["via"], r["phase"]): r for r in rows}
    base_run, base_reg = by.get(("luigid", "http", "run")), by.get(("luigid", "http", "register"))
    out = []
    for (target, via, phase), r in by.items():
        if target != "federation" or phase != "run" or not base_run:
            continue
        parts = []
        if r.get("rate_per_s") and base_run.get("rate_per_s"):
            parts.append(f"throughput {r['rate_per_s'] / base_run['rate_per_s']:.1f}x")
        reg = by.get((target, via, "register"))
        if reg and base_reg and reg.get("rate_per_s") and base_reg.get("rate_per_s"):
            parts.append(f"registration {reg['rate_per_s'] / base_reg['rate_per_s']:.1f}x")
        if r.get("lat_p99_ms") and base_run.get("lat_p99_ms"):
            parts.append(f"get_work p99 {base_run['lat_p99_ms'] / r['lat_p99_ms']:.1f}x")
        if r.get("server_cpu_ms_per_item") and base_run.get("server_cpu_ms_per_item"):
            parts.append(
                f"server CPU per task {base_run['server_cpu_ms_per_item'] / r['server_cpu_ms_per_item']:.1f}x"
            )
        if parts:
            out.append(f"federation/{via} vs luigid (x > 1: the federation is better): " + ", ".join(parts))
    return out


# -- compare -----------------------------------------------------------------------------------
KEY = ["run_id", "target", "via"]
RUN_METRICS = {
    "rate_per_s": "tasks/s",
    "lat_p50_ms": "get_work p50 ms",
    "lat_p99_ms": "get_work p99 ms",
    "server_cpu_ms_per_item": "server CPU ms/task",
    "server_peak_rss_mb": "peak RSS MB",
}


def compare_frames(df: Any, baseline: str | None = None) -> list[tuple[str, Any]]:
    """The tables ``fedctl loadtest compare`` prints: (title, DataFrame) pairs.

    1. every run and target: parameters, registration and run rates, latency, CPU, checks;
    2. inside each run that has a luigid target: federation / luigid ratios;
    3. every run against the baseline run (``baseline`` run id, default the first run), per
       matching target and transport.
    """
    import pandas as pd

    if df.empty:
        return [("no rows", df)]
    reg = df[df["phase"] == "register"].set_index(KEY)
    run = df[df["phase"] == "run"].set_index(KEY)
    overview = pd.DataFrame(
        {
            "label": run.get("label"),
            "tasks": run["tasks"],
            "workers": run["workers"],
            "shape": run["shape"],
            "shards": run["shards"],
            "store": run["store"],
            "add_task/s": reg["rate_per_s"].reindex(run.index),
            "tasks/s": run["rate_per_s"],
            "get_work p50 ms": run["lat_p50_ms"],
            "p99 ms": run["lat_p99_ms"],
            "CPU ms/task": run["server_cpu_ms_per_item"],
            "peak RSS MB": run["server_peak_rss_mb"],
            "foreign cores": run.get("foreign_cores"),
            "checks": run["checks_ok"].map({True: "ok", False: "FAILED"}),
        }
    )
    order = df.drop_duplicates("run_id")["run_id"].tolist()
    tables: list[tuple[str, Any]] = [("runs", overview)]

    vs_luigid = []
    for run_id in order:
        if (run_id, "luigid", "http") not in run.index:
            continue
        lr, lg = run.loc[(run_id, "luigid", "http")], reg.loc[(run_id, "luigid", "http")]
        for (rid, target, via), r in run.iterrows():
            if rid != run_id or target != "federation":
                continue
            g = reg.loc[(rid, target, via)]
            vs_luigid.append(
                {
                    "run_id": rid,
                    "via": via,
                    "tasks": r["tasks"],
                    "workers": r["workers"],
                    "throughput x": _ratio(r["rate_per_s"], lr["rate_per_s"]),
                    "registration x": _ratio(g["rate_per_s"], lg["rate_per_s"]),
                    "get_work p99 x lower": _ratio(lr["lat_p99_ms"], r["lat_p99_ms"]),
                    "CPU/task x lower": _ratio(lr["server_cpu_ms_per_item"], r["server_cpu_ms_per_item"]),
                }
            )
    if vs_luigid:
        tables.append(
            (
                "federation vs luigid in the same run (x = times better)",
                pd.DataFrame(vs_luigid).set_index(["run_id", "via"]),
            )
        )

    base = baseline or order[0]
    if base not in order:
        raise ValueError(f"no run {base!r} in the report (runs: {', '.join(order)})")
    between = []
    for (rid, target, via), r in run.iterrows():
        if (base, target, via) not in run.index or rid == base:
            continue
        b = run.loc[(base, target, via)]
        row = {"run_id": rid, "target": target, "via": via, "tasks": r["tasks"], "vs tasks": b["tasks"]}
        for col, name in RUN_METRICS.items():
            row[name + " ratio"] = _ratio(r[col], b[col])
        between.append(row)
    if between:
        tables.append(
            (
                f"each run / baseline run {base} (same target and transport)",
                pd.DataFrame(between).set_index(["run_id", "target", "via"]),
            )
        )
    return tables


def _ratio(a: Any, b: Any) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not b or a != a or b != b:
        return None
    return round(a / b, 2)


def frame_table(title: str, frame: Any) -> Any:
    """A pandas DataFrame as a rich Table (index columns first)."""
    from rich.table import Table

    table = Table(title=title)
    flat = frame.reset_index()
    for col in flat.columns:
        table.add_column(str(col), justify="left" if flat[col].dtype == object else "right")
    for rec in flat.itertuples(index=False):
        table.add_row(*[_fmt(v.item() if hasattr(v, "item") else v) for v in rec])
    return table
