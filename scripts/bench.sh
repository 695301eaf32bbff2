#!/usr/bin/env bash
# Reload benchmark: baton against a naive restart, a systemd-style socket
# holder and tableflip, with the same worker, the same constant-rate load
# on 127.0.0.1 and the same number of reloads. Prints one table; any flag is
# passed to batonbench, e.g.
#
#   scripts/bench.sh                          # 10 reloads per mode
#   scripts/bench.sh -reloads 20 -json bench.json
#   scripts/bench.sh -h                       # every flag
#
# A first word picks another measurement (docs/operations.md has each):
#
#   scripts/bench.sh workers -setups go       # several workers, rolling reloads
#   scripts/bench.sh footprint                # master memory, fds, CPU by worker count
#   scripts/bench.sh shim                     # what the exec shim adds to a start
#   scripts/bench.sh handoff                  # --ready accepting's cost
#   scripts/bench.sh upgrade                  # baton upgrade under load
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/" ./cmd/baton ./cmd/testworker ./cmd/tableflipworker ./cmd/batonbench
"$bin/batonbench" "$@"
