#!/usr/bin/env bash
# CI check of the packages (issue #12, docs/install.md), run as root on a clone where `npm test` passed:
#   - `npm run package` builds the .deb and the tarball;
#   - the .deb installs with apt; its files are where docs/install.md says; the config is a conffile that a
#     reinstall keeps; p11-kit lists the module and `p11tool --list-tokens` shows its tokens with no flags;
#   - against an emulator started with the installed CLI, signatures made through the installed module (directly,
#     through p11-kit-proxy, and through the agent) verify with openssl against the vault's own JWK, fetched over HTTPS;
#   - the helper's and the agent's /proc/<pid>/exe is the packaged node, never the system one, with no node on PATH;
#   - `apt-get purge` leaves nothing of what `dpkg -L` listed (the conffile included);
#   - the tarball, extracted in a folder with a space in its name, does the same with its own node and CLI.
# Cleans up after itself (emulators, agent, the installed package, temp files), prints "N passed, N failed" and exits
# non-zero when anything failed.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg=azure-keyvault-pkcs11
passed=0
failed=0
failures=()
emulator_pid=
agent_pidfile=
installed_by_us=0
work=$(mktemp -d "${TMPDIR:-/tmp}/akv-ci-package.XXXXXX")

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1" >&2; }

# check DESCRIPTION COMMAND...: runs the command, output kept and shown only on failure.
check() {
  local what=$1
  shift
  if "$@" >"$work/check.log" 2>&1; then
    pass "$what"
  else
    fail "$what"
    sed 's/^/     | /' "$work/check.log" >&2
  fi
}

# fatal DESCRIPTION: a step the rest depends on failed.
fatal() {
  fail "$1"
  exit 1
}

stop_emulator() {
  if [ -n "$emulator_pid" ]; then
    kill -TERM "$emulator_pid" 2>/dev/null
    wait "$emulator_pid" 2>/dev/null
    emulator_pid=
  fi
}

stop_agent() {
  if [ -n "$agent_pidfile" ] && [ -f "$agent_pidfile" ]; then
    local pid
    pid=$(cat "$agent_pidfile")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  agent_pidfile=
}

is_installed() { dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; }

cleanup() {
  local status=$?
  stop_agent
  stop_emulator
  if [ "$installed_by_us" = 1 ] && is_installed; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y "$pkg" >/dev/null 2>&1 || echo "cleanup: apt-get purge $pkg failed" >&2
  fi
  rm -rf "$work"
  echo "ci-check (packages): $passed passed, $failed failed"
  for f in "${failures[@]}"; do echo "  failed: $f"; done
  if [ "$failed" -gt 0 ] || [ "$status" -ne 0 ]; then exit 1; fi
  exit 0
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- preconditions -------------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || fatal "runs as root (apt-get install and purge)"
for tool in apt-get dpkg-deb p11tool p11-kit pkcs11-tool openssl curl jq npm; do
  command -v "$tool" >/dev/null || fatal "needs $tool on PATH"
done
is_installed && fatal "$pkg is already installed: this check installs and purges it, so refusing to touch that install"

version=$(jq -r .version "$repo/package.json")
deb_arch=$(dpkg --print-architecture)
case $deb_arch in
  amd64) node_arch=x64 ;;
  arm64) node_arch=arm64 ;;
  *) fatal "no Node runtime is packaged for $deb_arch" ;;
esac
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
deb=$repo/dist/${pkg}_${version}_${deb_arch}.deb
tarball=$repo/dist/${pkg}-${version}-linux-${node_arch}.tar.gz
system_node=$(command -v node >/dev/null && readlink -f "$(command -v node)")

# --- build ---------------------------------------------------------------------------------------------------------
(cd "$repo" && npm run package) || fatal "npm run package"
check "the .deb is built: ${deb#"$repo"/}" test -s "$deb"
check "the tarball is built: ${tarball#"$repo"/}" test -s "$tarball"
[ -s "$deb" ] && [ -s "$tarball" ] || exit 1

