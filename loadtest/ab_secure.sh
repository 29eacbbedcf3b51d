#!/usr/bin/env bash
# What security costs: the load test's 20k x 8, plain and --secure, interleaved (plain, secure,
# plain, secure, ...) in one session so that the box's drift hits both alike.
# Usage: loadtest/ab_secure.sh [PAIRS=2] [REPORT=loadtest/results/ab-secure.parquet] [VIA=zmq,http]
set -euo pipefail
pairs=${1:-2}
report=${2:-loadtest/results/ab-secure.parquet}
via=${3:-zmq,http}
common=(--days 50 --topics 100 --workers 8 --shards 3 --store postgres --via "$via" --no-progress --report "$report")
for i in $(seq 1 "$pairs"); do
  fedctl loadtest run "${common[@]}" --label "ab-plain-$i"
  fedctl loadtest run "${common[@]}" --label "ab-secure-$i" --secure
done
fedctl loadtest compare "$report"
