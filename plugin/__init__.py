"""The QGIS side of the plugin: Processing provider and algorithms, the dock, layer styling.

Nothing here computes: it turns QGIS layers and parameters into plain values (file paths, numbers)
and calls the engine in ``model/``, imported inside the functions that need it so that QGIS starts
(and shows what is missing) even when torch is not installed.
"""

from pathlib import Path

DISPLAY_NAME = "U-Net Building Extractor"
PROVIDER_ID = "unet_buildings"
LOG_TAG = DISPLAY_NAME  # the tab in View > Panels > Log Messages
RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"
README_PATH = RESOURCES_DIR.parent / "README.md"  # shipped in the plugin's zip (scripts/package.sh)
ICON_PATH = RESOURCES_DIR / "icon.svg"
