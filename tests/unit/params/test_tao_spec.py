"""``reidpipe params --from-tao``: TAO ReIdentificationNet specs as reidpipe overrides.

The expectations come from TAO's own definitions (nvidia_tao_core's re-identification
``default_config.py`` and tao_pytorch_backend's re_identification model, scheduler and data
loader), written out here: the key list, TAO's defaults, what each backbone name builds and how
its schedules count warmup.
"""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support import ROOT
from support.tiny_run import BASE, EVERY_EPOCH

from reidpipe.data.split import make_split
from reidpipe.data.synth import generate_synthetic_market
from reidpipe.errors import ReidpipeError
from reidpipe.params import load_params
from reidpipe.params.tao import IGNORED_SUBTREES, RULES, convert_tao_spec
from reidpipe.training.model import load_trained_model
from reidpipe.training.train import Runtime, train_arch

FIXTURES = ROOT / "tests" / "fixtures" / "tao"
RESNET_SPEC = FIXTURES / "resnet50_market.yaml"
SWIN_SPEC = FIXTURES / "swin_tiny_market.yaml"
CLI = [sys.executable, "-c", "import sys; from reidpipe.cli import main; sys.exit(main())"]

# Every key of TAO's re-identification ExperimentConfig (TAO 5.0-6.x): the re-id dataclasses and
# the common train / evaluate / inference / export fields they extend.
TAO_KEYS = [
    "results_dir",
    "encryption_key",
    "model_name",
    "model.backbone",
    "model.last_stride",
    "model.pretrain_choice",
    "model.pretrained_model_path",
    "model.input_channels",
    "model.input_width",
    "model.input_height",
    "model.neck",
    "model.feat_dim",
    "model.neck_feat",
    "model.metric_loss_type",
    "model.with_center_loss",
    "model.with_flip_feature",
    "model.label_smooth",
    "model.pretrain_hw_ratio",
    "model.id_loss_type",
    "model.id_loss_weight",
    "model.triplet_loss_weight",
    "model.no_margin",
    "model.cos_layer",
    "model.dropout_rate",
    "model.reduce_feat_dim",
    "model.drop_path",
    "model.drop_out",
    "model.att_drop_rate",
    "model.stride_size",
    "model.gem_pooling",
    "model.stem_conv",
    "model.jpm",
    "model.shift_num",
    "model.shuffle_group",
    "model.devide_length",
    "model.re_arrange",
    "model.sie_coe",
    "model.sie_camera",
    "model.sie_view",
    "model.semantic_weight",
    "train.optim.name",
    "train.optim.lr_monitor",
    "train.optim.steps",
    "train.optim.lr_steps",
    "train.optim.gamma",
    "train.optim.bias_lr_factor",
    "train.optim.weight_decay",
    "train.optim.weight_decay_bias",
    "train.optim.warmup_factor",
    "train.optim.warmup_iters",
    "train.optim.warmup_epochs",
    "train.optim.warmup_method",
    "train.optim.base_lr",
    "train.optim.momentum",
    "train.optim.center_loss_weight",
    "train.optim.center_lr",
    "train.optim.triplet_loss_margin",
    "train.optim.large_fc_lr",
    "train.optim.cosine_margin",
    "train.optim.cosine_scale",
    "train.optim.trp_l2",
    "dataset.train_dataset_dir",
    "dataset.test_dataset_dir",
    "dataset.query_dataset_dir",
    "dataset.num_classes",
    "dataset.batch_size",
    "dataset.val_batch_size",
    "dataset.num_workers",
    "dataset.pixel_mean",
    "dataset.pixel_std",
    "dataset.padding",
    "dataset.prob",
    "dataset.re_prob",
    "dataset.sampler",
    "dataset.num_instances",
    "re_ranking.re_ranking",
    "re_ranking.k1",
    "re_ranking.k2",
    "re_ranking.lambda_value",
    "re_ranking.max_rank",
    "re_ranking.num_query",
    "train.num_gpus",
    "train.gpu_ids",
    "train.num_nodes",
    "train.seed",
    "train.num_epochs",
    "train.checkpoint_interval",
    "train.validation_interval",
    "train.resume_training_checkpoint_path",
    "train.results_dir",
    "train.grad_clip",
    "evaluate.num_gpus",
    "evaluate.gpu_ids",
    "evaluate.gpu_id",
    "evaluate.num_nodes",
    "evaluate.checkpoint",
    "evaluate.trt_engine",
    "evaluate.results_dir",
    "evaluate.output_sampled_matches_plot",
    "evaluate.output_cmc_curve_plot",
    "evaluate.test_dataset",
    "evaluate.query_dataset",
    "inference.num_gpus",
    "inference.gpu_ids",
    "inference.gpu_id",
    "inference.num_nodes",
    "inference.checkpoint",
    "inference.trt_engine",
    "inference.results_dir",
    "inference.output_file",
    "inference.test_dataset",
    "inference.query_dataset",
    "export.results_dir",
    "export.gpu_id",
    "export.checkpoint",
    "export.onnx_file",
    "export.on_cpu",
    "export.input_channel",
    "export.input_width",
    "export.input_height",
    "export.opset_version",
    "export.batch_size",
    "export.verbose",
]
TAO_SUBTREES = ["wandb", "train.cudnn"]

