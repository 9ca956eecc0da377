"""``reidpipe evaluate --embeddings DIR --out metrics.json [--cmc CSV] [--per-query CSV]
[--verification JSON]``."""

from __future__ import annotations

import argparse
import logging

from reidpipe.cli import params_from_args

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "evaluate", parents=[common], help="CMC/mAP/mINP, plain and k-reciprocal re-ranked"
    )
    parser.add_argument(
        "--embeddings", required=True, metavar="DIR", help="embeddings folder (reidpipe extract)"
    )
    parser.add_argument("--out", required=True, metavar="JSON", help="metrics file to write")
    parser.add_argument("--cmc", metavar="CSV", help="CMC curve (rank,plain[,reranked])")
    parser.add_argument("--per-query", metavar="CSV", help="per-query AP, first hit and top-k")
    parser.add_argument(
        "--verification",
        metavar="JSON",
        help="open-set verification figures: genuine/impostor distance "
        "histograms, TAR and threshold at each FAR, no-match accuracy "
        "(evaluate.open_set_fraction of the query ids held out)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu or cuda; re-ranking runs there, and "
        "a GPU is taken through the device locks like extract's",
    )
    parser.set_defaults(run=run, single_gpu=True)


def run(args: argparse.Namespace) -> int:
    from reidpipe.evaluation.embeddings import read_embeddings
    from reidpipe.evaluation.evaluate import evaluate_embeddings, write_evaluation
    from reidpipe.evaluation.verification import open_set_verification

    params = params_from_args(args)
    embeddings = read_embeddings(args.embeddings)
    result = evaluate_embeddings(
        embeddings,
        params.evaluate,
        params.re_ranking,
        top_k=params.report.top_k,
        device=args.device,
    )
    if args.verification:
        result.verification = open_set_verification(embeddings, params.evaluate, args.device)
    write_evaluation(result, args.out, args.cmc, args.per_query, args.verification)
    for name, block in result.metrics.items():
        log.info(
            f"{name}: mAP {block['mAP']:.4f}  mINP {block['mINP']:.4f}  "
            f"rank-1 {block['rank1']:.4f}  ({block['num_queries']} queries, "
            f"{block['num_skipped']} skipped)"
        )
    for point in (result.verification or {}).get("operating_points", []):
        log.info(
            f"verification at FAR {point['far']:g}: threshold {point['threshold']}, "
            f"TAR {point['tar']}, no-match accuracy {point['no_match_accuracy']}"
        )
    return 0
