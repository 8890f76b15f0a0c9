"""Command line for the engine, without QGIS: ``python -m model <command> ...`` from the repository
root (or ``python -m unet_buildings.model`` where the plugin is installed as a package).

Commands: train, predict, vectorize, extract, evaluate, info, export-onnx, assemble (joins the shards of
``predict --shard K/N``, see shards.py). Run one with --help for its options.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .choices import (
    BUILDING_VALUES_HELP,
    BUILDING_VALUES_TEXT,
    DEFAULT_MIN_AREA_M2,
    DEFAULT_SIMPLIFY_M,
    DEVICE_CHOICES,
    NORMALIZATIONS,
    PRECISIONS,
    PRESETS,
    parse_bands,
    parse_building_values,
)
from .command_paths import check_command_paths
from .command_stops import caused_by_interrupt, terminate_as_interrupt
from .errors import EngineError, InputError


class ConsoleProgress:
    """One updating line on stderr, at most a few times a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, percent: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5 or percent >= 100:
            self._last = now
            print(f"\r{percent:5.1f}%  {message[:100]:<100}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print(file=sys.stderr)


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a U-Net on image / label pairs")
    parser.add_argument("--images", nargs="+", required=True, help="image rasters")
    parser.add_argument(
        "--labels", nargs="+", required=True, help="label rasters or polygon files, in the images' order"
    )
    parser.add_argument("--building-values", default=BUILDING_VALUES_TEXT, help=BUILDING_VALUES_HELP)
    parser.add_argument("--preset", choices=PRESETS, default="default")
    parser.add_argument("--output", required=True, help="model file to write (.pt)")
    for name in ("epochs", "patches-per-epoch", "batch-size", "base-width", "tile-size-px", "seed"):
        parser.add_argument(f"--{name}", type=int, help="default: the preset's value")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--bands", help="1-based band numbers, e.g. '1,2,3' (default: all but alpha)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--resume", help="a checkpoint (…_checkpoints/last.pt) to continue from")
    parser.add_argument(
        "--time-budget-min",
        type=float,
        help="train for this many minutes (default preset on a CPU: 30 unless --epochs is given)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--init-model",
        help="a model file (.pt) to start from (default: the starter model, when the images' bands fit it)",
    )
    start.add_argument("--from-scratch", action="store_true", help="train a new network instead of fine-tuning")
    parser.add_argument("--early-stop-epochs", type=int, help="stop after this many epochs without a better val IoU")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, help="default: the preset's")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: auto (bfloat16 where native)")


def _run_train(args: argparse.Namespace, progress: ConsoleProgress) -> dict | None:
    """Trains; under ``torchrun`` every process runs this as one rank, and only rank 0 prints
    (the others return None: nothing to print)."""
    from .training.distributed import is_main_process
    from .training.trainer import TrainConfig, train

    config = TrainConfig.for_preset(
        args.preset,
        images=args.images,
        labels=args.labels,
        output_model=args.output,
        building_values=parse_building_values(args.building_values),
        epochs=args.epochs,
        patches_per_epoch=args.patches_per_epoch,
        batch_size=args.batch_size,
        base_width=args.base_width,
        tile_size_px=args.tile_size_px,
        seed=args.seed,
        learning_rate=args.learning_rate,
        bands=parse_bands(args.bands or ""),
        device=args.device,
        resume_from=args.resume,
        time_budget_s=args.time_budget_min * 60 if args.time_budget_min else None,
        init_model=args.init_model,
        from_scratch=args.from_scratch,
        early_stop_patience=args.early_stop_epochs,
        normalization=args.normalization,
        precision=args.precision,
    )
    main = is_main_process()

    def on_epoch(record: dict) -> None:
        progress.done()
        trained = f"train loss {record['train_loss']:.4f}, " if record["epoch"] else "the model it starts from: "
        print(
            f"epoch {record['epoch']}: {trained}val loss {record['val_loss']:.4f}, "
            f"val accuracy {record['val_accuracy']:.4f}, val IoU {record['val_iou']:.4f} "
            f"(tuned {record['val_iou_tuned']:.4f} at {record['val_threshold']:.2f}), {record['seconds']:.0f} s",
            file=sys.stderr,
        )

    def report(percent: float, message: str) -> None:
        if percent == 0.0:  # set-up lines (device, precision, processes and global batch) each keep a line
            print(f"\r{message}", file=sys.stderr)
        else:
            progress(percent, message)

    result = train(config, progress=report, on_epoch=on_epoch)
    if not main:
        return None
    best = result.history[[record["epoch"] for record in result.history].index(result.best_epoch)]
    progress.done()
    print(result.outcome, file=sys.stderr)
    return {
        "model": str(result.model_path),
        "started_from": result.start_model or None,
        "start_val_iou": result.start_val_iou,
        "kept_start": result.kept_start,
        "best_epoch": result.best_epoch,
        "device": result.device_description,
        "precision": result.precision,
        "val_iou": best["val_iou_tuned"],
        "threshold": best["val_threshold"],
        "stopped_early": result.stop_reason or None,
        "history_csv": str(result.history_csv_path),
        "epochs_run": len(result.history),
    }


