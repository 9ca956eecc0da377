"""``reidpipe convert-weights IN --out OUT.safetensors --trust``: the state dict of a weights file
that reidpipe refuses to unpickle, written as safetensors on the user's word."""

from __future__ import annotations

import argparse
from pathlib import Path

from reidpipe.errors import ReidpipeError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "convert-weights",
        help="unpickle a trusted weights file in full and write its tensors as safetensors",
    )
    parser.add_argument("input", metavar="IN", help="a .pth/.pt/.ckpt/.tlt weights file")
    parser.add_argument(
        "--out",
        required=True,
        metavar="OUT.safetensors",
        help="safetensors file to write (give it as model.pretrained_model_path)",
    )
    parser.add_argument(
        "--trust",
        action="store_true",
        help="required: you trust IN, since a full unpickle runs any code it holds",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.trust:
        raise ReidpipeError(
            f"refusing to unpickle {args.input} in full without --trust: that runs any code the "
            "file holds; pass --trust only for a file whose source you trust"
        )
    from reidpipe.training.pretrained import convert_trusted

    convert_trusted(Path(args.input), Path(args.out))
    return 0
