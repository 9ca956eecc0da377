"""``reidpipe extract [--arch NAME] (--model DIR | --onnx FILE) (--splits DIR | --dataset DIR)
--out DIR``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from reidpipe.cli import add_source_argument, params_from_args, source_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "extract", parents=[common], help="write query/gallery embeddings of a model"
    )
    parser.add_argument(
        "--arch",
        metavar="NAME",
        help="architecture whose model/dataset params apply (keys of archs); "
        "without it the model's own input contract applies (ONNX metadata, "
        "trained config), else the shared model.*/dataset.* params",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="trained model folder (reidpipe train)")
    source.add_argument("--onnx", metavar="FILE", help="any ONNX re-identification model")
    images = parser.add_mutually_exclusive_group(required=True)
    images.add_argument("--splits", metavar="DIR", help="split manifests (query.csv, gallery.csv)")
    images.add_argument(
        "--dataset", metavar="DIR", help="a dataset folder in its source's layout (see --source)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="embeddings folder to write")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    add_source_argument(parser)
    parser.set_defaults(run=run, single_gpu=True)


def run(args: argparse.Namespace) -> int:
    from reidpipe.evaluation.embeddings import write_embeddings
    from reidpipe.evaluation.extract import (
        TrainedModel,
        extract_embeddings,
        image_sets_from_dataset,
        image_sets_from_splits,
        model_forward,
    )
    from reidpipe.params import ArchConfig

    params = params_from_args(args)
    arch = (
        params.arch(args.arch)
        if args.arch
        else ArchConfig(
            name="shared", model=params.model, dataset=params.dataset, train=params.train
        )
    )
    sets = (
        image_sets_from_splits(args.splits)
        if args.splits
        else image_sets_from_dataset(args.dataset, source_from_args(args, params).dataset_source())
    )
    trained = None
    if args.model:  # an ONNX model needs no torch model code
        from reidpipe.training.model import load_trained_model

        trained = TrainedModel(args.model, *load_trained_model(Path(args.model)))
    forward, pre, batch_size = model_forward(
        trained, args.onnx, arch, params.extract, args.device, model_decides=args.arch is None
    )
    embeddings = extract_embeddings(
        forward,
        sets,
        pre,
        batch_size,
        flip=arch.model.with_flip_feature,
        workers=max(1, arch.dataset.num_workers),
    )
    write_embeddings(args.out, embeddings, tao_json=params.extract.tao_json)
    log.info(
        f"{args.out}: query {embeddings.query.features.shape}, "
        f"gallery {embeddings.gallery.features.shape}"
    )
    return 0
