"""The argument list of a ``reidpipe evaluate`` run on CPU, as the tests give it to ``main``."""

from pathlib import Path

from reidpipe.filenames import CMC_FILE, METRICS_FILE, PER_QUERY_FILE, VERIFICATION_FILE


def evaluate_argv(
    params: Path, embeddings: Path, out: Path, *more: str, verification: bool = False
) -> list[str]:
    """Evaluate ``embeddings`` into ``out``'s metrics.json, cmc.csv and per_query.csv (and
    verification.json with ``verification``); ``more``: further arguments (``--set``)."""
    figures = ["--verification", str(out / VERIFICATION_FILE)] if verification else []
    return [
        "evaluate",
        "--params",
        str(params),
        "--embeddings",
        str(embeddings),
        "--out",
        str(out / METRICS_FILE),
        "--cmc",
        str(out / CMC_FILE),
        "--per-query",
        str(out / PER_QUERY_FILE),
        *figures,
        "--device",
        "cpu",
        *more,
    ]
