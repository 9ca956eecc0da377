"""``reidpipe download [--source NAME] [--url URL]... [--archive PATH] [--out DIR]``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import add_param_flag, add_source_argument, params_from_args, source_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "download",
        parents=[common],
        help="obtain a dataset: fetch its archive, or generate the synthetic one",
        description="Datasets with an archive (market1501, dukemtmc, msmt17, cuhk03): take "
        "--archive (a zip or a dataset folder), the kept archive next to the dataset "
        "folder, or download it from the mirrors (resuming partial downloads); check "
        "its MD5 and extract it atomically. custom: use the folder where it lies. "
        "synthetic: generate it (data.synthetic_layout, _ids, _seed).",
    )
    add_param_flag(
        parser,
        "--url",
        key="data.urls",
        per_source=True,
        dest="urls",
        action="append",
        metavar="URL",
        help="download from this URL, mirrors tried in order (repeatable)",
    )
    add_param_flag(
        parser,
        "--archive",
        key="data.archive_path",
        per_source=True,
        metavar="PATH",
        help="use this local zip or dataset folder instead of downloading",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="dataset folder to create (default: data.dataset_dir)"
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="also write there what was fetched or found, and where (the "
        "workflows' output of this stage: the dataset folder never is one)",
    )
    add_source_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe import atomic
    from reidpipe.data.download import is_held, obtain_dataset

    params = params_from_args(args)
    data = source_from_args(args, params)
    held = is_held(data, args.out)
    # --url/--archive are in the block already; given again, a synthetic source refuses them
    # (while it ignores the data.urls a params file may keep).
    result = obtain_dataset(data, urls=args.urls, archive=args.archive, dataset_dir=args.out)
    state = "reused" if result.reused else "extracted"
    checksum = f", archive MD5 {result.md5}" if result.md5 else ""
    log.info(f"{result.dataset_dir}: {state} from {result.source}{checksum}")
    if args.record:
        atomic.write_json(
            args.record,
            {
                "source": data.source,
                "dataset_dir": str(result.dataset_dir),
                "held": held,
                "origin": result.source,
                "archive_md5": result.md5,
                "reused": result.reused,
            },
        )
    return 0
