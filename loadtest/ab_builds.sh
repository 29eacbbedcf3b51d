#!/usr/bin/env bash
# Two builds of the federation, A/B, on the load test's 20k x 8 (3 shards, Postgres), interleaved
# (old, new, old, new, ...) in one session so that the box's drift hits both alike.  Each build
# runs from its own git worktree (PYTHONPATH=<worktree>, so the servers it starts are that build
# too) with this venv's python.
# Usage: loadtest/ab_builds.sh OLD_TREE NEW_TREE [PAIRS=3] [VIA=zmq,http] [OUT=/tmp/ab-builds]
# Prints each run's table; the run-phase rows are collected in OUT/summary.txt, every run's
# results in OUT/runs.parquet (the run phase's CPU split and get_work calls printed at the end).
set -euo pipefail
old=$(realpath "$1")
new=$(realpath "$2")
pairs=${3:-3}
via=${4:-zmq,http}
out=${5:-/tmp/ab-builds}
py=${PYTHON:-python}
mkdir -p "$out"
common=(--days 50 --topics 100 --workers 8 --shards 3 --store postgres --via "$via" --no-progress)
run() {
  local tree=$1 label=$2 entry=federation.cli
  [ -f "$tree/fedctl/__main__.py" ] && entry=fedctl
  (cd "$tree" && PYTHONPATH="$tree" "$py" -m "$entry" loadtest run "${common[@]}" --label "$label" \
    --report "$out/runs.parquet") \
    | tee "$out/$label.log"
  grep -E "│fed/(zmq|http) +│ (register|run) " "$out/$label.log" | sed "s/^/$label /" >> "$out/summary.txt"
}
: > "$out/summary.txt"
for i in $(seq 1 "$pairs"); do
  run "$old" "old-$i"
  run "$new" "new-$i"
done
cat "$out/summary.txt"
# the run phase's CPU split and get_work calls per run (both builds write the same columns)
"$py" - "$out/runs.parquet" <<'PY'
import sys
import pandas as pd
df = pd.read_parquet(sys.argv[1])
cols = ["label", "via", "rate_per_s", "router_cpu_s", "shards_cpu_s", "postgres_cpu_s", "driver_cpu_s",
        "get_work_calls", "empty_get_work", "lat_p50_ms", "report_p50_ms"]
run = df[df["phase"] == "run"]
print(run[[c for c in cols if c in run.columns]].to_string(index=False))
PY