# A PATH with what the wrapper script needs and no node: /bin is /usr/bin on merged-/usr systems, so no system dir.
nonode=$work/bin
mkdir -p "$nonode"
for tool in sh dirname readlink; do ln -s "$(command -v "$tool")" "$nonode/$tool"; done

# The module's whole environment: no user config, no developer Azure settings, no node overrides.
for name in $(env | sed -n 's/^\(AZURE_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$name"; done
unset IDENTITY_ENDPOINT IDENTITY_HEADER MSI_ENDPOINT MSI_SECRET NODE_EXTRA_CA_CERTS XDG_RUNTIME_DIR
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config
mkdir -p "$XDG_CONFIG_HOME"
echo "message signed in the package check $(date +%s%N)" >"$work/data"
echo "another message" >"$work/other"

# --- helpers -------------------------------------------------------------------------------------------------------
# start_emulator CLI: the emulator on a free port with RSA and EC keys; exports what the module needs to reach it.
start_emulator() {
  PATH=$nonode "$1" emulator --port 0 --keys ci-rsa:RSA:2048,ci-ec:EC:P-256 --certs all >"$work/emulator.out" 2>"$work/emulator.err" &
  emulator_pid=$!
  for _ in $(seq 100); do grep -q '^READY ' "$work/emulator.out" && break; kill -0 "$emulator_pid" 2>/dev/null || break; sleep 0.2; done
  local ready
  ready=$(sed -n 's/^READY //p' "$work/emulator.out")
  if [ -z "$ready" ]; then
    cat "$work/emulator.err" >&2
    return 1
  fi
  vault_url=$(jq -r .url <<<"$ready")
  export IDENTITY_ENDPOINT IDENTITY_HEADER NODE_EXTRA_CA_CERTS AZURE_KEYVAULT_PKCS11_CONFIG=$work/config.json AZURE_KEYVAULT_PKCS11_AGENT=0
  IDENTITY_ENDPOINT=$(jq -r .identityEndpoint <<<"$ready")
  IDENTITY_HEADER=$(jq -r .identityHeader <<<"$ready")
  NODE_EXTRA_CA_CERTS=$(jq -r .caFile <<<"$ready")
  jq -n --arg url "$vault_url" '{slots: [{key_name: "ci-rsa", vault_url: $url}, {key_name: "ci-ec", vault_url: $url}]}' >"$work/config.json"
}

# fetch_public_keys NODE: each key's JWK from the vault with a managed-identity token, as PEM in $work/<key>.pem.
fetch_public_keys() {
  local node=$1 token key
  token=$(curl -sSf -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" \
    "$IDENTITY_ENDPOINT?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net" | jq -er .access_token) || return 1
  for key in ci-rsa ci-ec; do
    curl -sSf --cacert "$NODE_EXTRA_CA_CERTS" -H "Authorization: Bearer $token" "$vault_url/keys/$key?api-version=7.4" |
      jq -e .key | "$node" -e '
        const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
        const jwk = j.kty.startsWith("RSA") ? { kty: "RSA", n: j.n, e: j.e } : { kty: "EC", crv: j.crv, x: j.x, y: j.y };
        process.stdout.write(require("crypto").createPublicKey({ key: jwk, format: "jwk" }).export({ type: "spki", format: "pem" }));
      ' >"$work/$key.pem" || return 1
  done
}

# sign_verify MODULE TOKEN: signs $work/data through MODULE with no node on PATH, verifies it with openssl and the
# vault's key, and checks that the same signature does not verify another message (so the verification is real).
sign_verify() {
  local module=$1 token=$2 sig=$work/$2.sig mechanism format=()
  if [ "$token" = ci-ec ]; then mechanism=ECDSA-SHA256; format=(--signature-format openssl); else mechanism=SHA256-RSA-PKCS; fi
  rm -f "$sig"
  PATH=$nonode /usr/bin/pkcs11-tool --module "$module" --token-label "$token" --sign -m "$mechanism" "${format[@]}" \
    -i "$work/data" -o "$sig" || return 1
  openssl dgst -sha256 -verify "$work/$token.pem" -signature "$sig" "$work/data" || return 1
  ! openssl dgst -sha256 -verify "$work/$token.pem" -signature "$sig" "$work/other"
}

# helper_exe MODULE: the /proc/<pid>/exe of the helper that MODULE starts, seen while the host waits for its input.
helper_exe() {
  local module=$1 fifo=$work/fifo host child="" exe=""
  rm -f "$fifo"
  mkfifo "$fifo"
  PATH=$nonode /usr/bin/pkcs11-tool --module "$module" --token-label ci-rsa --sign -m SHA256-RSA-PKCS -i "$fifo" \
    -o "$work/fifo.sig" >/dev/null 2>&1 &
  host=$!
  # The child is first a copy of the host, then the helper once it has exec'd.
  for _ in $(seq 100); do
    child=$(pgrep -P "$host" | head -n 1)
    if [ -n "$child" ]; then
      exe=$(readlink "/proc/$child/exe")
      [ "$exe" != "$(readlink "/proc/$host/exe")" ] && break
    fi
    sleep 0.1
  done
  # Bounded: a host that failed before opening its input would leave the writer blocked.
  timeout 30 sh -c 'cat "$1" >"$2"' _ "$work/data" "$fifo" || kill "$host" 2>/dev/null
  wait "$host"
  echo "$exe"
}

# runs_on_node MODULE NODE: the helper's executable is NODE, and not the system node.
runs_on_node() {
  local exe
  exe=$(helper_exe "$1")
  echo "helper exe: ${exe:-none}; expected $2; system node: ${system_node:-none}"
  [ "$exe" = "$2" ] && [ "$exe" != "$system_node" ]
}

# agent_check MODULE NODE: with the agent on, the agent the module launches runs on NODE and serves a signature.
agent_check() {
  local module=$1 node=$2 run=$work/run pid
  mkdir -p "$run"
  chmod 0700 "$run"
  agent_pidfile=$run/azure-keyvault-pkcs11/agent.pid
  AZURE_KEYVAULT_PKCS11_AGENT=1 XDG_RUNTIME_DIR=$run sign_verify "$module" ci-ec || return 1
  pid=$(cat "$agent_pidfile") || return 1
  echo "agent pid $pid exe $(readlink "/proc/$pid/exe"); expected $node"
  [ "$(readlink "/proc/$pid/exe")" = "$node" ] && [ "$node" != "$system_node" ] || return 1
  stop_agent
}

list_tokens() {
  PATH=$nonode /usr/bin/p11tool --list-tokens >"$work/tokens" 2>&1
  cat "$work/tokens"
  grep -q 'URL: pkcs11:.*manufacturer=Azure%20Key%20Vault.*token=ci-rsa' "$work/tokens" &&
    grep -q 'URL: pkcs11:.*manufacturer=Azure%20Key%20Vault.*token=ci-ec' "$work/tokens"
}

# --- the .deb ------------------------------------------------------------------------------------------------------
# What exists before the install stays after the purge (shared folders such as /usr/lib/systemd/user).
dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | grep -v '^$' | while read -r p; do
  [ -e "$p" ] && echo "$p"
done >"$work/preexisting"

DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fatal "apt-get install -y $deb"; }
installed_by_us=1
pass "apt-get install -y ./dist/$(basename "$deb")"

lib=/usr/lib/$pkg
module=/usr/lib/$triplet/pkcs11/$pkg.so
for f in "$module" "$lib/node" "$lib/helper.cjs" "$lib/helper-main.cjs" "$lib/helper-main.cache" "$lib/cli.cjs" \
  "$lib/peercred.node" /usr/bin/$pkg /usr/share/p11-kit/modules/$pkg.module /etc/$pkg/config.json \
  /usr/share/doc/$pkg/config.schema.json /usr/share/doc/$pkg/README.md /usr/share/doc/$pkg/copyright \
  /usr/lib/systemd/user/$pkg-agent.service /usr/lib/systemd/system/$pkg-agent-system.service; do
  check "installed: $f" test -f "$f"
done
check "/etc/$pkg/config.json is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' $pkg | grep -q ' /etc/$pkg/config.json '"
check "the CLI runs with no node on PATH" env PATH="$nonode" /usr/bin/$pkg --help
check "p11-kit list-modules shows the module" sh -c "p11-kit list-modules | grep -q '^$pkg: $pkg.so'"

start_emulator /usr/bin/$pkg || fatal "the emulator starts with the installed CLI"
pass "the emulator starts with the installed CLI"
fetch_public_keys "$lib/node" || fatal "the vault's public keys are fetched over HTTPS"
check "p11tool --list-tokens (no flags) shows both tokens" list_tokens
check "RSA signature through the installed module verifies" sign_verify "$module" ci-rsa
check "EC signature through the installed module verifies" sign_verify "$module" ci-ec
check "EC signature through p11-kit-proxy verifies" sign_verify "/usr/lib/$triplet/p11-kit-proxy.so" ci-ec
check "the helper runs on the packaged node ($lib/node)" runs_on_node "$module" "$lib/node"
check "the agent runs on the packaged node and signs" agent_check "$module" "$lib/node"
stop_emulator

echo '{ "slots": [], "agent": false }' >/etc/$pkg/config.json
DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall -o Dpkg::Options::=--force-confold "$deb" >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log" >&2; fail "apt-get install --reinstall"; }
check "a reinstall keeps the edited config" grep -q '"agent": false' /etc/$pkg/config.json

dpkg -L "$pkg" | grep -v '^/\.$' >"$work/installed"
DEBIAN_FRONTEND=noninteractive apt-get purge -y "$pkg" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fatal "apt-get purge -y $pkg"; }
pass "apt-get purge -y $pkg"
leftovers() {
  local left=0 p
  while read -r p; do
    grep -qxF "$p" "$work/preexisting" && continue
    if [ -e "$p" ] || [ -L "$p" ]; then echo "left behind: $p"; left=1; fi
  done <"$work/installed"
  [ "$left" = 0 ] && [ ! -e /etc/$pkg ] && ! is_installed
}
check "nothing of the $(wc -l <"$work/installed") paths dpkg -L listed is left, /etc/$pkg included" leftovers

