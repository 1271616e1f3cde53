#!/bin/sh
# Builds Midge's Debian package with one command:
#     packaging/build-deb.sh [cargo-deb options]
# Installs cargo-deb if it is missing, builds the release binaries, runs
# `cargo deb -p midge` (metadata: [package.metadata.deb] in
# crates/midge/Cargo.toml), checks the shipped configuration with the broker
# being shipped, and prints the .deb's path on the last line
# (<target dir>/debian/midge_<version>-1_<arch>.deb).
set -eu
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb" >&2
    cargo install --locked cargo-deb
fi

log=$(mktemp)
tmp=$(mktemp -d)
trap 'rm -rf "$log" "$tmp"' EXIT

if ! cargo deb -p midge "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "build-deb: cargo deb failed" >&2
    exit 1
fi
cat "$log" >&2
deb=$(grep '\.deb$' "$log" | tail -n 1)
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not say where the package is" >&2
    exit 1
fi

# The release broker must accept the configuration it is shipped with
# (include_dir pointed at the shipped conf.d: /etc/midge may not exist here).
target=${CARGO_TARGET_DIR:-target}
sed "s#^include_dir .*#include_dir $(pwd)/packaging/conf.d#" packaging/midge.conf >"$tmp/midge.conf"
if ! "$target/release/midge" --test-config -c "$tmp/midge.conf" >&2; then
    echo "build-deb: packaging/midge.conf is refused by the broker in $deb" >&2
    exit 1
fi

echo "$deb"
