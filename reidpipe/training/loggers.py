"""The Lightning loggers of a training run: DVCLive always, TensorBoard when ``train.loggers``
asks for it. Each gets one row per epoch from ``EpochLog`` (step = epoch; 0 is the untrained
model), written live into its folder under ``live_dir``; ``train.py`` moves the folders into the
model folder once training finished.

DVCLive runs inside a DVC or Snakemake stage here, so it only writes files: its repository side
(finding the DVC repository, running ``dvc init`` in a git checkout without one, saving an
experiment, git-adding its folder, posting to DVC Studio) is left out, and so are its
``dvc.yaml``, report and system monitor. The stage's outputs in the stage table declare its files
as DVC metrics and plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dvclive import Live
from dvclive.lightning import DVCLiveLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from reidpipe.filenames import DVCLIVE_DIR, TENSORBOARD_DIR


class StageLive(Live):
    """DVCLive's ``Live`` writing its folder and nothing else (see the module docstring)."""

    def _init_dvc(self) -> None:
        self._dvc_file = ""  # read only when a dvc.yaml is written, which dvcyaml=None rules out

    def _init_studio(self) -> None:
        self._studio_events_to_skip.update(("start", "data", "done"))


class EpochDVCLiveLogger(DVCLiveLogger):
    """DVCLive's Lightning logger on a ``StageLive``, taking each ``step`` as given (its own
    reads a step of 0 as none given and would log the untrained model at step 1)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(
            run_name=None,
            dir=str(folder),
            resume=False,
            report=None,
            save_dvc_exp=False,
            dvcyaml=None,
            monitor_system=False,
        )

    @property
    @rank_zero_experiment
    def experiment(self) -> Live:
        if self._experiment is None:
            self._experiment = StageLive(**self._kwargs)
        return self._experiment

    @rank_zero_only
    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, sync: bool | None = True
    ) -> None:
        self.experiment.step = step or 0
        for name, value in metrics.items():
            self.experiment.log_metric(name, value)
        if sync:
            self.experiment.sync()


def logger_dirs(names: Sequence[str]) -> list[str]:
    """The folder of each logger a run with ``train.loggers = names`` writes."""
    return [DVCLIVE_DIR] + ([TENSORBOARD_DIR] if "tensorboard" in names else [])


def make_loggers(names: Sequence[str], live_dir: Path) -> list[Logger]:
    """The loggers, each writing into ``live_dir / <its folder>``."""
    loggers: list[Logger] = [EpochDVCLiveLogger(live_dir / DVCLIVE_DIR)]
    if "tensorboard" in names:
        # version "": no run number in the path, nor in the progress bar
        loggers.append(
            TensorBoardLogger(live_dir, name=TENSORBOARD_DIR, version="", default_hp_metric=False)
        )
    return loggers
