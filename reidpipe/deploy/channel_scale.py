"""ONNX surgery for DeepStream's single netScaleFactor: a copy of the graph whose input is first
multiplied per channel by its own scale, with the input contract in its metadata rewritten to
match (0-255 pixels minus ``255 * mean``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from reidpipe.input_contract import META_PREFIX, Preprocess, contract_metadata

FOLD_SCALE_NAME = "deepstream_channel_scale"


def folded_contract(pre: Preprocess) -> Preprocess:
    """The contract of a graph with the channel scale folded in: 0-255 pixels minus 255 * mean."""
    return Preprocess(
        height=pre.height,
        width=pre.width,
        mean=pre.mean,
        std=(1.0, 1.0, 1.0),
        channel_order=pre.channel_order,
        input_scale=255,
    )


def fold_channel_scale(
    model: onnx.ModelProto, scale: Sequence[float], pre: Preprocess
) -> onnx.ModelProto:
    """A copy of ``model`` whose input is first multiplied per channel by ``scale`` (network
    channel order), with the contract metadata rewritten to match."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    source = graph.input[0].name
    scaled = f"{source}_{FOLD_SCALE_NAME}"
    for node in graph.node:
        node.input[:] = [scaled if name == source else name for name in node.input]
    graph.initializer.append(
        numpy_helper.from_array(
            np.asarray(scale, dtype=np.float32).reshape(1, -1, 1, 1), FOLD_SCALE_NAME
        )
    )
    graph.node.insert(
        0, helper.make_node("Mul", [source, FOLD_SCALE_NAME], [scaled], name=FOLD_SCALE_NAME)
    )
    meta = {p.key: p.value for p in folded.metadata_props}
    meta.update(
        contract_metadata(
            folded_contract(pre),
            meta.get(f"{META_PREFIX}arch", ""),
            int(meta.get(f"{META_PREFIX}embedding_dim", "0")),
        )
    )
    meta[f"{META_PREFIX}folded_channel_scale"] = json.dumps(list(scale))
    del folded.metadata_props[:]
    for key, value in meta.items():
        folded.metadata_props.add(key=key, value=value)
    return folded
