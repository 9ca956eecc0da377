import json

import pytest
import yaml
from support import ROOT

from reidpipe.cli import main
from reidpipe.errors import ReidpipeError
from reidpipe.params import json_schema, load_params, params_to_dict

PARAMS = ROOT / "params.yaml"
DEMO = ROOT / "config" / "demo.yaml"


def test_defaults_reproduce_published_recipes():
    params = load_params([PARAMS])
    assert params.pipeline.archs == ["resnet50", "swin_tiny"]
    bot = params.arch("resnet50")
    assert (bot.model.backbone, bot.model.last_stride, bot.model.neck) == (
        "resnet50.tv_in1k",
        1,
        "bnneck",
    )
    assert (bot.train.optim.name, bot.train.optim.base_lr, bot.train.num_epochs) == (
        "Adam",
        3.5e-4,
        120,
    )
    assert bot.train.optim.lr_steps == [40, 70] and bot.dataset.batch_size == 64
    assert bot.dataset.num_instances == 4 and bot.dataset.re_prob == 0.5
    swin = params.arch("swin_tiny")
    assert swin.model.backbone == "swin_tiny_patch4_window7_224" and swin.model.no_margin
    assert (swin.train.optim.name, swin.train.optim.base_lr) == ("SGD", 8e-4)
    assert swin.train.optim.warmup_method == "cosine" and swin.train.optim.warmup_epochs == 20
    assert swin.dataset.pixel_mean == [0.5, 0.5, 0.5]


def test_shared_feat_dim_reaches_every_arch():
    params = load_params([PARAMS], ["model.feat_dim=256"])
    assert {params.arch(a).model.feat_dim for a in params.pipeline.archs} == {256}


def test_files_merge_in_order_and_set_wins():
    params = load_params(
        [PARAMS, DEMO], ["train.num_epochs=3", "archs.swin_demo.model.feat_dim=64"]
    )
    assert params.data.source == "synthetic"
    assert params.train.num_epochs == 3
    assert params.arch("swin_demo").model.feat_dim == 64
    assert params.arch("resnet_demo").model.feat_dim == 128
    # nested sections merge key by key: the demo's cosine schedule keeps params.yaml's gamma
    resnet = params.arch("resnet_demo").train.optim
    assert (resnet.warmup_method, resnet.gamma, resnet.name) == ("cosine", 0.1, "Adam")
    # an arch recipe overrides the shared value, --set overrides both
    assert params.arch("resnet_demo").train.num_epochs == 3
    assert params.arch("swin_demo").train.num_epochs == 36


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.feat_dim=abc", "model.feat_dim = 'abc' is invalid: expected an integer"),
        ("model.feat_dims=3", "unknown key 'model.feat_dims'"),
        ("dataset.prob=1.5", "dataset.prob = 1.5 is out of range: expected <= 1"),
        (
            "train.optim.name=RMSprop",
            "train.optim.name = 'RMSprop' is invalid: expected one of 'SGD'",
        ),
        ("archs.resnet50.model.neck_feat=middle", "archs.resnet50.model.neck_feat = 'middle'"),
        ("pipeline.archs=[vit]", "pipeline.archs names 'vit'"),
        ("dataset.batch_size=30", "must be a multiple of dataset.num_instances"),
        ("re_ranking.re_ranking=yes please", "re_ranking.re_ranking = 'yes please' is invalid"),
        ("dataset.pixel_mean=[0.5]", "dataset.pixel_mean needs 3 values"),
    ],
)
def test_errors_name_key_value_and_expectation(override, message):
    with pytest.raises(ReidpipeError) as info:
        load_params([PARAMS], [override])
    assert message in str(info.value)


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["params", "--params", str(PARAMS), "--set", "model.feat_dim=-3"]) == 2
    err = capsys.readouterr().err
    assert "model.feat_dim = -3 is out of range: expected >= 0" in err
    assert "Traceback" not in err


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ReidpipeError, match="does not exist"):
        load_params([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ReidpipeError, match="bad.yaml is not valid YAML"):
        load_params([bad])


def test_params_yaml_lists_every_key():
    """DVC can only track what params.yaml spells out, so no default may be implicit."""
    written = yaml.safe_load(PARAMS.read_text())
    effective = params_to_dict(load_params([PARAMS]))

    def keys(node, prefix=""):
        if isinstance(node, dict) and not prefix.startswith(("archs", "model.backbone_kwargs")):
            return {k for key, v in node.items() for k in keys(v, f"{prefix}{key}.")}
        return {prefix.rstrip(".")}

    assert keys(written) == keys(effective)


def test_schema_file_is_generated_from_the_dataclasses():
    schema_file = ROOT / "workflow" / "schemas" / "config.schema.json"
    assert json.loads(schema_file.read_text()) == json_schema(), (
        "regenerate with: reidpipe params --schema --out workflow/schemas/config.schema.json"
    )


def test_schema_accepts_params_and_rejects_typos():
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    for files in ([PARAMS], [PARAMS, DEMO]):
        validator.validate(params_to_dict(load_params(files)))
    bad = params_to_dict(load_params([PARAMS]))
    bad["model"]["feat_dimm"] = 3
    assert not validator.is_valid(bad)
