"""Typed, validated parameters: the dataclasses (``schema``), the generic validator
(``validation``), merging of files and overrides (``merge``), loading (``loading``) and the
generated JSON schema (``json_schema``). The names below are the package's public interface."""

from reidpipe.params.json_schema import json_schema
from reidpipe.params.loading import DEFAULT_PARAMS_FILE, load_params, merged_params_dict
from reidpipe.params.schema import (
                                    ArchConfig,
                                    ArchRecipe,
                                    DataParams,
                                    DatasetParams,
                                    DeployParams,
                                    EvaluateParams,
                                    ExportParams,
                                    ExtractParams,
                                    ModelParams,
                                    OptimParams,
                                    Params,
                                    PipelineParams,
                                    ReportParams,
                                    ReRankingParams,
                                    SourceParams,
                                    SplitParams,
                                    TrainParams,
                                    params_from_dict,
                                    params_to_dict,
)

__all__ = ["ArchConfig", "ArchRecipe", "DEFAULT_PARAMS_FILE", "DataParams", "DatasetParams",
           "DeployParams", "EvaluateParams", "ExportParams", "ExtractParams", "ModelParams",
           "OptimParams", "Params", "PipelineParams", "ReRankingParams", "ReportParams",
           "SourceParams", "SplitParams", "TrainParams", "json_schema", "load_params",
           "merged_params_dict", "params_from_dict", "params_to_dict"]
