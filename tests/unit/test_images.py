"""Image building logic that needs no Docker: apt mirrors, and what counts as an image's inputs."""

from __future__ import annotations

from pathlib import Path

from testbed import images


def test_apt_mirrors_from_one_line_and_deb822_files(tmp_path: Path):
    one = tmp_path / "sources.list"
    one.write_text("# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n"
                   "deb-src http://src.example/debian bookworm main\n"
                   "deb http://other.example/debian trixie main\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\n"
                      "Components: main\n\nTypes: deb\nURIs: http://sec.example/debian-security\n"
                      "Suites: bookworm-security\nComponents: main\n")
    assert images.apt_mirrors("bookworm", [one, deb822]) == ["http://mirror.example/debian",
                                                              "http://deb.example/debian"]
    assert images.apt_mirrors("noble", [one, deb822]) == []


def test_inputs_change_with_content_and_base_but_not_with_caches(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    first = images.context_inputs(tmp_path, "sha256:base1")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0\1")
    assert images.context_inputs(tmp_path, "sha256:base1") == first
    assert images.context_inputs(tmp_path, "sha256:base2") != first
    (tmp_path / "app.py").write_text("print(2)\n")
    assert images.context_inputs(tmp_path, "sha256:base1") != first


def test_every_image_builds_from_the_base_argument():
    for name in images.image_names():
        text = (images.IMAGES_DIR / name / "Dockerfile").read_text()
        assert "ARG BASE=testbed/base" in text and "FROM ${BASE}" in text, name
