"""``reidpipe synth --out DIR [--layout NAME]``: generate a synthetic dataset in a dataset's
layout. Needs no params file: the built-in defaults, the files ``--params`` names, ``--set`` and
the flags."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import add_param_flag, params_from_args
from reidpipe.dataset_registry import SYNTH_LAYOUTS

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "synth", parents=[common], help="generate a synthetic dataset in a dataset's layout"
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="dataset folder to write (an existing dataset there is replaced)",
    )
    add_param_flag(
        parser,
        "--ids",
        key="data.synthetic_ids",
        type=int,
        metavar="N",
        help="identities, train + test",
    )
    add_param_flag(
        parser, "--seed", key="data.synthetic_seed", type=int, metavar="S", help="random seed"
    )
    add_param_flag(
        parser,
        "--layout",
        key="data.synthetic_layout",
        choices=SYNTH_LAYOUTS,
        help="the dataset whose layout and file names to write",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: the CPUs this process may use)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.synth_layouts import generate_synthetic

    data = params_from_args(args, needs_file=False).data
    summary = generate_synthetic(
        args.out,
        layout=data.synthetic_layout,
        num_ids=data.synthetic_ids,
        seed=data.synthetic_seed,
        workers=args.workers,
    )
    log.info(
        f"{summary.out_dir}: {summary.train_ids} train ids / {summary.train_images} images, "
        f"{summary.test_ids} test ids / {summary.query_images} queries / "
        f"{summary.gallery_images} gallery images ({summary.distractors} distractors, "
        f"{summary.junk} junk), seed {summary.seed}, {summary.seconds:.1f} s"
    )
    return 0
