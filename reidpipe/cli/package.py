"""``reidpipe package --arch NAME --onnx-dir DIR --trt-dir DIR --metrics JSON --train-config YAML
--splits DIR --train-set DIR --validation JSON [--verification JSON] --out DIR``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import add_arch_argument, add_folder_arguments, params_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "package",
        parents=[common],
        help="write the deployment package: Triton model repository, DeepStream ReID section",
    )
    add_arch_argument(parser)
    add_folder_arguments(
        parser,
        onnx_dir="folder written by `reidpipe export-onnx`",
        trt_dir="folder written by `reidpipe build-trt` (its engine, when built, "
        "becomes Triton's model.plan)",
    )
    _add_run_record_arguments(parser)
    add_folder_arguments(
        parser,
        out="folder to write: triton/, deepstream/, README.md, package.json, "
        "MODEL_CARD.md, model_card.json",
    )
    parser.set_defaults(run=run)


def _add_run_record_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's records that the model card is built from (``read_run_records``' files)."""
    parser.add_argument(
        "--metrics",
        required=True,
        metavar="JSON",
        help="`reidpipe evaluate`'s metrics of the model (the model card's)",
    )
    parser.add_argument(
        "--verification",
        metavar="JSON",
        help="`reidpipe evaluate`'s verification figures: the recommended "
        "threshold (FAR 1e-3) of the card and the README; without it the "
        "card says none was measured",
    )
    parser.add_argument(
        "--train-config",
        required=True,
        metavar="YAML",
        help="the config `reidpipe train` wrote beside the model (architecture, "
        "pretrained weights, environment)",
    )
    add_folder_arguments(
        parser,
        splits="split manifests of the test set (`reidpipe split`): fingerprinted",
        train_set="the training set (`reidpipe combine`): each source's split "
        "manifests are fingerprinted",
    )
    parser.add_argument(
        "--validation",
        required=True,
        metavar="JSON",
        help="`reidpipe validate`'s report of the dataset",
    )


def run(args: argparse.Namespace) -> int:
    from reidpipe.deploy.model_card import read_run_records
    from reidpipe.deploy.package import package_stage

    params = params_from_args(args)  # first: a missing params file is the first thing said
    run_records = read_run_records(
        args.metrics,
        args.train_config,
        args.splits,
        args.train_set,
        args.validation,
        args.verification,
    )
    manifest = package_stage(params, args.arch, args.onnx_dir, args.trt_dir, args.out, run_records)
    log.info(
        "%s: Triton %s (%s), DeepStream %s%s",
        args.out,
        manifest["triton"]["platform"],
        manifest["triton"]["model_file"],
        manifest["deepstream"]["onnx"],
        " (channel scale folded in)" if manifest["deepstream"]["folded_channel_scale"] else "",
    )
    return 0
