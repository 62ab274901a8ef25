"""The one reader: same data as PyYAML for good files; bad files are SpecErrors at their place, fast and small."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import yaml

from testbed import yamlio
from testbed.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", sorted(ROOT.glob("topologies/*.yaml")) + sorted(ROOT.glob("experiments/*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_files_read_as_pyyaml_reads_them(path: Path) -> None:
    assert yamlio.load_yaml(path) == yaml.safe_load(path.read_text())


def test_anchors_merges_and_tags_still_work() -> None:
    text = "base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\nn: {<<: [*b, {z: 4}]}\no: !!str 5\nl: &l [1]\nq: *l\n"
    assert yamlio.parse_yaml(text, "t") == yaml.safe_load(text)


@pytest.mark.parametrize("text, where, message", [
    ("a: 1\nb:\n  c: 1\n  c: 2\n", "b.c", "duplicate key 'c' (line 4; first at line 3)"),
    ("l:\n - {x: 1}\n - {y: 1, y: 2}\n", "l[1].y", "duplicate key 'y'"),
    ("name: [unclosed\n", "line 2, column 1", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "line 2, column 1", "expected one YAML document"),
    ("a: &a [1, *a]\n", "line 1, column 11", "refers to a node that contains it"),
    ("a: *nope\n", "line 1, column 4", "has no anchor"),
    ("[" * 100_000 + "]" * 100_000, "line 1, column 65", "nested more than 64 levels"),
    ("a: !!python/object:os.system ls\n", "line 1, column 4", "could not determine a constructor"),
    ("a: \x01\n", "line 1, column 4", "character U+0001 is not allowed"),
    (laughs(9), "line 5, column 10", "aliases expand to more than 10000 nodes"),
])
def test_bad_documents_name_their_place(text: str, where: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        yamlio.parse_yaml(text, "f.yaml")
    assert err.value.path == where and message in err.value.message and err.value.source == "f.yaml", str(err.value)


def test_billion_laughs_fails_fast_and_small() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    with pytest.raises(SpecError, match="aliases expand"):
        yamlio.parse_yaml(laughs(30), "bomb.yaml")
    assert time.process_time() - t0 < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20 * 1024  # KiB


def test_a_few_aliases_are_fine() -> None:
    data = yamlio.parse_yaml(laughs(4), "ok.yaml")
    assert len(data["a3"]) == 9 and data["a3"][0][0][0] == data["a0"] == ["lol"] * 9


def test_file_checks(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (yamlio.MAX_BYTES + 1))
    with pytest.raises(SpecError, match=rf"^{big}: file is {yamlio.MAX_BYTES + 1} bytes; .* at most"):
        yamlio.load_yaml(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("a: 1\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"line 2, column 10: not UTF-8 text \(byte 0xe9\)"):
        yamlio.load_yaml(latin)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x7fELF\x02\x00\x00")
    with pytest.raises(SpecError, match=r"line 1, column 6: a binary file"):
        yamlio.load_yaml(binary)
    with pytest.raises(SpecError, match="cannot read"):
        yamlio.load_yaml(tmp_path)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffa: 1\n".encode())
    assert yamlio.load_yaml(bom) == {"a": 1}
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert yamlio.load_yaml(empty) is None


def test_json_duplicate_keys_and_syntax(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"a": 1, "b": {"c": 1, "c": 2}}')
    with pytest.raises(SpecError, match=r"c\.json: c: duplicate key"):
        yamlio.load_json(f)
    f.write_text('{"a": 1,\n "b": }')
    with pytest.raises(SpecError, match="line 2, column 7: not valid JSON"):
        yamlio.load_json(f)
    f.write_text('{"a": [1, 2]}')
    assert yamlio.load_json(f) == {"a": [1, 2]}
