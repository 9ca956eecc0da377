"""Files a module reads at run time (``CODE_DATA_FILES``) are part of a stage's code: editing the
package README template reruns the package stage, like editing its Python."""

from __future__ import annotations

import pytest
from support import write_tree

from reidpipe import code_deps

TEMPLATE = "reidpipe/deploy/templates/package_readme.md"
PACKAGE_STAGE = ["reidpipe.cli", "reidpipe.cli.package"]


def test_the_readme_template_is_code_of_the_package_stage_only():
    assert TEMPLATE in code_deps.code_files(PACKAGE_STAGE)
    assert TEMPLATE not in code_deps.code_files(["reidpipe.cli", "reidpipe.cli.evaluate"])
    # DVC tracks reidpipe/deploy as a folder, template included.
    assert "reidpipe/deploy" in code_deps.code_packages(PACKAGE_STAGE)


def test_listed_files_join_the_closure(tmp_path):
    files = {
        "reidpipe/cli/__init__.py": "",
        "reidpipe/cli/go.py": (
            "def run():\n    from reidpipe import texts\n    from reidpipe.deploy import pack\n"
        ),
        "reidpipe/texts.py": 'NOTE = "notes/note.txt"\nCODE_DATA_FILES = (NOTE, "other.txt")\n',
        "reidpipe/notes/note.txt": "",
        "reidpipe/other.txt": "",
        "reidpipe/deploy/__init__.py": "",
        "reidpipe/deploy/pack.py": 'CODE_DATA_FILES = ("templates/readme.md",)\n',
        "reidpipe/deploy/templates/readme.md": "",
    }
    write_tree(tmp_path, files)
    entries = ["reidpipe.cli", "reidpipe.cli.go"]
    assert code_deps.code_files(entries, tmp_path) == sorted(files)
    assert code_deps.code_packages(entries, tmp_path) == [
        "reidpipe/cli/__init__.py",
        "reidpipe/cli/go.py",
        "reidpipe/deploy",
        "reidpipe/notes/note.txt",
        "reidpipe/other.txt",
        "reidpipe/texts.py",
    ]

    (tmp_path / "reidpipe/other.txt").unlink()
    with pytest.raises(
        ValueError,
        match=r"texts.py: CODE_DATA_FILES names missing files "
        r"\['.*reidpipe/other.txt'\]",
    ):
        code_deps.code_files(entries, tmp_path)
