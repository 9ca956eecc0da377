"""Typed parameters: one schema for ``params.yaml``, Snakemake's config and DVC.

Keys follow TAO's ReIdentificationNet spec where it has one (``model``, ``dataset``, ``train``,
``train.optim``, ``re_ranking``). ``model``/``dataset``/``train`` hold the values shared by every
architecture; ``archs.<name>`` holds each architecture's own recipe as a partial override of those
three sections, and ``pipeline.archs`` lists the architectures the pipeline trains. So
``model.feat_dim`` applies to every arch unless a recipe sets it.

Each section is a dataclass in ``reidpipe/params/sections/``; this module assembles them into
``Params`` and answers the questions that span sections (one arch's effective settings, one
source's block). Validation is generic over the dataclasses: types come from the annotations,
allowed values and ranges from each field's metadata; the rules that relate keys of several
sections live in ``reidpipe/params/checks.py``. The JSON schema in ``workflow/schemas/`` is
generated from the same classes (``reidpipe params --schema``), so the two cannot drift.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from reidpipe.errors import ReidpipeError
from reidpipe.filenames import DATA_DIR
from reidpipe.params.sections.archs import PUBLISHED_RECIPES, ArchConfig, ArchRecipe, arch_config
from reidpipe.params.sections.data import DataParams, SourceParams, SplitParams
from reidpipe.params.sections.deploy import DeployParams
from reidpipe.params.sections.evaluation import EvaluateParams, ExtractParams, ReRankingParams
from reidpipe.params.sections.export import ExportParams
from reidpipe.params.sections.model import ModelParams
from reidpipe.params.sections.pipeline import PipelineParams
from reidpipe.params.sections.report import ReportParams
from reidpipe.params.sections.train import DatasetParams, TrainParams
from reidpipe.params.validation import build_dataclass


@dataclass
class Params:
    pipeline: PipelineParams = field(default_factory=PipelineParams)
    data: DataParams = field(default_factory=DataParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    dataset: DatasetParams = field(default_factory=DatasetParams)
    train: TrainParams = field(default_factory=TrainParams)
    archs: dict[str, ArchRecipe] = field(default_factory=lambda: copy.deepcopy(PUBLISHED_RECIPES))
    re_ranking: ReRankingParams = field(default_factory=ReRankingParams)
    extract: ExtractParams = field(default_factory=ExtractParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)
    deploy: DeployParams = field(default_factory=DeployParams)
    report: ReportParams = field(default_factory=ReportParams)

    def recipe(self, name: str) -> ArchRecipe:
        """``archs.<name>``; an unknown name fails naming the defined ones."""
        if name not in self.archs:
            raise ReidpipeError(
                f"params: unknown architecture {name!r}; defined under 'archs': {sorted(self.archs)}"
            )
        return self.archs[name]

    def arch(self, name: str) -> ArchConfig:
        """The effective model/dataset/train of one architecture: shared values + its recipe."""
        return arch_config(name, self.recipe(name), self.model, self.dataset, self.train)

    def export_for(self, name: str) -> ExportParams:
        """The export settings of one architecture: ``export`` + ``archs.<name>.export``."""
        return build_dataclass(
            ExportParams,
            {**dataclasses.asdict(self.export), **self.recipe(name).export},
            f"archs.{name}.export",
        )

    def source_names(self) -> list[str]:
        return [self.data.source, *self.data.sources]

    def source(self, name: str) -> SourceParams:
        """One source's block, with its kind and dataset folder filled in."""
        if name == self.data.source:
            block = SourceParams(
                **{f.name: getattr(self.data, f.name) for f in dataclasses.fields(SourceParams)}
            )
        elif name in self.data.sources:
            block = dataclasses.replace(self.data.sources[name])
            block.source = block.source or name  # type: ignore[assignment]
        else:
            raise ReidpipeError(
                f"params: unknown source {name!r}; sources are data.source "
                f"({self.data.source!r}) and the keys of data.sources "
                f"({sorted(self.data.sources)})"
            )
        if name != self.data.source:
            block.dataset_dir = f"{DATA_DIR}/{name}"
        return block

    def train_sources(self) -> list[str]:
        return list(self.data.train_sources) or [self.data.source]

    def eval_sources(self) -> list[str]:
        return list(self.pipeline.eval_sources) or self.train_sources()

    def extra_sources(self) -> list[str]:
        """The sources besides data.source that the pipeline trains or evaluates on."""
        both = dict.fromkeys(self.train_sources() + self.eval_sources())
        return [name for name in both if name != self.data.source]

    def extra_train_sources(self) -> list[str]:
        return [name for name in self.train_sources() if name != self.data.source]

    def spread_seeds(self) -> list[str]:
        """The seeds of the seed-spread runs (pipeline.seeds), each once."""
        return [str(seed) for seed in dict.fromkeys(self.pipeline.seeds)]

    def cross_sources(self) -> list[str]:
        """The test sets besides data.source's (cross-domain evaluation)."""
        return [name for name in self.eval_sources() if name != self.data.source]


def params_to_dict(params: Params) -> dict[str, Any]:
    return dataclasses.asdict(params)
