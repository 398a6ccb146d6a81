#!/usr/bin/env bash
# Build the release bundle of one edgepair version on the controller (the only machine with a package registry):
# the edgepair wheel plus every dependency's wheel, in one uncompressed tar (wheels are compressed already).
#   deploy/build-release.sh [REPO] [OUT_DIR] [EXTRA]   -> OUT_DIR/edgepair-<version>-bundle.tar
# Hosts install it with `pip install --no-index --find-links` (rolling-upgrade.yml does).
set -euo pipefail
repo="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
out="$(mkdir -p "${2:-$repo/dist/bundles}" && cd "${2:-$repo/dist/bundles}" && pwd)"
extra="${3:-cpu}"
pip="${PIP:-pip}"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/pyproject.toml" | head -1)"
[ -n "$version" ] || { echo "build-release: no version in $repo/pyproject.toml" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$pip" wheel --quiet --disable-pip-version-check -w "$work/wheels" "$repo[$extra]" 2>"$work/pip.log" \
  || { cat "$work/pip.log" >&2; exit 1; }
ls "$work/wheels/edgepair-$version-py3-none-any.whl" >/dev/null
tar -C "$work/wheels" -cf "$out/.edgepair-$version-bundle.tar.tmp" .
mv -f "$out/.edgepair-$version-bundle.tar.tmp" "$out/edgepair-$version-bundle.tar"
echo "$out/edgepair-$version-bundle.tar"
