"""``reidpipe export-onnx --arch NAME --model DIR --splits DIR --out DIR``."""

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
        "export-onnx",
        parents=[common],
        help="export a trained model to ONNX (+ FP16) and gate it on parity with PyTorch",
    )
    add_arch_argument(parser)
    add_folder_arguments(
        parser,
        model="trained model folder (reidpipe train)",
        splits=PARITY_SPLITS_HELP,
        out="folder to write: model.onnx[.data], model_fp16.onnx, parity.json",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.set_defaults(run=run, single_gpu=True)


def run(args: argparse.Namespace) -> int:
    from reidpipe.deploy.export_onnx import export_stage

    report = export_stage(
        params_from_args(args), args.arch, args.model, args.splits, args.out, args.device
    )
    worst = max(row["max_abs_diff"] for row in report["batch_parity"])
    deltas = report["retrieval"]["delta_points"]
    batches = [r["batch_size"] for r in report["batch_parity"]]
    log.info(
        f"{args.out}: parity passed (batches {batches}"
        f", max abs diff {worst:.2e}, mAP delta {deltas['mAP']:.3f}, rank-1 delta "
        f"{deltas['rank1']:.3f} points); files {', '.join(report['files'])}"
    )
    int8 = report["int8"]
    if int8 is not None and int8["status"] != "passed":
        log.warning("%s: no INT8 copy: %s", args.out, int8["reason"])
    return 0
