"""``reidpipe package --arch NAME --onnx-dir DIR --trt-dir DIR --out DIR``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import params_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "package", parents=[common],
        help="write the deployment package: Triton model repository, DeepStream ReID section")
    parser.add_argument("--arch", required=True, metavar="NAME",
                        help="architecture name (keys of archs)")
    parser.add_argument("--onnx-dir", required=True, metavar="DIR",
                        help="folder written by `reidpipe export-onnx`")
    parser.add_argument("--trt-dir", required=True, metavar="DIR",
                        help="folder written by `reidpipe build-trt` (its engine, when built, "
                             "becomes Triton's model.plan)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder to write: triton/, deepstream/, README.md, package.json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.deploy.package import package_stage

    manifest = package_stage(params_from_args(args), args.arch, args.onnx_dir, args.trt_dir,
                             args.out)
    log.info("%s: Triton %s (%s), DeepStream %s%s", args.out, manifest["triton"]["platform"],
             manifest["triton"]["model_file"], manifest["deepstream"]["onnx"],
             " (channel scale folded in)" if manifest["deepstream"]["folded_channel_scale"]
             else "")
    return 0