# --- the tarball ---------------------------------------------------------------------------------------------------
where="$work/some place"
mkdir -p "$where"
tar -xzf "$tarball" -C "$where" || fatal "tar -xzf $tarball"
prefix="$where/$pkg-$version"
tmodule=$prefix/usr/lib/$triplet/pkcs11/$pkg.so
tnode=$prefix/usr/lib/$pkg/node
check "the tarball holds the .so at usr/lib/$triplet/pkcs11/" test -f "$tmodule"
start_emulator "$prefix/usr/bin/$pkg" || fatal "the emulator starts with the tarball's CLI"
pass "the emulator starts with the tarball's CLI"
fetch_public_keys "$tnode" || fatal "the vault's public keys are fetched over HTTPS (tarball)"
check "pkcs11-tool -L through the extracted tarball" env PATH="$nonode" /usr/bin/pkcs11-tool --module "$tmodule" -L
check "RSA signature through the extracted tarball verifies" sign_verify "$tmodule" ci-rsa
check "EC signature through the extracted tarball verifies" sign_verify "$tmodule" ci-ec
check "the tarball's helper runs on the tarball's node" runs_on_node "$tmodule" "$tnode"
check "the tarball's agent runs on the tarball's node and signs" agent_check "$tmodule" "$tnode"
stop_emulator
