"""The model card of one trained model, in the sections of NGC's ReIdentificationNet card: model
overview, architecture, training data, evaluation data and protocol, metrics, open-set
verification, inference and deployment formats, environment, limitations and ethical
considerations. Every value is read from the run's records (train config, split manifests,
validation report, metrics, verification figures, export parity, TensorRT status, the package
manifest); nothing is measured here. Written as JSON (``model_card.json``) and Markdown
(``MODEL_CARD.md``) by the package stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reidpipe.data.combine import SOURCES_FILE
from reidpipe.data.fingerprint import fingerprint_splits
from reidpipe.errors import ReidpipeError
from reidpipe.json_files import read_json_file
from reidpipe.params import Params
from reidpipe.params.sections.archs import PUBLISHED_RECIPES

# The sections of a recipe that make the trained model (``archs.<name>``; the package stage
# tracks these params)
TRAINING_SECTIONS = ("model", "dataset", "train")
# The FAR whose threshold the card and the package README recommend.
RECOMMENDED_FAR = 1e-3
# The retrieval figures of each ranking the card reports (its JSON and its Markdown table).
METRIC_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")
# Where each published recipe comes from (the recipes: ``PUBLISHED_RECIPES``).
RECIPE_SOURCES = {
    "resnet50": "Bag of Tricks and a Strong Baseline for Deep Person Re-identification "
    "(Luo et al., CVPR workshops 2019)",
    "swin_tiny": "NVIDIA TAO ReIdentificationNet's transformer spec (SOLIDER's recipe, Chen et "
    "al., CVPR 2023)",
}
PROTOCOL = (
    "Market-1501's single-query protocol, as BoT, torchreid, fast-reid and TAO compute "
    "it: per query, gallery images of the same identity and camera and all junk images "
    "are dropped, distractors stay as negatives; CMC rank-k and non-interpolated mAP "
    "(mINP too) over the queries that keep a true match"
)
LIMITATIONS = (
    "Domain shift: accuracy is measured on the evaluation set above only. Other cameras, "
    "viewpoints, resolutions, lighting, seasons or crowd densities lower it, often by tens of "
    "mAP points (cross-domain results in the report show how much); validate on data from "
    "the target deployment before relying on it.",
    "The model compares crops of people produced by a detector; it does not detect, track or "
    "name anyone, and its distances are only comparable between crops it embedded with the "
    "same preprocessing (the package's input contract).",
    "Dataset bias: the training images come from a few cameras at one site and period (for the "
    "public benchmarks: university campuses); age, ethnicity, clothing and body-shape groups "
    "are not balanced, and accuracy per group is not measured.",
    "Appearance, not identity: people who change clothes are not matched, and people dressed "
    "alike are confused.",
)
ETHICS = (
    "Person re-identification tracks people across cameras; it is a surveillance technology. "
    "Deploy it only where the law allows and with a documented purpose, notice to the people "
    "filmed and a data-protection assessment (e.g. GDPR art. 35 in the EU).",
    "Not for identifying individuals without their consent, for profiling, for decisions with "
    "legal or similarly significant effects on a person, nor for targeting people by protected "
    "characteristics.",
    "Embeddings are personal data when linked to a person: keep them only as long as the "
    "purpose needs, protect them as such, and keep a human in the loop for any action taken on "
    "a match (thresholds trade false matches against missed ones; see open-set verification).",
    "The datasets' licences apply: the public benchmarks are for non-commercial research, and "
    "some (DukeMTMC-reID) were withdrawn by their authors.",
)


@dataclass(frozen=True)
class RunRecords:
    """The files the card reads, read and checked."""

    metrics: dict[str, Any]
    train_config: dict[str, Any]
    training_sources: dict[str, dict[str, Any]]  # per source: fingerprint and the images used
    evaluation_data: dict[str, Any]  # fingerprint of the test set's dataset
    validation: dict[str, Any]
    verification: dict[str, Any] | None  # None: evaluate wrote none


def _object(path: Path, when_missing: str) -> dict[str, Any]:
    data = read_json_file(path, when_missing)
    if not isinstance(data, dict):
        raise ReidpipeError(f"{path}: expected a JSON object")
    return data


def read_train_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReidpipeError(f"{path} does not exist (run `reidpipe train` first)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ReidpipeError(f"{path} cannot be read as YAML: {exc}") from None
    missing = [
        key
        for key in ("model", "environment", "pretrained_weights")
        if not isinstance(config, dict) or key not in config
    ]
    if missing:
        raise ReidpipeError(
            f"{path}: lacks {missing} (expected the config `reidpipe train` writes)"
        )
    return config


def read_run_records(
    metrics: str | Path,
    train_config: str | Path,
    splits: str | Path,
    train_set: str | Path,
    validation: str | Path,
    verification: str | Path | None,
) -> RunRecords:
    """Read what the card is built from; each bad file is one error naming it."""
    metrics_data = _object(Path(metrics), " (run `reidpipe evaluate` first)")
    if "plain" not in metrics_data:
        raise ReidpipeError(f"{metrics}: lacks 'plain' (expected `reidpipe evaluate`'s metrics)")
    combined = _object(Path(train_set) / SOURCES_FILE, " (run `reidpipe combine` first)")
    sources = combined.get("sources")
    if not isinstance(sources, dict) or not all(
        isinstance(s, dict) and isinstance(s.get("splits"), str) for s in sources.values()
    ):
        raise ReidpipeError(
            f"{Path(train_set) / SOURCES_FILE}: expected 'sources' mapping each "
            "name to an object with its 'splits' folder"
        )
    evaluation_data = fingerprint_splits(splits)
    training = {}
    for name, used in sources.items():
        same = Path(used["splits"]).resolve() == Path(splits).resolve()
        training[name] = {
            "fingerprint": evaluation_data if same else fingerprint_splits(used["splits"]),
            "train_ids": used.get("train_ids"),
            "train_images": used.get("train_images"),
            "val_images": used.get("val_images"),
        }
    return RunRecords(
        metrics=metrics_data,
        train_config=read_train_config(train_config),
        training_sources=training,
        evaluation_data=evaluation_data,
        validation=_object(Path(validation), " (run `reidpipe validate` first)"),
        verification=(
            None
            if verification is None
            else _object(Path(verification), " (run `reidpipe evaluate` first)")
        ),
    )


def recipe_record(params: Params, arch: str) -> dict[str, Any]:
    """The training recipe's name and where it comes from: a published one as published, or
    the user's (with the keys that differ from the published recipe of that name). Its export
    overrides are not compared: they change no trained model."""
    recipe = dataclasses.asdict(params.recipe(arch))
    published = PUBLISHED_RECIPES.get(arch)
    if published is None:
        return {"name": arch, "source": f"user-defined (params archs.{arch})", "published": False}
    differs = sorted(
        f"archs.{arch}.{section}.{key}"
        for section in TRAINING_SECTIONS
        for values in (getattr(published, section),)
        for key in set(values) | set(recipe[section])
        if values.get(key) != recipe[section].get(key)
    )
    if differs:
        return {
            "name": arch,
            "published": False,
            "differs_from_published": differs,
            "source": f"{RECIPE_SOURCES[arch]}, changed in params: {', '.join(differs)}",
        }
    return {"name": arch, "source": RECIPE_SOURCES[arch], "published": True}


def recommended_threshold(verification: dict[str, Any] | None) -> dict[str, Any] | None:
    """The operating point at ``RECOMMENDED_FAR``, or None when no verification was measured."""
    if verification is None:
        return None
    for point in verification.get("operating_points") or []:
        if isinstance(point, dict) and point.get("far") == RECOMMENDED_FAR:
            return {
                "far": RECOMMENDED_FAR,
                "distance": verification.get("distance"),
                **{
                    key: point.get(key)
                    for key in ("threshold", "tar", "far_achieved", "no_match_accuracy", "why_null")
                },
            }
    raise ReidpipeError(
        f"verification figures lack the operating point at FAR "
        f"{RECOMMENDED_FAR} (expected `reidpipe evaluate`'s verification.json)"
    )


def _deployment(
    manifest: dict[str, Any], parity: dict[str, Any], trt: dict[str, Any]
) -> dict[str, Any]:
    def gate(entry: dict[str, Any] | None) -> dict[str, Any] | None:
        if not entry:
            return None
        rows = entry.get("batch_parity") or []
        return {
            "file": entry.get("file"),
            "status": entry.get("status") or "written",
            "reason": entry.get("reason"),
            "min_cosine": min((r["min_cosine"] for r in rows), default=None),
            "max_abs_diff": max((r["max_abs_diff"] for r in rows), default=None),
            "retrieval_delta_points": (entry.get("retrieval") or {}).get("delta_points"),
        }

    return {
        "input_contract": manifest["contract"],
        "formats": {
            "onnx_fp32": {
                **(gate(parity) or {}),
                "file": "model.onnx",
                "opset": parity.get("opset"),
            },
            "onnx_fp16": gate(parity.get("fp16")),
            "onnx_int8": gate(parity.get("int8")),
            "tensorrt": {
                "status": trt.get("status"),
                "reason": trt.get("reason"),
                "precision": trt.get("precision"),
                "parity": (trt.get("parity") or {}).get("retrieval"),
            },
        },
        "triton": manifest["triton"],
        "deepstream": {
            key: manifest["deepstream"].get(key)
            for key in (
                "config",
                "onnx",
                "networkMode",
                "offsets",
                "netScaleFactor",
                "folded_channel_scale",
            )
        },
    }


def _overview(arch: str, embedding_dim: int, distance: Any) -> dict[str, Any]:
    return {
        "name": arch,
        "description": "Person re-identification embedding model: one cropped person image "
        f"in, a {embedding_dim}-d appearance embedding out; two crops show "
        "the same person when their embeddings are close "
        f"({distance} distance).",
        "trained_by": "reidpipe (train, evaluate, export-onnx, build-trt, package)",
        "intended_use": "matching person crops across cameras (multi-camera tracking, "
        "DeepStream NvDCF re-association, gallery retrieval) where the "
        "deployment is lawful and consented; see ethical considerations",
    }


def _architecture(
    train_config: dict[str, Any], embedding_dim: int, recipe: dict[str, Any]
) -> dict[str, Any]:
    model = train_config["model"]
    return {
        "backbone": model.get("backbone"),
        "backbone_kwargs": model.get("backbone_kwargs"),
        "feat_dim": embedding_dim,
        "neck": model.get("neck"),
        "bnneck": model.get("neck") == "bnneck",
        "neck_feat": model.get("neck_feat"),
        "last_stride": model.get("last_stride"),
        "input": {
            "channels": model.get("input_channels"),
            "height": model.get("input_height"),
            "width": model.get("input_width"),
        },
        "losses": {
            "id": "cross-entropy" + (" with label smoothing" if model.get("label_smooth") else ""),
            "metric": model.get("metric_loss_type"),
            "center": bool(model.get("with_center_loss")),
        },
        "recipe": recipe,
        "pretrained_weights": train_config["pretrained_weights"],
    }


def _training_data(run: RunRecords) -> dict[str, Any]:
    return {
        "sources": run.training_sources,
        "validation": {
            key: run.validation.get(key)
            for key in ("dataset_dir", "strict", "valid", "num_problems")
        },
    }


def _evaluation_data(run: RunRecords) -> dict[str, Any]:
    plain = run.metrics["plain"]
    return {
        "dataset": run.evaluation_data,
        "protocol": PROTOCOL,
        "distance": plain.get("distance"),
        "ap_method": plain.get("ap_method"),
        "queries": plain.get("num_queries"),
        "skipped_queries": plain.get("num_skipped"),
        "re_ranking": (
            {key: run.metrics["reranked"].get(key) for key in ("k1", "k2", "lambda_value")}
            if "reranked" in run.metrics
            else None
        ),
    }


def _metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each ranking's (plain, re-ranked) figures."""
    return {
        ranking: {key: values.get(key) for key in METRIC_KEYS}
        for ranking, values in metrics.items()
        if isinstance(values, dict)
    }


