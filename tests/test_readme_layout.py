"""The README's layout table names every module of the project, in the row of its folder."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "studies", "sweeps", "analysis")


def layout_rows() -> dict[str, str]:
    """{folder: its row's description} from the table under ``## Layout``."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)/` \| (.*) \|$", section, re.MULTILINE)}


def test_every_module_is_in_its_folders_row():
    rows = layout_rows()
    missing = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            folder = str(path.parent.relative_to(REPO))
            if f"`{path.name}`" not in rows.get(folder, ""):
                missing.append(f"{path.relative_to(REPO)} (row `{folder}/`)")
    assert not missing, "README.md's layout table does not name: " + ", ".join(missing)


def test_every_row_names_a_folder_that_exists():
    assert set(layout_rows()) >= set(PACKAGES)
    assert [folder for folder in layout_rows() if not (REPO / folder).is_dir()] == []