def _add_predict_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image raster")
    parser.add_argument("--model", required=True, help="model file (.pt)")
    parser.add_argument("--probability", help="probability GeoTIFF to write")
    parser.add_argument("--mask", help="building mask GeoTIFF to write")
    parser.add_argument("--threshold", type=float, help="default: the model's tuned threshold")
    parser.add_argument(
        "--batch-size", type=int, help="tiles predicted at once (default: as many as half a million pixels hold)"
    )
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument(
        "--extent",
        type=float,
        nargs=4,
        metavar=("LEFT", "BOTTOM", "RIGHT", "TOP"),
        help="only this area, in the image's CRS: its pixels come out exactly as in a prediction of the whole image",
    )


def _add_vectorize_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--min-area",
        type=float,
        default=DEFAULT_MIN_AREA_M2,
        help="smallest building, in square metres on the ground whatever the CRS (converted at the raster's centre)",
    )
    parser.add_argument(
        "--simplify",
        type=float,
        default=DEFAULT_SIMPLIFY_M,
        help="outline tolerance, in metres on the ground whatever the CRS (converted at the raster's centre)",
    )
    parser.add_argument("--regularize", action="store_true", help="square off building outlines")


def _predict(
    args: argparse.Namespace, progress: ConsoleProgress, mask_path: str | None, probability_path: str | None
) -> dict:
    from .prediction.predict import extent_window, predict_raster

    area = {}
    if args.extent:
        if getattr(args, "shard", None):
            raise InputError("Give --extent or --shard, not both: a shard is a band of rows of the whole image.")
        area["window"] = extent_window(args.input, tuple(args.extent))
    if getattr(args, "shard", None):
        from .prediction.shards import shard_predictor

        predict_raster = shard_predictor(args.shard)  # noqa: F811  (the same call, for one shard)
    result = predict_raster(
        args.input,
        args.model,
        probability_path=probability_path,
        mask_path=mask_path,
        threshold=args.threshold,
        batch_size=args.batch_size,
        device=args.device,
        progress=progress,
        **area,
    )
    return {
        "probability": str(result.probability_path) if result.probability_path else None,
        "mask": str(result.mask_path) if result.mask_path else None,
        "threshold": result.threshold,
    }


def _vectorize(
    mask: str,
    probability: str | None,
    output: str,
    args: argparse.Namespace,
    progress: ConsoleProgress,
    source: str,
    model: str | None = None,
) -> dict:
    """``source`` and ``model``: the files the polygons were made from, kept in their attributes."""
    import rasterio

    from .io.vector_io import with_provenance, write_polygons
    from .vectors.vectorize import polygons_from_mask

    with rasterio.open(mask) as dataset:
        crs_wkt = dataset.crs.to_wkt() if dataset.crs else ""
    features = polygons_from_mask(
        mask,
        probability_path=probability,
        min_area_m2=args.min_area,
        simplify_m=args.simplify,
        regularize=args.regularize,
        progress=progress,
    )
    return {"polygons": output, "buildings": write_polygons(with_provenance(features, source, model), output, crs_wkt)}


def _run_extract(args: argparse.Namespace, progress: ConsoleProgress) -> dict:
    # vectorizing needs a mask file and the mean_probability field a probability file, asked for or not
    with tempfile.TemporaryDirectory(prefix="unet_buildings_") as scratch:
        mask = args.mask or str(Path(scratch) / "mask.tif")
        probability = args.probability or str(Path(scratch) / "probability.tif")
        outputs = _predict(args, progress, mask, probability)
        outputs.update(_vectorize(mask, probability, args.output, args, progress, args.input, args.model))
    return {**outputs, "mask": args.mask, "probability": args.probability}


def _run_evaluate(args: argparse.Namespace, progress: ConsoleProgress) -> dict:
    from .evaluation.evaluate import evaluate

    result = evaluate(
        args.prediction,
        args.labels,
        parse_building_values(args.building_values),
        threshold=args.threshold,
        aoi=args.aoi,
        error_map_path=args.error_map,
        report_html_path=args.report,
        report_json_path=args.json,
        progress=progress,
    )
    return result.to_dict()


def _run_info(args: argparse.Namespace, progress: ConsoleProgress) -> dict:
    from dataclasses import asdict

    from .net.modelfile import ModelInfo, read_payload

    return asdict(ModelInfo.from_dict(read_payload(Path(args.model))["info"]))


