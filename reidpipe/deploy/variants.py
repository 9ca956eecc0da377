"""One model file of the export folder (the FP32, FP16 or INT8 ONNX): how it is built, and the
gate it must pass against its reference before the folder keeps it.

``export_onnx`` runs :func:`build_and_gate` on each variant in turn. A variant's reference is
PyTorch (``torch``) or a variant built before it; each forward's retrieval embeddings are
extracted once (:class:`Bench`), so the INT8 gate reuses those of the FP32 gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reidpipe.deploy.onnx_io import check_onnx, model_files
from reidpipe.deploy.parity import batch_parity, retrieval_parity
from reidpipe.evaluation.embeddings import Embeddings
from reidpipe.evaluation.extract import extract_embeddings
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.input_contract import Forward, Preprocess
from reidpipe.params import EvaluateParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    """One threshold of a gate. ``field`` names what is measured (a batch-parity column, or
    ``delta_points`` for the retrieval metrics): a ``min_*`` value must reach ``value``, any
    other must not exceed it, and NaN (an FP16 overflow) misses both. ``key`` is the params key
    that sets ``value``; ``miss`` words a miss, formatted with the measured row (or ``metric``,
    ``delta``, ``reference``, ``candidate`` in points), ``key`` and ``limit``."""

    field: str
    key: str
    value: float
    miss: str

    def holds(self, measured: float) -> bool:
        if self.field.startswith("min_"):
            return measured >= self.value
        return measured <= self.value

    def worded(self, **measured: Any) -> str:
        return self.miss.format(key=self.key, limit=self.value, **measured)


@dataclass(frozen=True)
class Gate:
    """What a variant must meet against its reference: ``rows`` at every parity batch size, and
    ``metric_delta`` on each retrieval metric (None: batch parity only), whose two embedding sets
    the report names ``names`` (reference, candidate). ``record`` is how the report states the
    gate; a failure reads ``title: <misses>`` (only the first when ``first_miss_only``)."""

    title: str
    record: dict[str, Any]
    rows: tuple[Limit, ...]
    metric_delta: Limit | None = None
    names: tuple[str, str] = ("reference", "candidate")
    first_miss_only: bool = False

    def failure(self, misses: list[str]) -> str:
        return f"{self.title}: " + "; ".join(misses[:1] if self.first_miss_only else misses)


# Writes the variant's file into the folder given; returns the files written and facts for the
# report (the FP32 export's duration).
Build = Callable[[Path], tuple[list[Path], dict[str, Any]]]


@dataclass(frozen=True)
class Variant:
    """A model file of the export folder. ``name`` is its key in the report and its latency;
    ``about`` is what the report says of it whatever the outcome; ``reference`` is ``torch`` or
    an earlier variant's name. A ``required`` variant that fails to build or misses its gate
    fails the stage; an optional one is left out, its report entry saying why (``status``,
    ``reason``, starting with ``build_failed`` when the build raised)."""

    name: str
    file: str
    build: Build
    about: dict[str, Any]
    gate: Gate
    reference: str
    required: bool = True
    build_failed: str = "build failed"


@dataclass
class Bench:
    """What every gate measures on (the query images, cut to each parity batch size; the query
    and gallery sets for retrieval) and the forwards and embeddings so far, by variant name."""

    pre: Preprocess
    images: np.ndarray
    batch_sizes: Sequence[int]
    sets: dict[str, pd.DataFrame]
    evaluate: EvaluateParams
    batch_size: int
    flip: bool
    device: str
    forwards: dict[str, Forward]
    embeddings: dict[str, Embeddings] = field(default_factory=dict)

    def embed(self, name: str) -> Embeddings:
        """The query/gallery embeddings of ``name``'s forward, extracted once."""
        if name not in self.embeddings:
            self.embeddings[name] = extract_embeddings(
                self.forwards[name], self.sets, self.pre, self.batch_size, self.flip
            )
        return self.embeddings[name]


def measure(
    gate: Gate, reference: str, candidate: str, bench: Bench
) -> tuple[dict[str, Any], list[str]]:
    """Measure ``candidate`` against ``reference`` as ``gate`` asks (batch parity; retrieval
    when it has a metric limit); returns the measurements for the report and the misses,
    worded."""
    rows = batch_parity(
        bench.forwards[reference], bench.forwards[candidate], bench.images, bench.batch_sizes
    )
    misses = [
        limit.worded(**row)
        for row in rows
        for limit in gate.rows
        if not limit.holds(row[limit.field])
    ]
    if gate.metric_delta is None:
        return {"batch_parity": rows}, misses
    ref, cand = gate.names
    retrieval = retrieval_parity(
        {ref: bench.embed(reference), cand: bench.embed(candidate)}, bench.evaluate, bench.flip
    )
    limit = gate.metric_delta
    misses += [
        limit.worded(
            metric=metric,
            delta=delta,
            reference=100 * retrieval[ref][metric],
            candidate=100 * retrieval[cand][metric],
        )
        for metric, delta in retrieval[limit.field].items()
        if not limit.holds(delta)
    ]
    return {"batch_parity": rows, "retrieval": retrieval}, misses


def build_and_gate(
    variant: Variant, folder: Path, bench: Bench
) -> tuple[dict[str, Any], list[Path], str | None]:
    """Build ``variant`` into ``folder`` (checked by ``check_onnx``, opened in ONNX Runtime) and
    gate it; returns its report entry, the files kept, and the failure that fails the stage
    (None unless a required variant missed its gate). An optional variant whose build or gate
    fails is removed from ``folder`` and kept out of ``bench``."""
    target = folder / variant.file
    try:
        files, facts = variant.build(folder)
        check_onnx(target)
        forward, _ = onnx_forward(target, bench.pre, bench.device)
    except Exception as exc:  # onnxruntime's quantizer raises untyped errors; INT8 stays optional
        if variant.required:
            raise
        _remove(target)
        reason = f"{variant.build_failed}: {type(exc).__name__}: {exc}"
        log.warning("%s %s", variant.name.upper(), reason)
        entry = {**variant.about, **variant.gate.record}
        return {**entry, "status": "failed", "reason": reason}, [], None
    bench.forwards[variant.name] = forward
    measured, misses = measure(variant.gate, variant.reference, variant.name, bench)
    entry = {**variant.about, **facts, **variant.gate.record, **measured}
    if variant.required:
        return entry, files, variant.gate.failure(misses) if misses else None
    if misses:
        _remove(target)
        del bench.forwards[variant.name]
        reason = variant.gate.failure(misses)
        log.warning("%s; no %s written", reason, variant.file)
        return {**entry, "status": "failed", "reason": reason}, [], None
    return {**entry, "status": "passed", "reason": None}, files, None


def _remove(path: Path) -> None:
    for file in model_files(path):
        file.unlink(missing_ok=True)
