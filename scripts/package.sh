#!/usr/bin/env bash
# Builds dist/<plugin>.zip for the QGIS plugin manager ("Install from ZIP") or plugins.qgis.org:
# one top folder named after the module, holding what QGIS runs and nothing of the development set-up.
# Usage: bash scripts/package.sh unet_buildings   (DIST_DIR=folder to write elsewhere than dist/)
set -euo pipefail
plugin=${1:?usage: package.sh <plugin module name>}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v zip >/dev/null || { echo "zip is missing: apt-get install zip" >&2; exit 127; }

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir "$staging/$plugin"
cd "$repo"
contents=(metadata.txt __init__.py plugin model resources)
[ -f LICENSE ] && contents+=(LICENSE)
[ -f README.md ] && contents+=(README.md)
# git's own list where there is one, so stray local files never ship; otherwise the folders as they are
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 && [ -n "$(git ls-files -- "${contents[@]}")" ]; then
  git ls-files -co --exclude-standard -- "${contents[@]}" | while read -r file; do
    [ -f "$file" ] && mkdir -p "$staging/$plugin/$(dirname "$file")" && cp -p "$file" "$staging/$plugin/$file"
  done
else
  cp -rp "${contents[@]}" "$staging/$plugin/"
fi
find "$staging/$plugin" \( -name __pycache__ -o -name '*.pyc' -o -name '.*' \) -prune -exec rm -rf {} +

dist=$(mkdir -p "${DIST_DIR:-$repo/dist}" && cd "${DIST_DIR:-$repo/dist}" && pwd)
rm -f "$dist/$plugin.zip.part"
(cd "$staging" && zip -qr -X "$dist/$plugin.zip.part" "$plugin")
mv "$dist/$plugin.zip.part" "$dist/$plugin.zip"
echo "$dist/$plugin.zip: $(unzip -l "$dist/$plugin.zip" | tail -1 | awk '{print $2}') files"
