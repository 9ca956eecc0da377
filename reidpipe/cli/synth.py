"""``reidpipe synth --out DIR [--layout NAME]``: generate a synthetic dataset in a dataset's
layout."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import params_from_args
from reidpipe.data.sources import SYNTH_LAYOUTS

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("synth", parents=[common],
                                   help="generate a synthetic dataset in a dataset's layout")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="dataset folder to write (an existing dataset there is replaced)")
    parser.add_argument("--ids", type=int, metavar="N",
                        help="identities, train + test (default: data.synthetic_ids)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="random seed (default: data.synthetic_seed)")
    parser.add_argument("--layout", choices=SYNTH_LAYOUTS,
                        help="the dataset whose layout and file names to write (default: "
                             "data.synthetic_layout)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes (default: the CPUs this process may use)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.synth_layouts import generate_synthetic
    data = params_from_args(args).data
    summary = generate_synthetic(
        args.out,
        layout=data.synthetic_layout if args.layout is None else args.layout,
        num_ids=data.synthetic_ids if args.ids is None else args.ids,
        seed=data.synthetic_seed if args.seed is None else args.seed,
        workers=args.workers,
    )
    log.info(f"{summary.out_dir}: {summary.train_ids} train ids / {summary.train_images} images, "
             f"{summary.test_ids} test ids / {summary.query_images} queries / "
             f"{summary.gallery_images} gallery images ({summary.distractors} distractors, "
             f"{summary.junk} junk), seed {summary.seed}, {summary.seconds:.1f} s")
    return 0
