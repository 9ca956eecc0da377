"""The columns of ``train_log.csv``: training writes one row per epoch, the report reads it."""

from __future__ import annotations

# The mean of each loss term over the epoch's steps ("loss": their weighted sum)
LOSS_COLUMNS = ("loss", "id_loss", "triplet_loss", "center_loss")
# The held-out identities' retrieval figures (NaN in an epoch that did not validate)
VALIDATION_COLUMNS = ("val_mAP", "val_rank1")
# What an epoch's log line shows
SHOWN_COLUMNS = (*LOSS_COLUMNS, "lr", *VALIDATION_COLUMNS)
# Every column, in order; "steps" and "seconds" describe the run, not the model
COLUMNS = ("epoch", "steps", *SHOWN_COLUMNS, "seconds")
