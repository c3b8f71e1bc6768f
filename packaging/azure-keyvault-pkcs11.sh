#!/bin/sh
# /usr/bin/azure-keyvault-pkcs11 of the packages: the CLI on the Node runtime shipped next to it. Found from this
# script's own (symlink-resolved) location, so an extracted tarball works wherever it lands.
lib="$(dirname "$(readlink -f "$0")")/../lib/azure-keyvault-pkcs11"
exec "$lib/node" "$lib/cli.cjs" "$@"