def _open_set_verification(verification: dict[str, Any] | None) -> dict[str, Any] | None:
    if verification is None:
        return None
    return {
        "distance": verification.get("distance"),
        "genuine_pairs": verification.get("num_genuine_pairs"),
        "impostor_pairs": verification.get("num_impostor_pairs"),
        "known_queries": verification.get("num_known_queries"),
        "open_set_queries": verification.get("num_open_set_queries"),
        "open_set_fraction": verification.get("open_set_fraction"),
        "operating_points": [
            {
                key: point.get(key)
                for key in (
                    "far",
                    "threshold",
                    "tar",
                    "far_achieved",
                    "no_match_accuracy",
                    "why_null",
                )
            }
            for point in verification.get("operating_points") or []
        ],
        "recommended": recommended_threshold(verification),
    }


def build_card(
    arch: str,
    recipe: dict[str, Any],
    run: RunRecords,
    manifest: dict[str, Any],
    parity: dict[str, Any],
    trt: dict[str, Any],
) -> dict[str, Any]:
    """The card as a JSON-ready dict."""
    embedding_dim = manifest["contract"]["output"]["shape"][1]
    return {
        "model_overview": _overview(arch, embedding_dim, run.metrics["plain"].get("distance")),
        "architecture": _architecture(run.train_config, embedding_dim, recipe),
        "training_data": _training_data(run),
        "evaluation_data": _evaluation_data(run),
        "metrics": _metrics(run.metrics),
        "open_set_verification": _open_set_verification(run.verification),
        "inference_and_deployment": _deployment(manifest, parity, trt),
        "environment": run.train_config["environment"],
        "limitations": list(LIMITATIONS),
        "ethical_considerations": list(ETHICS),
    }


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _dataset_lines(fingerprint: dict[str, Any], splits: tuple[str, ...]) -> list[str]:
    version = fingerprint["version"]
    lines = [
        f"- source `{fingerprint['source']}` in `{fingerprint['dataset_dir']}`; release: "
        + (
            f"**{version['name']}** ({version['reason']})"
            if version["recognised"]
            else f"unrecognised ({version['reason']})"
        ),
        "",
        "| split | images | ids | junk | distractors | sha256 of (path, size) list |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s['images']} | {s['ids']} | {s['junk']} | {s['distractors']} | "
        f"`{s['sha256']}` |"
        for name, s in fingerprint["splits"].items()
        if name in splits
    ]
    return lines + [""]


