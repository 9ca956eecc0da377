"""The provenance record of each job (``reidpipe.provenance``): what its outputs record when built
from the params and code as they are now, whether the outputs on disk were built so, and the
recorder a stage run given ``--provenance`` writes with. Snakemake, DVC and the stage itself
compute it here alike."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reidpipe import code_deps
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import PROVENANCE_SUFFIX
from reidpipe.params import params_from_dict
from reidpipe.provenance import Provenance, code_digests, differences
from reidpipe.provenance import read as read_provenance
from reidpipe.stages.table import STAGES, stage
from reidpipe.stages.tracked import resolve, tracked_values, wildcard_values


def job_provenance(config: Mapping[str, Any], name: str, **wildcards: str) -> Provenance:
    """What the outputs of job ``name`` (with ``wildcards``) record when built under ``config``
    from the code as it is now: the one computation Snakemake, DVC and the stage share."""
    return Provenance(
        stage=name,
        wildcards=dict(sorted(wildcards.items())),
        params=tracked_values(config, name, **wildcards),
        code=code_digests(stage(name).code_files(), code_deps.ROOT),
    )


def job_outputs(config: Mapping[str, Any], name: str, **wildcards: str) -> dict[str, str]:
    """The job's output paths, its provenance record last."""
    return {
        key: resolve(out.path, config).format(**wildcards)
        for key, out in stage(name).outputs_under(params_from_dict(config)).items()
    }


def stale_provenance(
    config: Mapping[str, Any], name: str, **wildcards: str
) -> tuple[str, list[str]] | None:
    """Why the job's existing outputs must be rebuilt: its provenance file and what differs from
    the record ``config`` and the code give now. None when they match, or when no output is
    there (the job runs anyway)."""
    outputs = job_outputs(config, name, **wildcards)
    if not any(os.path.lexists(path) for path in outputs.values()):
        return None
    expected = job_provenance(config, name, **wildcards)
    recorded = read_provenance(outputs["provenance"])
    if recorded is not None and recorded["fingerprint"] == expected.fingerprint:
        return None
    return outputs["provenance"], differences(recorded, expected)


def _template_regex(template: str, config: Mapping[str, Any]) -> re.Pattern:
    """``template`` with each ``{wildcard}`` matching exactly that wildcard's values."""
    pieces = re.split(r"(?<!\$)\{(\w+)\}", os.path.normpath(template))
    seen: set[str] = set()
    regex = ""
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            regex += re.escape(piece)
        elif piece in seen:
            regex += f"(?P={piece})"
        else:
            seen.add(piece)
            choices = "|".join(map(re.escape, wildcard_values(config, piece))) or "(?!)"
            regex += f"(?P<{piece}>{choices})"
    return re.compile(regex)


def provenance_recorder(path: str, config: Mapping[str, Any]) -> Callable[[], None]:
    """For a stage run given ``--provenance PATH`` and the params ``config``: removes any record
    at ``path`` (a failed run leaves none) and returns what writes the run's record once it has
    succeeded. The job is the one whose provenance file ``path`` is; its record is computed
    before the run, from the params and code the run starts with."""
    wanted = os.path.normpath(os.path.relpath(path) if os.path.isabs(path) else path)
    for st in STAGES:
        template = resolve(st.all_outputs["provenance"].path, config)
        match = _template_regex(template, config).fullmatch(wanted)
        if match:
            record = job_provenance(config, st.name, **match.groupdict())
            Path(path).unlink(missing_ok=True)
            return lambda: record.write(path)
    raise ReidpipeError(
        f"--provenance {path}: no job of the pipeline writes it under these params (a job's "
        f"provenance file is its first output + {PROVENANCE_SUFFIX}, e.g. "
        f"{resolve(stage('validate').all_outputs['provenance'].path, config)})"
    )
