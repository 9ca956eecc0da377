"""The tiny training run of the recovery tests (and the output-unit tests): a 3-epoch
test_resnet on 16x32 images with a checkpoint every epoch."""

EPOCHS = 3


TINY = {
    "pipeline": {"archs": ["tiny"]},
    "model": {
        "backbone": "test_resnet",
        "pretrain_choice": "",
        "input_width": 16,
        "input_height": 32,
        "feat_dim": 32,
        "metric_loss_type": "triplet_center",
    },
    "dataset": {
        "batch_size": 4,
        "val_batch_size": 16,
        "num_workers": 0,
        "padding": 2,
        "num_instances": 2,
    },
    "train": {
        "num_epochs": EPOCHS,
        "checkpoint_interval": 1,
        "validation_interval": 1,
        "num_gpus": 0,
        "max_steps_per_epoch": 2,
        "optim": {"lr_steps": [2], "warmup_epochs": 1},
    },
    "archs": {"tiny": {}},
}
