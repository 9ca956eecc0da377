"""Train-stage throughput on this machine: loader images/s and training images/s per demo arch.

The loader must keep the model fed: its rate (decode + augmentation, ``dataset.num_workers``
processes) should exceed the training rate (forward + backward + step). Uses the synthetic
Market-layout demo data and config/demo.yaml's recipes.

    python benchmarks/bench_train.py [--steps 10] [--out benchmarks/results/train.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from reidpipe import atomic
from reidpipe.data.split import make_split
from reidpipe.data.synth import generate_synthetic_market
from reidpipe.params import load_params
from reidpipe.training.datamodule import ReidDataModule
from reidpipe.training.lightning_module import ReidModule
from reidpipe.training.losses import reid_loss
from reidpipe.training.schedule import make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def loader_rate(datamodule: ReidDataModule, batches: int) -> float:
    loader = datamodule.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, _ = next(it)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def train_rate(module: ReidModule, datamodule: ReidDataModule, steps: int) -> float:
    """Forward + backward + optimiser step on batches held in memory (the loader excluded)."""
    loader = datamodule.train_dataloader()
    batches = []
    for images, labels in loader:
        batches.append((images, labels))
        if len(batches) == 2:
            break
    optimizer = make_optimizer(module.net, module.cfg.train.optim)
    module.net.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        scores, feat = module.net(images)
        loss = reid_loss(module.plan, scores, feat, labels, module.center)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(*batches[0])  # warm-up
    start, seen = time.perf_counter(), 0
    for i in range(steps):
        images, labels = batches[i % len(batches)]
        step(images, labels)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per arch")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    args = parser.parse_args()
    params = load_params([ROOT / "params.yaml", ROOT / "config" / "demo.yaml"])
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "archs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic-market"
        generate_synthetic_market(data, params.data.synthetic_ids, params.data.synthetic_seed)
        make_split(data, Path(tmp) / "splits", params.split.val_ids, params.split.seed)
        for arch in params.pipeline.archs:
            cfg = params.arch(arch)
            torch.manual_seed(0)
            datamodule = ReidDataModule(Path(tmp) / "splits", cfg)
            module = ReidModule(cfg, datamodule.num_classes)
            loader = loader_rate(datamodule, args.loader_batches)
            train = train_rate(module, datamodule, args.steps)
            results["archs"][arch] = {
                "backbone": cfg.model.backbone,
                "input": [cfg.model.input_height, cfg.model.input_width],
                "batch_size": cfg.dataset.batch_size,
                "num_workers": cfg.dataset.num_workers,
                "loader_images_per_s": round(loader, 1),
                "train_images_per_s": round(train, 1),
                "loader_keeps_up": loader >= train,
            }
            print(
                f"{arch}: loader {loader:.1f} img/s ({cfg.dataset.num_workers} worker(s)), "
                f"train {train:.1f} img/s",
                flush=True,
            )
    atomic.write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
