#!/usr/bin/env bash
# Cold start-up of the module, side by side: `pkcs11-tool -L` (C_Initialize with a fresh private helper, the slot
# and token listing) against the emulator, RUNS times per module, the modules taking turns so that machine load hits
# them alike. Prints each module's median and the ratio of each to the first. A measurement, not a test.
#   packaging/measure-startup.sh [--runs N] MODULE.so [MODULE.so...]
# e.g. packaging/measure-startup.sh build/azure-keyvault-pkcs11.so /usr/lib/x86_64-linux-gnu/pkcs11/azure-keyvault-pkcs11.so
set -euo pipefail

runs=15
if [ "${1:-}" = --runs ]; then runs=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [--runs N] MODULE.so [MODULE.so...]" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/akv-startup.XXXXXX")
emulator=
trap '[ -n "$emulator" ] && kill "$emulator" 2>/dev/null; rm -rf "$work"' EXIT

node "$repo/build/cli.cjs" emulator --port 0 --keys bench-rsa:RSA:2048,bench-ec:EC:P-256 --certs all >"$work/out" 2>/dev/null &
emulator=$!
for _ in $(seq 100); do grep -q '^READY ' "$work/out" && break; sleep 0.2; done
ready=$(sed -n 's/^READY //p' "$work/out")
[ -n "$ready" ] || { echo "the emulator did not start" >&2; exit 1; }
url=$(jq -r .url <<<"$ready")
jq -n --arg url "$url" '{slots: [{key_name: "bench-rsa", vault_url: $url}, {key_name: "bench-ec", vault_url: $url}]}' >"$work/config.json"
for name in $(env | sed -n 's/^\(AZURE_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$name"; done
export AZURE_KEYVAULT_PKCS11_CONFIG=$work/config.json AZURE_KEYVAULT_PKCS11_AGENT=0 HOME=$work XDG_CONFIG_HOME=$work
export IDENTITY_ENDPOINT IDENTITY_HEADER NODE_EXTRA_CA_CERTS
IDENTITY_ENDPOINT=$(jq -r .identityEndpoint <<<"$ready")
IDENTITY_HEADER=$(jq -r .identityHeader <<<"$ready")
NODE_EXTRA_CA_CERTS=$(jq -r .caFile <<<"$ready")

# One unmeasured run each: the files are then in the page cache for every measured run alike.
for module in "$@"; do pkcs11-tool --module "$module" -L >/dev/null; done
# Each round starts with the next module: the first run of a round is the slower one (seen: ~20%), whatever it runs.
for i in $(seq "$runs"); do
  for k in $(seq 0 $(($# - 1))); do
    m=$(( (i + k) % $# + 1 ))
    module=${!m}
    start=$(date +%s%N)
    pkcs11-tool --module "$module" -L >/dev/null
    echo $(( ($(date +%s%N) - start) / 1000 )) >>"$work/times.$m"
  done
done

median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) / 1000 }'; }
first=$(median "$work/times.1")
for m in $(seq $#); do
  med=$(median "$work/times.$m")
  printf '%-80s median %7.1f ms over %d runs, ratio %.3f\n' "${!m}" "$med" "$runs" "$(awk -v a="$med" -v b="$first" 'BEGIN { print a / b }')"
done