# Demo-sized: tiny inputs, a narrow Swin, one step an epoch, CPU. Everything else (losses,
# optimizer, schedule, neck, embedding width rule) stays as the TAO spec converted it. The
# converted values are the arch's recipe, so the demo sizes override that recipe too. The
# spec's dataset folders stay in the parameters: the run trains on synthetic splits given to it.
TINY_RECIPE = {
    "model": {
        "pretrain_choice": "",
        "pretrained_model_path": "",
        "input_width": 32,
        "input_height": 64,
    },
    "dataset": BASE["dataset"],
    "train": {"num_epochs": 2, **EVERY_EPOCH, "max_steps_per_epoch": 1, "num_gpus": 0},
}
NARROW_SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def convert_to_file(spec: Path, tmp_path: Path, arch: str | None = None) -> Path:
    conversion = convert_tao_spec(spec, arch)
    out = tmp_path / "tao_overrides.yaml"
    out.write_text(conversion.yaml_text(spec))
    return out


def spec_leaves(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from spec_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_tao_key_has_a_rule_and_no_rule_invents_a_key():
    assert sorted(RULES) == sorted(TAO_KEYS)
    assert sorted(IGNORED_SUBTREES) == sorted(TAO_SUBTREES)


@pytest.mark.parametrize("spec", [RESNET_SPEC, SWIN_SPEC], ids=["resnet", "swin"])
def test_each_fixture_key_appears_once_in_the_table(spec):
    conversion = convert_tao_spec(spec)
    given = list(spec_leaves(yaml.safe_load(spec.read_text())))
    from_spec = [row.key for row in conversion.rows if row.from_spec]
    assert sorted(from_spec) == sorted(given)
    table = conversion.table()
    for key in given:
        assert f" {key}: " in table
    assert {row.outcome.kind for row in conversion.rows} == {"mapped", "translated", "ignored"}


def test_resnet_spec_means_what_tao_trains(tmp_path):
    params = load_params([ROOT / "params.yaml", convert_to_file(RESNET_SPEC, tmp_path)])
    assert params.pipeline.archs == ["resnet50"]
    cfg = params.arch("resnet50")
    m, d, t = cfg.model, cfg.dataset, cfg.train
    # resnet_50 is TAO's name; its feat_dim 256 is a reduction from 2048 (TAO: a 1x1 conv).
    assert (m.backbone, m.feat_dim, m.reduce_feat_dim) == ("resnet50", 256, True)
    # TAO reads pretrained weights from the path only: pretrain_choice names its format.
    assert (m.pretrain_choice, m.pretrained_model_path) == ("self", "/path/to/pretrained_model.pth")
    assert (m.input_height, m.input_width, m.neck, m.neck_feat) == (256, 128, "bnneck", "after")
    assert (m.label_smooth, m.with_center_loss, m.metric_loss_type) == (True, False, "triplet")
    assert d.pixel_std == [0.226] * 3 and d.pixel_mean == [0.485, 0.456, 0.406]
    assert (d.batch_size, d.num_instances, d.num_workers, d.num_classes) == (64, 4, 1, 0)
    o = t.optim
    # `steps` (TAO 5.0's lr_steps) and warmup_iters, which TAO's per-epoch scheduler counts in
    # epochs.
    assert (o.lr_steps, o.gamma, o.warmup_method, o.warmup_epochs, o.warmup_factor) == (
        [40, 70],
        0.1,
        "linear",
        10,
        0.01,
    )
    assert (o.name, o.base_lr, o.weight_decay, o.bias_lr_factor) == ("Adam", 3.5e-4, 5e-4, 1.0)
    assert (t.num_epochs, t.checkpoint_interval, t.validation_interval, t.seed) == (10, 5, 5, 1234)
    assert params.re_ranking.re_ranking and (params.re_ranking.k1, params.re_ranking.k2) == (20, 6)
    assert params.data.source == "custom" and params.data.dataset_dir == "/path/to"


def test_swin_spec_means_what_tao_trains(tmp_path):
    params = load_params([ROOT / "params.yaml", convert_to_file(SWIN_SPEC, tmp_path)])
    assert params.pipeline.archs == ["swin_tiny"]
    cfg = params.arch("swin_tiny")
    m, d, o = cfg.model, cfg.dataset, cfg.train.optim
    assert m.backbone == "swin_tiny_patch4_window7_224"
    # Without reduce_feat_dim TAO's Swin ignores feat_dim (1024 here): the embedding is 768.
    assert (m.feat_dim, m.reduce_feat_dim) == (0, False)
    assert (m.input_height, m.input_width) == (384, 128)
    assert (m.no_margin, m.label_smooth) == (True, False)
    assert m.backbone_kwargs["drop_path_rate"] == 0.1  # TAO's drop_path default
    assert d.pixel_mean == [0.5] * 3 and d.pixel_std == [0.5] * 3
    # warmup_method: cosine is TAO's cosine scheduler: warmup_epochs, floor 0.002 base.
    assert (o.warmup_method, o.warmup_epochs, o.warmup_factor) == ("cosine", 20, 0.01)
    assert (o.name, o.base_lr, o.momentum, o.bias_lr_factor, o.weight_decay) == (
        "SGD",
        8e-4,
        0.9,
        2.0,
        1e-4,
    )
    assert cfg.train.num_epochs == 120


def tao_epoch_lr(spec: dict, epoch: int) -> float:
    """TAO's lr in epoch ``epoch`` (from 1), from its schedulers' definitions: WarmupMultiStepLR
    stepped once before training and at each epoch start (linear), or the cosine scheduler
    (linear warmup from 0.01 base over warmup_epochs, then cosine to 0.002 base at num_epochs)."""
    optim = spec["train"]["optim"]
    base = optim["base_lr"]
    if optim["warmup_method"] == "cosine":
        t, warm = epoch - 1, optim["warmup_epochs"]
        if t < warm:
            return base * (0.01 + t * (1 - 0.01) / warm)
        floor = 0.002 * base
        epochs = spec["train"]["num_epochs"]
        return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * t / epochs))
    warm, f = optim["warmup_iters"], optim["warmup_factor"]
    alpha = epoch / warm
    factor = f * (1 - alpha) + alpha if epoch < warm else 1.0
    steps = optim.get("lr_steps", optim.get("steps"))
    return base * factor * optim["gamma"] ** sum(s <= epoch for s in steps)


