"""``reidpipe download [--url URL]... [--archive PATH] [--out DIR]``."""

from __future__ import annotations

import argparse

from reidpipe.cli import params_from_args


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "download", parents=[common],
        help="obtain the dataset: fetch Market-1501, or generate the synthetic one",
        description="With data.source market1501: fetch Market-1501-v15.09.15.zip (resuming "
                    "partial downloads), check its MD5 and extract it atomically; the archive is "
                    "kept next to the dataset folder. With data.source synthetic: generate the "
                    "synthetic Market-layout dataset (data.synthetic_ids, data.synthetic_seed).")
    parser.add_argument("--url", dest="urls", action="append", metavar="URL",
                        help="download from this URL instead of data.urls (repeatable)")
    parser.add_argument("--archive", metavar="PATH",
                        help="use this local zip instead of downloading (default: "
                             "data.archive_path)")
    parser.add_argument("--out", metavar="DIR",
                        help="dataset folder to create (default: data.dataset_dir)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from reidpipe.data.download import obtain_dataset
    params = params_from_args(args)
    result = obtain_dataset(params.data, urls=args.urls, archive=args.archive,
                           dataset_dir=args.out)
    state = "reused" if result.reused else "extracted"
    checksum = f", archive MD5 {result.md5}" if result.md5 else ""
    print(f"{result.dataset_dir}: {state} from {result.source}{checksum}")
    return 0
