"""``reidpipe download [--url URL]... [--archive PATH] [--out DIR]``."""

from __future__ import annotations

import argparse

from reidpipe.cli import params_from_args
from reidpipe.download import fetch_dataset


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "download", parents=[common],
        help="fetch, verify (MD5) and extract the Market-1501 archive",
        description="Fetch Market-1501-v15.09.15.zip (resuming partial downloads), check its MD5 "
                    "and extract it atomically. The archive is kept next to the dataset folder.")
    parser.add_argument("--url", dest="urls", action="append", metavar="URL",
                        help="download from this URL instead of data.urls (repeatable)")
    parser.add_argument("--archive", metavar="PATH",
                        help="use this local zip instead of downloading (default: "
                             "data.archive_path)")
    parser.add_argument("--out", metavar="DIR",
                        help="dataset folder to create (default: data.dataset_dir)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    result = fetch_dataset(params.data, urls=args.urls, archive=args.archive,
                           dataset_dir=args.out)
    state = "reused" if result.reused else "extracted"
    print(f"{result.dataset_dir}: {state} (archive MD5 {result.md5}, from {result.source})")
    return 0
