"""QGIS entry point of the U-Net Building Extractor plugin (module name ``unet_buildings``)."""


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    # Imported here so that QGIS loading the package (or pytest seeing this file) stays cheap.
    from .plugin.plugin import UNetBuildingsPlugin

    return UNetBuildingsPlugin(iface)
