"""Unit tests for removing a run's images: only `tb<rid>/...` names labelled with the run, after its containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import clean, ledger
from testbed.ledger import LABEL, Ledger


def test_image_is_a_ledger_kind(tmp_path: Path) -> None:
    Ledger("beef", state_dir=tmp_path).record("image", "tbbeef/tiny")
    assert [(r.kind, r.name) for r in ledger.read("beef", tmp_path)] == [("image", "tbbeef/tiny")]


def test_only_the_runs_prefixed_and_labelled_images() -> None:
    images = [
        (["tbbeef/tiny:latest"], {LABEL: "beef"}),
        (["tbbeef/large:latest", "user/keep:1"], {LABEL: "beef"}),  # a user's tag of it is left
        (["tbbeef/forged:latest"], {LABEL: "cafe"}),  # prefix but another run's label
        (["tbcafe/tiny:latest"], {LABEL: "cafe"}),
        (["tbbeef/unlabelled:latest"], {}),
        (["testbed/base:latest"], {LABEL: "beef"}),  # label but not the run's prefix
    ]
    assert clean.images_to_remove("beef", images) == ["tbbeef/large:latest", "tbbeef/tiny:latest"]


class _Img:
    def __init__(self, tags: list[str], labels: dict) -> None:
        self.tags, self.labels = tags, labels


class _Client:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.images = self
        self.containers = self

    def list(self, all: bool = False, filters: dict | None = None) -> list:  # noqa: A002
        if filters and filters.get("label") == f"{LABEL}=beef" and not all:
            return [_Img(["tbbeef/tiny:latest"], {LABEL: "beef"}), _Img(["other/x:1"], {LABEL: "beef"})]
        return [_Ctr(self.calls)]

    def get(self, name: str) -> _Img:
        if name == "tbbeef/large":
            return _Img(["tbbeef/large:latest"], {LABEL: "beef"})
        raise LookupError(name)

    def remove(self, tag: str, force: bool = False) -> None:
        self.calls.append(f"rmi {tag}")


class _Ctr:
    def __init__(self, calls: list[str]) -> None:
        self.calls, self.id, self.name, self.labels = calls, "c1", "tbbeefh1", {LABEL: "beef"}

    def remove(self, force: bool = False) -> None:
        self.calls.append(f"rm {self.name}")


def test_clean_run_removes_containers_then_images(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    book = Ledger("beef", state_dir=tmp_path)
    book.record("container", "tbbeefh1")
    book.record("image", "tbbeef/large")
    calls: list[str] = []
    monkeypatch.setattr(ledger, "STATE_DIR", tmp_path)
    monkeypatch.setattr(ledger, "RUN_ROOT", tmp_path / "run")
    monkeypatch.setattr(clean, "RUN_ROOT", tmp_path / "run")
    monkeypatch.setattr(clean, "_docker", lambda: _Client(calls))
    for step in ("_bridges", "_namespaces", "_interfaces"):
        monkeypatch.setattr(clean, step, lambda *a: None)
    monkeypatch.setattr(ledger, "read", lambda rid, state_dir=None, _r=ledger.read: _r(rid, tmp_path))
    out = clean.clean_run("beef")
    assert calls == ["rm tbbeefh1", "rmi tbbeef/large:latest", "rmi tbbeef/tiny:latest"]
    assert "image tbbeef/large:latest" in out.removed and not out.failed