@pytest.fixture(scope="module")
def synthetic_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("tao")
    generate_synthetic_market(root / "data", num_ids=8, seed=0, workers=1)
    make_split(root / "data", root / "splits", val_ids=2, seed=0)
    return root / "splits"


@pytest.mark.parametrize("spec", [RESNET_SPEC, SWIN_SPEC], ids=["resnet", "swin"])
def test_converted_spec_trains_a_demo_sized_run(spec, tmp_path, synthetic_splits):
    torch.set_num_threads(1)
    conversion = convert_tao_spec(spec)
    recipe = yaml.safe_load(yaml.safe_dump(TINY_RECIPE))
    if conversion.arch.startswith("swin"):
        recipe["model"]["backbone_kwargs"] = NARROW_SWIN
    tiny = {"archs": {conversion.arch: recipe}}
    files = [
        ROOT / "params.yaml",
        convert_to_file(spec, tmp_path),
        write_yaml(tmp_path / "tiny.yaml", tiny),
    ]
    cfg = load_params(files).arch(conversion.arch)
    out = tmp_path / "model"
    train_arch(cfg, synthetic_splits, out, Runtime("cpu", 1, "32", "test"))
    log = pd.read_csv(out / "train_log.csv")
    trained = log[log["epoch"] > 0]
    assert trained["epoch"].tolist() == [1, 2]
    assert trained["loss"].notna().all() and trained["triplet_loss"].notna().all()
    tao = yaml.safe_load(spec.read_text())
    tao["train"]["num_epochs"] = 2
    for epoch, lr in zip(trained["epoch"], trained["lr"]):
        assert lr == pytest.approx(tao_epoch_lr(tao, epoch), rel=1e-6)
    net, _ = load_trained_model(out)
    width = net(torch.rand(2, 3, 64, 32)).shape[1]
    # ResNet: the spec's 256-d reduction; Swin: the backbone's own width (feat_dim ignored).
    assert width == (256 if conversion.arch == "resnet50" else net.backbone.num_features)