def _run_export_onnx(args: argparse.Namespace, progress: ConsoleProgress) -> dict:
    from .net.export import export_onnx

    return {
        "onnx": str(
            export_onnx(
                args.model,
                args.output,
                opset=args.opset,
                overlap_percent=args.overlap_percent,
                tile_size_px=args.tile_size,
            )
        )
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    predict = commands.add_parser("predict", help="probability and/or mask rasters for an image")
    _add_predict_options(predict)
    predict.add_argument(
        "--shard",
        help="K/N: only the K-th of N bands of rows, written beside each output as "
        "<name>.shard-K-of-N.tif; join them with 'assemble'",
    )
    assemble = commands.add_parser("assemble", help="join the shards of predictions made with --shard K/N")
    assemble.add_argument(
        "outputs", nargs="+", help="the outputs named in the prediction (a .vrt name: a VRT referring to the shards)"
    )
    assemble.add_argument("--shards", type=int, required=True, help="N, the number of shards")
    assemble.add_argument("--remove-shards", action="store_true", help="delete the shard files once joined")
    vectorize = commands.add_parser("vectorize", help="building polygons from a mask raster")
    vectorize.add_argument("mask", help="mask raster (1 building, 0 background)")
    vectorize.add_argument("--output", required=True, help="GeoPackage (.gpkg) or GeoJSON to write")
    vectorize.add_argument("--probability", help="probability raster for each polygon's mean probability")
    _add_vectorize_options(vectorize)
    extract = commands.add_parser("extract", help="predict and vectorize in one step")
    _add_predict_options(extract)
    extract.add_argument("--output", required=True, help="GeoPackage (.gpkg) or GeoJSON to write")
    _add_vectorize_options(extract)
    evaluate = commands.add_parser("evaluate", help="confusion matrix and scores against a label layer")
    evaluate.add_argument("prediction", help="mask or probability raster, or building polygons")
    evaluate.add_argument("--labels", required=True, help="class raster, binary raster or building polygons")
    evaluate.add_argument("--building-values", default=BUILDING_VALUES_TEXT, help=BUILDING_VALUES_HELP)
    evaluate.add_argument("--threshold", type=float, help="for probability rasters")
    evaluate.add_argument("--aoi", help="polygons limiting the scored area")
    evaluate.add_argument("--error-map", help="error-map GeoTIFF to write (0 TN, 1 FP, 2 FN, 3 TP)")
    evaluate.add_argument("--report", help="HTML report to write")
    evaluate.add_argument("--json", help="JSON report to write")
    info = commands.add_parser("info", help="print what a model file holds")
    info.add_argument("model")
    export = commands.add_parser("export-onnx", help="write a model as ONNX for the Deepness QGIS plugin")
    export.add_argument("model", help="model file (.pt)")
    export.add_argument("--output", required=True, help="ONNX file to write (.onnx)")
    export.add_argument("--opset", type=int, default=17)
    export.add_argument("--overlap-percent", type=int, default=25, help="tile overlap Deepness proposes")
    export.add_argument("--tile-size", type=int, help="tile side Deepness proposes, px (default: the model's)")
    return parser


def _run_assemble(args: argparse.Namespace, progress: ConsoleProgress) -> dict:
    from .prediction.shards import assemble

    return {
        "assembled": [
            str(assemble(Path(output), args.shards, remove_shards=args.remove_shards, progress=progress))
            for output in args.outputs
        ]
    }


RUNNERS = {
    "train": _run_train,
    "predict": lambda a, p: _predict(a, p, a.mask, a.probability),
    "extract": _run_extract,
    "vectorize": lambda a, p: _vectorize(a.mask, a.probability, a.output, a, p, a.mask),
    "evaluate": _run_evaluate,
    "info": _run_info,
    "export-onnx": _run_export_onnx,
    "assemble": _run_assemble,
}


ERROR_LOG = Path(tempfile.gettempdir()) / "unet_buildings-error.log"


def interrupted(progress: ConsoleProgress) -> int:
    progress.done()
    print("interrupted", file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = ConsoleProgress()
    try:
        check_command_paths(args)
        with terminate_as_interrupt():
            outputs = RUNNERS[args.command](args, progress)
    except EngineError as error:
        progress.done()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        from .io.files import describe_os_error

        progress.done()
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except MemoryError:
        progress.done()
        print(
            "error: out of memory: close other programs or use a smaller --batch-size, then run again.", file=sys.stderr
        )
        return 2
    except Exception as error:  # a bug: one sentence here, the traceback in a file to report
        if caused_by_interrupt(error):
            return interrupted(progress)
        import traceback

        progress.done()
        try:
            ERROR_LOG.write_text("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            where = f"details in the log '{ERROR_LOG}'"
        except OSError:
            where = "no log could be written"
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        print(
            f"error: {args.command} failed unexpectedly ({type(error).__name__}{': ' + detail if detail else ''}); "
            f"{where}. Please report it with those details.",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        return interrupted(progress)
    if outputs is not None:  # None: a training rank other than 0, which prints nothing
        progress.done()
        print(json.dumps(outputs, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