def _section(heading: str, body: list[str]) -> list[str]:
    return [f"## {heading}", "", *body]


def _overview_section(overview: dict[str, Any]) -> list[str]:
    return _section(
        "Model overview",
        [
            overview["description"],
            "",
            f"- trained by: {overview['trained_by']}",
            f"- intended use: {overview['intended_use']}",
        ],
    )


def _architecture_section(arch: dict[str, Any]) -> list[str]:
    recipe = arch["recipe"]
    return _section(
        "Architecture",
        [
            f"- backbone `{arch['backbone']}`"
            + (f" ({arch['backbone_kwargs']})" if arch["backbone_kwargs"] else ""),
            f"- embedding: {arch['feat_dim']}-d, neck `{arch['neck']}` (BNNeck: "
            f"{'yes' if arch['bnneck'] else 'no'}, feature {arch['neck_feat']} it), last "
            f"stride {arch['last_stride']}",
            f"- input: {arch['input']['channels']} x {arch['input']['height']} x "
            f"{arch['input']['width']} (C x H x W)",
            f"- losses: {arch['losses']['id']}, {arch['losses']['metric']}"
            + (", center" if arch["losses"]["center"] else ""),
            f"- recipe `{recipe['name']}`: {recipe['source']}",
            f"- pretrained weights: {arch['pretrained_weights']}",
        ],
    )


