"""Which options of each command line command name the files it reads and those it writes, and the
checks made on them before any work: no output over an input or another output, each in the format its
name says, somewhere a file can be written."""

from __future__ import annotations

import argparse

# per command: the options it reads files from, and those it writes files to (argparse destinations)
INPUT_OPTIONS = {
    "train": ("images", "labels", "resume", "init_model"),
    "predict": ("input", "model"),
    "extract": ("input", "model"),
    "vectorize": ("mask", "probability"),
    "evaluate": ("prediction", "labels", "aoi"),
    "info": ("model",),
    "export-onnx": ("model",),
}
OUTPUT_OPTIONS = {
    "train": ("output",),
    "predict": ("probability", "mask"),
    "extract": ("probability", "mask", "output"),
    "vectorize": ("output",),
    "evaluate": ("error_map", "report", "json"),
    "export-onnx": ("output",),
}
# formats checked here, before the work, because the engine only meets them when it writes
POLYGON_SUFFIXES = (".gpkg", ".geojson", ".json")
OUTPUT_FORMATS = {
    ("train", "output"): ((".pt",), "a model file"),
    ("export-onnx", "output"): ((".onnx",), "ONNX"),
    ("vectorize", "output"): (POLYGON_SUFFIXES, "GeoPackage or GeoJSON"),
    ("extract", "output"): (POLYGON_SUFFIXES, "GeoPackage or GeoJSON"),
}


POSITIONAL = {
    "predict": "input",
    "extract": "input",
    "vectorize": "mask",
    "evaluate": "prediction",
    "info": "model",
    "export-onnx": "model",
}


def _option(command: str, name: str) -> str:
    """An argument as the usage line names it."""
    return name if POSITIONAL.get(command) == name else "--" + name.replace("_", "-")


def check_command_paths(args: argparse.Namespace) -> None:
    """Before any work: no output over an input (links included) or another output, in the format its
    name says, somewhere a file can be written."""
    from .io.files import check_output_location, check_output_paths, check_output_suffix

    inputs = {_option(args.command, name): getattr(args, name, None) for name in INPUT_OPTIONS.get(args.command, ())}
    outputs = {_option(args.command, name): getattr(args, name, None) for name in OUTPUT_OPTIONS.get(args.command, ())}
    check_output_paths(inputs, outputs)
    for name, path in outputs.items():
        if path:
            check_output_location(path, name)
            format_ = OUTPUT_FORMATS.get((args.command, name.lstrip("-")))
            if format_:
                check_output_suffix(path, *format_, name=name)
