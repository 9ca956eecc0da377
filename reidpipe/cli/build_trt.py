"""``reidpipe build-trt --arch NAME --onnx-dir DIR --splits DIR --out DIR``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import (
    PARITY_SPLITS_HELP,
    add_arch_argument,
    add_folder_arguments,
    params_from_args,
)

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "build-trt",
        parents=[common],
        help="build a TensorRT engine (or record why not), time it, check parity with ONNX Runtime",
    )
    add_arch_argument(parser)
    add_folder_arguments(
        parser,
        onnx_dir="folder written by `reidpipe export-onnx`",
        splits=PARITY_SPLITS_HELP,
        out="folder to write: status.json (+ model.engine, timing.cache)",
    )
    parser.set_defaults(run=run, single_gpu=True)


def run(args: argparse.Namespace) -> int:
    from reidpipe.deploy.tensorrt_build import build_trt_stage
    from reidpipe.filenames import TRT_STATUS_FILE

    status = build_trt_stage(
        params_from_args(args), args.arch, args.onnx_dir, args.splits, args.out
    )
    detail = f": {status['reason']}" if status["reason"] else ""
    log.info(f"{args.out}/{TRT_STATUS_FILE}: TensorRT {status['status']}{detail}")
    return 0