def _training_section(training: dict[str, Any]) -> list[str]:
    """Each source's images and fingerprint, then the dataset's validation."""
    body = []
    for name, used in training["sources"].items():
        body += [
            f"### {name}: {used['train_images']} training images of {used['train_ids']} "
            f"ids, {used['val_images']} held out for validation",
            "",
        ]
        body += _dataset_lines(used["fingerprint"], ("train",))
    valid = training["validation"]
    body.append(
        f"Validation of `{valid['dataset_dir']}`: valid {valid['valid']}, strict "
        f"{valid['strict']}, {valid['num_problems']} problem(s)."
    )
    return _section("Training data", body)


def _evaluation_section(evaluation: dict[str, Any]) -> list[str]:
    rerank = evaluation["re_ranking"]
    protocol = (
        f"{evaluation['protocol']}. Distance: {evaluation['distance']}; AP: "
        f"{evaluation['ap_method']}; {evaluation['queries']} queries, "
        f"{evaluation['skipped_queries']} skipped (no true match). Re-ranking: "
        + (
            f"k-reciprocal (Zhong et al., CVPR 2017), k1 {rerank['k1']}, k2 {rerank['k2']}, "
            f"lambda {rerank['lambda_value']}."
            if rerank
            else "not run."
        )
    )
    return _section(
        "Evaluation data and protocol",
        [*_dataset_lines(evaluation["dataset"], ("query", "gallery")), protocol],
    )