def write_spec(tmp_path: Path, data) -> Path:
    return write_yaml(tmp_path / "spec.yaml", data)


def test_a_minimal_spec_takes_taos_defaults_not_reidpipes(tmp_path):
    spec = write_spec(tmp_path, {"model": {"backbone": "resnet_50"}})
    conversion = convert_tao_spec(spec)
    cfg = load_params([ROOT / "params.yaml", convert_to_file(spec, tmp_path)]).arch("resnet50")
    assert cfg.dataset.pixel_std == [0.226] * 3  # reidpipe's own default is 0.229/0.224/0.225
    assert (cfg.model.feat_dim, cfg.model.reduce_feat_dim) == (256, True)
    assert (cfg.train.num_epochs, cfg.train.optim.warmup_epochs) == (10, 10)
    assert cfg.model.pretrain_choice == ""  # no weights file: TAO trains from random weights
    assert "(TAO default)" in conversion.table()
    assert "data" not in conversion.overrides  # no folders in the spec: params.yaml's data


@pytest.mark.parametrize(
    "backbone,timm_name",
    [
        ("resnet_18", "resnet26"),  # TAO builds resnet_18 from Bottleneck blocks [2, 2, 2, 2]
        ("resnet_34", "resnet50"),  # ... and resnet_34 from Bottleneck blocks [3, 4, 6, 3]
        ("resnet_101", "resnet101"),
        ("swin_base_patch4_window7_224", "swin_base_patch4_window7_224"),
    ],
)
def test_backbone_names_build_what_tao_builds(tmp_path, backbone, timm_name):
    conversion = convert_tao_spec(write_spec(tmp_path, {"model": {"backbone": backbone}}))
    assert conversion.overrides["archs"][conversion.arch]["model"]["backbone"] == timm_name


def test_swin_reduces_only_with_reduce_feat_dim(tmp_path):
    spec = write_spec(
        tmp_path,
        {
            "model": {
                "backbone": "swin_tiny_patch4_window7_224",
                "feat_dim": 256,
                "reduce_feat_dim": True,
            }
        },
    )
    model = convert_tao_spec(spec).overrides["archs"]["swin_tiny"]["model"]
    assert (model["feat_dim"], model["reduce_feat_dim"]) == (256, True)


def test_market_layout_folders_become_one_dataset_folder(tmp_path):
    root = "/data/Market-1501-v15.09.15"
    spec = write_spec(
        tmp_path,
        {
            "dataset": {
                "train_dataset_dir": f"{root}/bounding_box_train",
                "test_dataset_dir": f"{root}/bounding_box_test",
                "query_dataset_dir": f"{root}/query",
            }
        },
    )
    assert convert_tao_spec(spec).overrides["data"] == {
        "source": "custom",
        "dataset_dir": root,
        "strict": False,
    }


def test_three_folders_keep_their_names_with_test_as_gallery(tmp_path):
    spec = write_spec(
        tmp_path,
        {
            "dataset": {
                "train_dataset_dir": "/d/mine/train",
                "test_dataset_dir": "/d/other/test",
                "query_dataset_dir": "/d/mine/q",
            }
        },
    )
    data = convert_tao_spec(spec).overrides["data"]
    assert data == {
        "source": "custom",
        "dataset_dir": "/d",
        "strict": False,
        "split_dirs": {"train": "mine/train", "query": "mine/q", "gallery": "other/test"},
    }


