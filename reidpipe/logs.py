"""One message format for every stage: ``reidpipe <stage>: [warning: ]message`` on stderr."""

from __future__ import annotations

import logging


class _StageFormatter(logging.Formatter):
    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"reidpipe {self.stage}: {level}{record.getMessage()}"


def configure(stage: str, level: int = logging.INFO) -> None:
    """Route the ``reidpipe`` loggers to stderr in the stage format (once per process)."""
    handler = logging.StreamHandler()  # standard error
    handler.setFormatter(_StageFormatter(stage))
    logger = logging.getLogger("reidpipe")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
