"""``report``: what the report shows."""

from __future__ import annotations

from dataclasses import dataclass

from reidpipe.params.sections.setting import setting


@dataclass
class ReportParams:
    sampled_queries: int = setting(8, ge=1)
    top_k: int = setting(10, ge=1)
    hardest_queries: int = setting(10, ge=1)
    attention_maps: bool = setting(
        True,
        doc="Grad-CAM maps of the sampled and hardest queries and their ranked gallery images "
        "(needs each arch's trained model)",
    )
