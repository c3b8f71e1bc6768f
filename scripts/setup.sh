#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine with Node 20 lacks to build and run the module and its demo:
# the OASIS PKCS#11 headers from p11-kit, Ninja for cmake-js, and the real clients the demo and tests drive. Then installs the
# npm dependencies exactly as locked. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libp11-kit-dev p11-kit pkg-config ninja-build opensc openssl)
if [[ "${1:-}" == "--with-clients" && -f .ci/client-packages.txt ]]; then
  mapfile -t extra < <(grep -v '^\s*\(#\|$\)' .ci/client-packages.txt)
  packages+=("${extra[@]}")
  # The 32-bit toolchain for test/module/ulong-width.test.ts (a host whose CK_ULONG is 4 bytes); x86-64 only.
  if [[ $(dpkg --print-architecture) == amd64 ]]; then packages+=(gcc-multilib); fi
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo)
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

npm ci --no-audit --no-fund