def _metrics_section(metrics: dict[str, dict[str, Any]]) -> list[str]:
    rows = [
        f"| {ranking} | " + " | ".join(_pct(m[k]) for k in METRIC_KEYS) + " |"
        for ranking, m in metrics.items()
    ]
    return _section(
        "Metrics",
        ["| ranking | mAP | mINP | R1 | R5 | R10 | R20 |", "|---|---|---|---|---|---|---|", *rows],
    )


def _operating_point_row(point: dict[str, Any]) -> str:
    """One row of the verification table; a FAR without a threshold says why."""
    threshold = (
        f"none: {point['why_null'].get('threshold', '-')}"
        if point["threshold"] is None
        else f"{point['threshold']:.6g}"
    )
    far_achieved = "-" if point["far_achieved"] is None else f"{point['far_achieved']:.2g}"
    return (
        f"| {point['far']:g} | {threshold} | {_pct(point['tar'])} | {far_achieved} | "
        f"{_pct(point['no_match_accuracy'])} |"
    )


def _verification_section(verification: dict[str, Any] | None) -> list[str]:
    if verification is None:
        return _section(
            "Open-set verification",
            [
                "Not measured (`reidpipe evaluate` wrote no verification figures): no "
                "recommended threshold."
            ],
        )
    return _section(
        "Open-set verification",
        [
            f"{verification['genuine_pairs']} genuine and {verification['impostor_pairs']} "
            f"impostor pairs ({verification['distance']} distance); "
            f"{verification['known_queries']} known and "
            f"{verification['open_set_queries']} open-set queries.",
            "",
            "| FAR | threshold | TAR | FAR achieved | no-match accuracy |",
            "|---|---|---|---|---|",
            *map(_operating_point_row, verification["operating_points"]),
            "",
            "Recommended threshold: " + threshold_text(verification["recommended"]),
        ],
    )


