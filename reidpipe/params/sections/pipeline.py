"""``pipeline``: what the pipeline runs (architectures, test sets, seeds, CPU kernels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reidpipe.params.sections.setting import setting


@dataclass
class PipelineParams:
    archs: list[str] = setting(
        ["resnet50", "swin_tiny"], doc="architectures to train (keys of archs)"
    )
    eval_sources: list[str] = setting(
        [],
        doc="test sets every arch is evaluated on (data.source or keys of data.sources); "
        "[]: the training sources",
    )
    cpu_isa: Literal["native", "avx2"] = setting(
        "native",
        doc="CPU kernels of train, extract and export: native (the fastest this CPU "
        "has) or avx2 (x86-64 CPUs compute as an AVX2 one does, so AVX2 and AVX-512 "
        "machines give the same bits)",
    )
    seeds: list[int] = setting(
        [],
        doc="seed spread: each arch is also trained, extracted and "
        "evaluated once per train.seed listed here ([]: not)",
    )
