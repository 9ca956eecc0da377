"""``data`` (the main dataset source and further named ones) and ``split`` (the held-out
validation identities)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reidpipe.dataset_registry import DatasetSource, dataset_source
from reidpipe.params.sections.setting import setting

SourceName = Literal["market1501", "dukemtmc", "msmt17", "cuhk03", "custom", "synthetic"]
LayoutName = Literal["market1501", "dukemtmc", "msmt17", "cuhk03", "custom"]


@dataclass
class SourceParams:
    """One dataset source (reidpipe/dataset_registry.py knows each one's layout and statistics)."""

    source: Literal["", "market1501", "dukemtmc", "msmt17", "cuhk03", "custom", "synthetic"] = (
        setting("", doc="which dataset; '' (under data.sources): the entry's name")
    )
    dataset_dir: str = setting(
        "", doc="under data.sources: '' (the pipeline keeps further sources in data/<entry name>)"
    )
    urls: list[str] = setting(
        [],
        doc="mirrors tried in order; []: the source's known ones (only "
        "Market-1501 has public mirrors)",
    )
    archive_path: str = setting(
        "", doc="a local zip or dataset folder to use instead of downloading"
    )
    md5: str = setting(
        "",
        doc="expected archive MD5; '': the published one (Market-1501's); a "
        "source without one accepts any archive and records its MD5",
    )
    allow_unknown_checksum: bool = setting(
        False, doc="accept an archive whose MD5 differs (custom URL with another archive)"
    )
    max_extract_bytes: int = setting(20_000_000_000, gt=0, doc="refuse archives that unpack larger")
    strict: bool = setting(False, doc="validate also checks the dataset's official statistics")
    cuhk03_variant: Literal["labeled", "detected"] = setting(
        "labeled", doc="CUHK03-NP: the hand-drawn (labeled) or the detector's (detected) boxes"
    )
    split_dirs: dict[str, str] = setting(
        {},
        doc="custom only: folders of train, query and gallery (TAO's train, query and test "
        "dirs), relative to dataset_dir or absolute; missing: Market-1501's names",
    )
    synthetic_ids: int = setting(
        60, ge=4, le=9999, doc="identities of the synthetic dataset (train + test)"
    )
    synthetic_seed: int = setting(0, ge=0, doc="seed of the synthetic dataset")
    synthetic_layout: LayoutName = setting(
        "market1501", doc="layout the synthetic dataset is written in"
    )

    def dataset_source(self) -> DatasetSource:
        """The registry's source with this block's choices (layout, variant, folders)."""
        return dataset_source(
            self.source or "market1501",
            cuhk03_variant=self.cuhk03_variant,
            split_dirs=self.split_dirs,
            synthetic_layout=self.synthetic_layout,
        )


@dataclass
class DataParams(SourceParams):
    """The main source (``data.source``), further named sources and the training sources.

    The main source is always trained on and evaluated; further sources (``data.sources``) live
    in ``data/<name>`` and join through ``data.train_sources`` and ``pipeline.eval_sources``."""

    source: SourceName = setting(
        "market1501",
        doc="market1501, dukemtmc, msmt17, cuhk03 (archives); custom (a folder); "
        "synthetic (generated)",
    )
    dataset_dir: str = setting(
        "data/Market-1501-v15.09.15", doc="where the main dataset folder lives"
    )
    strict: bool = setting(
        True,
        doc="validate also checks the dataset's official statistics "
        "(false for a source without them: custom, synthetic)",
    )
    train_sources: list[str] = setting(
        [],
        doc="sources whose train splits are merged for training (data.source or keys of "
        "data.sources); []: [data.source]",
    )
    sources: dict[str, SourceParams] = setting(
        {},
        doc="further sources by name, each a source block, for data.train_sources and "
        "pipeline.eval_sources",
    )


@dataclass
class SplitParams:
    val_ids: int = setting(100, ge=0, doc="train identities held out for in-training validation")
    seed: int = setting(0, ge=0, doc="seed choosing the held-out identities")
