"""Typed, validated parameters: one dataclass module per section (``sections``) assembled into
``Params`` (``schema``), the generic validator (``validation``), the cross-section rules
(``checks``), merging of files and overrides (``merge``), loading (``loading``) and the
generated JSON schema (``json_schema``). The names below are the package's public interface."""

from reidpipe.params.json_schema import json_schema
from reidpipe.params.loading import (
    DEFAULT_PARAMS_FILE,
    load_params,
    merged_params_dict,
    params_from_dict,
)
from reidpipe.params.schema import Params, params_to_dict
from reidpipe.params.sections.archs import ArchConfig, ArchRecipe
from reidpipe.params.sections.data import DataParams, SourceParams, SplitParams
from reidpipe.params.sections.deploy import DeployParams
from reidpipe.params.sections.evaluation import EvaluateParams, ExtractParams, ReRankingParams
from reidpipe.params.sections.export import ExportParams
from reidpipe.params.sections.model import ModelParams
from reidpipe.params.sections.pipeline import PipelineParams
from reidpipe.params.sections.report import ReportParams
from reidpipe.params.sections.train import DatasetParams, OptimParams, TrainParams

__all__ = [
    "ArchConfig",
    "ArchRecipe",
    "DEFAULT_PARAMS_FILE",
    "DataParams",
    "DatasetParams",
    "DeployParams",
    "EvaluateParams",
    "ExportParams",
    "ExtractParams",
    "ModelParams",
    "OptimParams",
    "Params",
    "PipelineParams",
    "ReRankingParams",
    "ReportParams",
    "SourceParams",
    "SplitParams",
    "TrainParams",
    "json_schema",
    "load_params",
    "merged_params_dict",
    "params_from_dict",
    "params_to_dict",
]
