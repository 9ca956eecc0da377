"""The report as a browser shows it: a tiny run's real extract, evaluate and report (attention
maps of a trained-model file included) opened in headless Chromium; every image loads and every
link of index.html and index.md resolves. The browser tests skip where no ``chromium`` is
installed (``.ci/run`` installs Debian's). Also: the attention maps follow report.attention_maps
and say so where an arch has no trained model."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.evaluate_run import evaluate_argv
from support.market_fixtures import make_tiny_market

from reidpipe.cli import main
from reidpipe.filenames import MODEL_FILE
from reidpipe.params import ArchConfig, DatasetParams, ModelParams, TrainParams
from reidpipe.training.model import arch_to_dict, build_model

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no `chromium` on PATH (Debian: apt-get install chromium; .ci/run "
    "installs it): the report's browser check needs a real browser",
)

# Appended to a copy of the page beside it: once the page has loaded, each <img>'s state is
# written into the DOM, which --dump-dom prints.
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(
    (img) => ({src: img.src.slice(0, 60), complete: img.complete, width: img.naturalWidth}));
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify(images);
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reports/ of one arch: a random-init resnet18 model file, the real extract and evaluate of
    a tiny Market-layout dataset, then `reidpipe report` with attention maps."""
    root = tmp_path_factory.mktemp("browser")
    dataset = make_tiny_market(root / "data", train_ids=2, test_ids=6)
    model = ModelParams(
        backbone="resnet18", pretrain_choice="", input_height=64, input_width=32, feat_dim=0
    )
    arch = ArchConfig(name="net", model=model, dataset=DatasetParams(), train=TrainParams())
    torch.manual_seed(0)
    net = build_model(model, num_classes=2, weights=False)
    (root / "models" / "net").mkdir(parents=True)
    torch.save(
        {"arch": arch_to_dict(arch), "num_classes": 2, "state_dict": net.state_dict()},
        root / "models" / "net" / MODEL_FILE,
    )
    params = root / "params.yaml"
    params.write_text(json.dumps({"pipeline": {"archs": ["net"]}, "archs": {"net": {}}}))
    results = root / "results" / "net"
    common = ["--params", str(params)]
    assert (
        main(
            [
                "extract",
                *common,
                "--model",
                str(root / "models" / "net"),
                "--dataset",
                str(dataset),
                "--out",
                str(results / "embeddings"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert main(evaluate_argv(params, results / "embeddings", results, verification=True)) == 0
    assert report(root, root / "reports") == 0
    return root / "reports"


def report(root: Path, out: Path, *settings: str) -> int:
    return main(
        [
            "report",
            "--params",
            str(root / "params.yaml"),
            "--results",
            str(root / "results"),
            "--models",
            str(root / "models"),
            "--out",
            str(out),
            "--set",
            "report.sampled_queries=2",
            "--set",
            "report.top_k=3",
            "--set",
            "report.hardest_queries=2",
            *(part for setting in settings for part in ("--set", setting)),
        ]
    )


def browser_images(page: Path) -> list[dict]:
    """Each <img> of ``page`` as Chromium loaded it (src, complete, naturalWidth)."""
    checked = page.with_name(f"check-{page.name}")
    checked.write_text(
        page.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"),
        encoding="utf-8",
    )
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    checked.unlink()
    found = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert found, f"Chromium ran no check script; its DOM starts: {dom[:300]!r}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def broken_links(page: Path, pattern: str) -> list[str]:
    """The targets of ``pattern`` in ``page`` that are neither data URIs, in-page anchors nor
    existing files relative to it."""
    text = page.read_text(encoding="utf-8")
    return [
        target
        for target in re.findall(pattern, text)
        if not target.startswith(("data:", "#")) and not (page.parent / target).is_file()
    ]


@needs_chromium
def test_every_image_loads_and_every_link_resolves(report_dir: Path) -> None:
    figures = sorted(p.name for p in (report_dir / "figures").glob("*.png"))
    assert {"net_attention_sampled.png", "net_attention_hardest.png"} <= set(figures)
    html = report_dir / "index.html"
    images = browser_images(html)
    assert len(images) == len(figures)  # each figure once, the attention maps among them
    assert all(image["complete"] and image["width"] > 0 for image in images), images
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html.read_text()):
        with Image.open(io.BytesIO(base64.b64decode(data))) as png:
            png.load()  # a truncated PNG still has a width in the browser; PIL decodes it all
    assert broken_links(html, r'(?:src|href)="([^"]+)"') == []
    markdown = report_dir / "index.md"
    assert "net_attention_hardest.png" in markdown.read_text(encoding="utf-8")
    assert broken_links(markdown, r"\]\(([^)\s]+)\)") == []
    shot = report_dir.parent / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,2400",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


@needs_chromium
def test_the_check_sees_a_broken_image(report_dir: Path, tmp_path: Path) -> None:
    """The browser check itself: a page whose image data is cut short shows as not loaded."""
    page = tmp_path / "index.html"
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    page.write_text(
        text.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1),
        encoding="utf-8",
    )  # 3 zero bytes before the PNG signature
    images = browser_images(page)
    assert [image["width"] > 0 for image in images].count(False) == 1


def test_attention_maps_follow_the_param_and_the_model_file(report_dir: Path) -> None:
    root = report_dir.parent
    assert report(root, root / "off", "report.attention_maps=false") == 0
    assert "Attention maps" not in (root / "off" / "index.md").read_text(encoding="utf-8")
    assert not list((root / "off" / "figures").glob("*attention*"))
    model = root / "models" / "net" / MODEL_FILE
    model.rename(root / "model.pt.away")
    try:
        assert report(root, root / "no_model") == 0
    finally:
        (root / "model.pt.away").rename(model)
    text = (root / "no_model" / "index.md").read_text(encoding="utf-8")
    assert text.count(f"No trained model (`{model}`): no attention maps.") == 2
    assert not list((root / "no_model" / "figures").glob("*attention*"))
