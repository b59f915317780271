#!/bin/sh
# Per-second rates of a NIC's counters (ethtool -S), only those that moved: run it on the
# load balancer beside `lbctl stats --watch` while pktgen_vip.sh sends. See README.md.
# usage: nic_rates.sh DEV [SECONDS] [PATTERN]   (PATTERN: a grep -E filter, default: all)
set -eu
DEV=${1:?usage: $0 DEV [SECONDS] [PATTERN]}
SECS=${2:-1}
PATTERN=${3:-.}

snapshot() { ethtool -S "$DEV" | sed -n 's/^ *\([^:]*\): *\([0-9][0-9]*\)$/\1 \2/p' | grep -E "$PATTERN" || true; }

prev=$(snapshot)
while sleep "$SECS"; do
    cur=$(snapshot)
    echo "--- $(date +%T) $DEV, per second"
    printf '%s\n---\n%s\n' "$prev" "$cur" | awk -v secs="$SECS" '
        $0 == "---" { now = 1; next }
        !now { before[$1] = $2; next }
        ($1 in before) && $2 != before[$1] {
            printf "  %-40s %15.0f\n", $1, ($2 - before[$1]) / secs
        }'
    prev=$cur
done