def _format_row(name: str, entry: dict[str, Any] | None) -> str:
    """One ONNX graph's row of the formats table: its status and its parity with FP32."""
    if entry is None:
        return f"| {name} | disabled | - | - | - |"
    delta = entry["retrieval_delta_points"] or {}
    return (
        f"| {name} | {entry['status']}"
        + (f" ({entry['reason']})" if entry["reason"] else "")
        + f" | {entry['min_cosine']} | {entry['max_abs_diff']} | "
        f"{delta.get('mAP', '-')} / {delta.get('rank1', '-')} |"
    )


def _serving_lines(deploy: dict[str, Any]) -> list[str]:
    """TensorRT's outcome, and what Triton and DeepStream serve."""
    trt, triton, ds = deploy["formats"]["tensorrt"], deploy["triton"], deploy["deepstream"]
    return [
        f"TensorRT: {trt['status']}"
        + (f" ({trt['reason']})" if trt["reason"] else "")
        + (
            f", precision {trt['precision']}, retrieval vs ONNX Runtime {trt['parity']}"
            if trt["parity"]
            else ""
        )
        + ".",
        f"Triton: model `{triton['model']}` ({triton['platform']}, `{triton['model_file']}`, "
        f"max batch {triton['max_batch_size']}). DeepStream: `{ds['config']}` with "
        f"`{ds['onnx']}`, networkMode {ds['networkMode']}.",
    ]


def _deployment_section(deploy: dict[str, Any]) -> list[str]:
    contract = deploy["input_contract"]
    inp = contract["input"]
    return _section(
        "Inference and deployment formats",
        [
            f"Input `{inp['name']}` {' x '.join(map(str, inp['shape']))}, "
            f"{inp['channel_order']}, mean {inp['mean']}, std {inp['std']}; output "
            f"`{contract['output']['name']}` (not L2-normalised).",
            "",
            "| format | status | min cosine vs PyTorch/FP32 | max abs diff | mAP / R1 delta "
            "(points) |",
            "|---|---|---|---|---|",
            *(
                _format_row(name, deploy["formats"][name])
                for name in ("onnx_fp32", "onnx_fp16", "onnx_int8")
            ),
            "",
            *_serving_lines(deploy),
        ],
    )


def _environment_section(environment: dict[str, Any]) -> list[str]:
    return _section(
        "Environment",
        ["```yaml", yaml.safe_dump(environment, sort_keys=False).rstrip(), "```"],
    )


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, section by section, a blank line between two sections."""
    sections = [
        [f"# Model card: {card['model_overview']['name']}"],
        _overview_section(card["model_overview"]),
        _architecture_section(card["architecture"]),
        _training_section(card["training_data"]),
        _evaluation_section(card["evaluation_data"]),
        _metrics_section(card["metrics"]),
        _verification_section(card["open_set_verification"]),
        _deployment_section(card["inference_and_deployment"]),
        _environment_section(card["environment"]),
        _section("Limitations", [f"- {text}" for text in card["limitations"]]),
        _section(
            "Ethical considerations", [f"- {text}" for text in card["ethical_considerations"]]
        ),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def threshold_text(recommended: dict[str, Any] | None) -> str:
    """One sentence on the recommended threshold (the card's and the package README's)."""
    if recommended is None:
        return (
            "none: `reidpipe evaluate` measured no verification figures for this model; "
            "choose a threshold on labelled data from the deployment."
        )
    if recommended["threshold"] is None:
        why = (recommended.get("why_null") or {}).get("threshold", "no reason recorded")
        return f"none at FAR {recommended['far']:g} ({why})."
    distance = (
        "cosine distance (1 - cosine similarity) between the two embeddings"
        if recommended["distance"] == "cosine"
        else f"{recommended['distance']} distance between the two raw embeddings"
    )
    return (
        f"accept a match when the {distance} is <= {recommended['threshold']:.6g} (FAR "
        f"{recommended['far']:g} on the test set: {_pct(recommended['tar'])}% of true pairs "
        f"accepted, achieved FAR {recommended['far_achieved']:.2g}, "
        f"{_pct(recommended['no_match_accuracy'])}% of open-set queries rejected)."
    )
