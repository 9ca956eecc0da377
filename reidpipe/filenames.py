"""Names of the folders and files that stages write and read: one constant each.

The stage table (``reidpipe/stages/table.py``) builds every output path from these; the stage that
writes a file, the stages that read it and the report use the same constant. They live apart
from the table so that the stage code does not import the table: a stage's code dependencies are
its imports, and adding a stage to the table must not rerun every other stage.
"""

from __future__ import annotations

RESULTS_DIR = "results"
MODELS_DIR = "models"
REPORTS_DIR = "reports"
DATA_DIR = "data"  # data/<name>: the dataset of each further source (data.sources)
# beside params.yaml: the validated values each job reads (tracked_params; DVC's params),
# outside results/, which the report and the seed spread read whole
TRACKED_PARAMS_FILE = "params.tracked.json"
# inside every folder a stage writes: only such a folder (or an empty one) is ever replaced
OUTPUT_MARKER_FILE = ".reidpipe-output"

# results/
VALIDATION_FILE = "validation.json"
DOWNLOAD_FILE = "download.json"  # what download fetched or found, and where (the dataset is not)
SPLITS_DIR = "splits"
TRAIN_SET_DIR = "train_set"  # the training sources' train/val manifests, merged (combine)
SOURCES_DIR = "sources"  # results/sources/<name>/: validation.json and splits/ of each

# models/seeds/<arch>/seed<N>/ and results/seeds/<arch>/seed<N>/: the seed-spread runs
# (pipeline.seeds), laid out as models/<arch>/ and results/<arch>/
SEEDS_DIR = "seeds"

# results/<arch>/cross/<name>/: embeddings/, metrics.json, cmc.csv, per_query.csv on a further
# source's test set (cross-domain evaluation)
CROSS_DIR = "cross"

# models/<arch>/
MODEL_FILE = "model.pt"
TRAIN_CONFIG_FILE = "config.yaml"
TRAIN_LOG_FILE = "train_log.csv"
# the per-epoch curves of the Lightning loggers (train.loggers): DVCLive's folder (always), with
# DVCLive's own names inside: the last epoch's values (a DVC metric) and one .tsv per curve (DVC plots)
DVCLIVE_DIR = "dvclive"
DVCLIVE_METRICS_FILE = "metrics.json"
DVCLIVE_PLOTS_DIR = "plots/metrics"
TENSORBOARD_DIR = "tensorboard"  # event files, when train.loggers has tensorboard

# results/<arch>/
EMBEDDINGS_DIR = "embeddings"
METRICS_FILE = "metrics.json"  # also reports/metrics.json, the DVC metrics file
CMC_FILE = "cmc.csv"
PER_QUERY_FILE = "per_query.csv"
VERIFICATION_FILE = "verification.json"  # open-set figures: TAR at FAR, thresholds, no-match
ONNX_DIR = "onnx"
TENSORRT_DIR = "tensorrt"
DEPLOY_DIR = "deploy"

# results/<arch>/embeddings/: <set>.npy and <set>.csv for each set
EMBEDDING_SETS = ("query", "gallery")

# results/<arch>/onnx/
ONNX_FILE = "model.onnx"
FP16_FILE = "model_fp16.onnx"
INT8_FILE = "model_int8.onnx"
PARITY_FILE = "parity.json"

# results/<arch>/tensorrt/
TRT_STATUS_FILE = "status.json"
TRT_ENGINE_FILE = "model.engine"

# results/<arch>/deploy/
PACKAGE_MANIFEST_FILE = "package.json"
MODEL_CARD_MARKDOWN = "MODEL_CARD.md"  # the model card (NGC's sections), from the run's records
MODEL_CARD_JSON = "model_card.json"

# reports/
REPORT_MARKDOWN = "index.md"
REPORT_HTML = "index.html"
FIGURES_DIR = "figures"
SEED_SPREAD_FILE = "seed_spread.json"  # mean, std, min and max of each metric over the seeds
ENVIRONMENT_FILE = "environment.json"  # each arch's training environment (reidpipe.environment)


# beside the first output of every stage: the params and code it was built from
# (reidpipe.provenance)
PROVENANCE_SUFFIX = ".provenance.json"


def embedding_array(set_name: str) -> str:
    return f"{set_name}.npy"


def embedding_table(set_name: str) -> str:
    return f"{set_name}.csv"