@pytest.mark.parametrize(
    "data,words",
    [
        ({"model": {"backbon": "resnet_50"}}, ["unknown key 'model.backbon'"]),
        ({"gen_trt_engine": {"tensorrt": {"data_type": "fp16"}}}, ["'gen_trt_engine.tensorrt"]),
        ({"model": {"backbone": "resnet_200"}}, ["model.backbone", "resnet_200", "resnet_50"]),
        ({"model": {"id_loss_type": "arcface"}}, ["model.id_loss_type", "arcface", "softmax"]),
        ({"model": {"jpm": True}}, ["model.jpm", "JPM"]),
        ({"train": {"optim": {"warmup_method": "constant"}}}, ["warmup_method", "constant"]),
        ({"train": {"optim": {"steps": [1], "lr_steps": [2]}}}, ["steps", "lr_steps"]),
        ({"train": {"seed": -1}}, ["train.seed", "-1"]),
        ({"dataset": {"train_dataset_dir": "/a/train"}}, ["dataset.query_dataset_dir"]),
        ({"model": "resnet"}, ["model"]),
        (None, ["TAO spec", "is empty"]),
        ([{"model": {"backbone": "resnet_50"}}], ["TAO spec", "must hold a mapping"]),
    ],
)
def test_bad_specs_name_the_key(tmp_path, data, words):
    spec = write_spec(tmp_path, data)
    with pytest.raises(ReidpipeError) as err:
        convert_tao_spec(spec)
    message = str(err.value)
    assert str(spec) in message
    for word in words:
        assert word in message


def test_evaluate_on_other_folders_is_refused_and_the_same_ones_ignored(tmp_path):
    dirs = {
        "train_dataset_dir": "/d/train",
        "test_dataset_dir": "/d/test",
        "query_dataset_dir": "/d/query",
    }
    same = convert_tao_spec(
        write_spec(
            tmp_path,
            {
                "dataset": dirs,
                "evaluate": {"test_dataset": "/d/test", "checkpoint": "/r/model.pth"},
            },
        )
    )
    assert {r.key: r.outcome.kind for r in same.rows}["evaluate.test_dataset"] == "ignored"
    with pytest.raises(ReidpipeError, match="evaluate.query_dataset"):
        convert_tao_spec(
            write_spec(
                tmp_path, {"dataset": dirs, "evaluate": {"query_dataset": "/elsewhere/query"}}
            )
        )


def test_inference_and_export_map_where_reidpipe_has_a_counterpart(tmp_path):
    conversion = convert_tao_spec(
        write_spec(
            tmp_path,
            {
                "inference": {"output_file": "/r/embeddings.json"},
                "export": {"opset_version": 17, "onnx_file": "/r/model.onnx"},
                "re_ranking": {"max_rank": 20, "num_query": 5},
            },
        )
    )
    top = conversion.overrides
    assert top["extract"] == {"tao_json": True}
    assert "export" not in top and top["archs"][conversion.arch]["export"] == {"opset": 17}
    assert top["evaluate"] == {"max_rank": 20} and top["report"] == {"sampled_queries": 5}


def test_cli_writes_the_overrides_prints_the_table_and_refuses_unknown_keys(tmp_path):
    out = tmp_path / "tao.yaml"
    done = subprocess.run(
        [*CLI, "params", "--from-tao", str(SWIN_SPEC), "--arch", "tao_swin", "--out", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "model.feat_dim: 1024" in done.stderr and "encryption_key" in done.stderr
    check = subprocess.run(
        [*CLI, "params", "--params", "params.yaml", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert yaml.safe_load(check.stdout)["pipeline"]["archs"] == ["tao_swin"]
    bad = write_spec(tmp_path, {"model": {"colour": "red"}})
    failed = subprocess.run(
        [*CLI, "params", "--from-tao", str(bad), "--out", str(tmp_path / "x")],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2 and not (tmp_path / "x").exists()
    assert failed.stderr.strip().count("\n") == 0 and "model.colour" in failed.stderr


def test_readme_key_table_lists_every_tao_key():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## For TAO users", 1)[1].split("\n## ", 1)[0]
    for key in [*RULES, *IGNORED_SUBTREES]:
        assert f"`{key}`" in section, key
