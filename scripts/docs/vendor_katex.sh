#!/usr/bin/env bash
# Vendors KaTeX (MIT licence) from the npm registry into docs/javascripts/katex/,
# so that the site renders its equations with no network access at view time.
# Only what the site needs is kept: the minified script and stylesheet, the
# woff2 fonts (every browser the site targets picks woff2 first) and the licence.
#
#   scripts/docs/vendor_katex.sh            # the version pinned below
#   KATEX_VERSION=0.16.22 scripts/docs/vendor_katex.sh
set -euo pipefail

KATEX_VERSION="${KATEX_VERSION:-0.19.1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="$ROOT/docs/javascripts/katex"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "katex@$KATEX_VERSION" >/dev/null && tar xzf katex-*.tgz)
rm -rf "$DEST"
mkdir -p "$DEST/fonts"
cp "$WORK/package/dist/katex.min.js" "$WORK/package/dist/katex.min.css" "$DEST/"
cp "$WORK/package/dist/fonts/"*.woff2 "$DEST/fonts/"
cp "$WORK/package/LICENSE" "$DEST/LICENSE"
echo "$KATEX_VERSION" > "$DEST/VERSION"
du -sh "$DEST"
