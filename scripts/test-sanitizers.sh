#!/usr/bin/env bash
# Runs the shim's own tests (test/native), the module tests (test/module) and the fuzzers (test/fuzz) against a
# build of the shim with AddressSanitizer and UndefinedBehaviorSanitizer, then puts the normal build back. The
# hosts there (the C drivers and node with pkcs11js) are not instrumented, so the sanitizer runtimes are preloaded
# into them.
# The client tests are left out: their harness gives each client program a clean environment, without LD_PRELOAD.
set -euo pipefail
cd "$(dirname "$0")/.."

npm run build:ts
trap 'npm run build:native >/dev/null' EXIT
AKV_SANITIZE=1 npm run build:native

LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  npx ava test/native test/module test/fuzz
