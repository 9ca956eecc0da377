"""``re_ranking``, ``extract`` and ``evaluate``: embedding extraction and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reidpipe.params.sections.setting import setting


@dataclass
class ReRankingParams:
    re_ranking: bool = setting(True)
    k1: int = setting(20, ge=1)
    k2: int = setting(6, ge=1)
    lambda_value: float = setting(0.3, ge=0, le=1)


@dataclass
class ExtractParams:
    batch_size: int = setting(128, ge=1)
    channel_order: Literal["RGB", "BGR"] = setting("RGB", doc="channel order an ONNX model expects")
    input_scale: Literal[1, 255] = setting(1, doc="1: pixels in 0-1 before mean/std; 255: 0-255")
    tao_json: bool = setting(False, doc="also write TAO-format embedding JSON")


@dataclass
class EvaluateParams:
    distance: Literal["cosine", "euclidean"] = setting("cosine")
    ap_method: Literal["non_interpolated", "trapezoidal"] = setting(
        "non_interpolated", doc="trapezoidal = original Market-1501 MATLAB code"
    )
    max_rank: int = setting(50, ge=1)
    open_set_fraction: float = setting(
        0.1,
        ge=0,
        le=0.5,
        doc="share of the labelled query ids (at least one) held out for verification.json only "
        "(their gallery images dropped there) so that some queries have no match; 0: none "
        "held out, the open-set figures then come from the queries the gallery already lacks "
        "(often none: no-match accuracy is then null)",
    )
    open_set_seed: int = setting(0, ge=0, doc="seed of the held-out ids' choice")
