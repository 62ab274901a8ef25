"""The Vagrantfile is valid and provisions with the same set-up script as the Makefile."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vagrant_validate():
    done = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


def test_vagrant_and_make_share_one_setup_script():
    assert "scripts/setup.sh" in (ROOT / "Vagrantfile").read_text()
    assert "scripts/setup.sh" in (ROOT / "Makefile").read_text()
    assert "ubuntu-24.04" in (ROOT / "Vagrantfile").read_text()
