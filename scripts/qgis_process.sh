#!/usr/bin/env bash
# qgis_process with this plugin enabled: `scripts/qgis_process.sh run unet_buildings:extract -- INPUT=...`.
# Debian's /usr/bin/qgis_process wrapper passes --noversioncheck, which QGIS 3.22 rejects, so the real
# binary qgis_process.bin is called. A plugin found through QGIS_PLUGINPATH stays disabled until it is
# enabled in the profile; that is done once (the check below makes repeated calls cheap).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
plugin=unet_buildings

export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
if [ -z "${QGIS_PLUGINPATH:-}" ]; then
  # QGIS finds plugins as folders named after the module; a clone may be named anything.
  mkdir -p "$repo/.qgis-plugins"
  [ -e "$repo/.qgis-plugins/$plugin" ] || ln -sfn .. "$repo/.qgis-plugins/$plugin"
  export QGIS_PLUGINPATH=$repo/.qgis-plugins
fi
export QGIS_CUSTOM_CONFIG_PATH=${QGIS_CUSTOM_CONFIG_PATH:-$repo/.qgis-profile}
if [ -z "${PYTHONPATH:-}" ] && [ -x "$repo/.venv/bin/python" ]; then
  # qgis_process runs the system python: point it at the venv's torch
  PYTHONPATH=$("$repo/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  export PYTHONPATH
fi

qgis_process=$(command -v qgis_process.bin || command -v qgis_process) || {
  echo "qgis_process not found: install QGIS (Debian/Ubuntu: apt-get install qgis)." >&2; exit 127; }
settings="$QGIS_CUSTOM_CONFIG_PATH/profiles/default/QGIS/QGIS3.ini"
if ! grep -qs "^$plugin=true" "$settings"; then
  "$qgis_process" plugins enable "$plugin" >/dev/null
fi
exec "$qgis_process" "$@"
