"""Unit tests of the controller launcher's pure parts: app lookup, /proc parsing, ovs-vsctl JSON."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from testbed.controller import (
    REPO_ROOT,
    Controller,
    connection_status,
    free_port,
    listening_inodes,
    resolve_app,
)
from testbed import errors

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 00000000:1A0B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:9C40 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1
   3: 0200007F:9C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1
"""


def test_listening_inodes_matches_host_and_port_in_listen_state() -> None:
    assert listening_inodes(TCP, "127.0.0.1", 0x9C40) == {"111"}  # not the ESTABLISHED 333
    assert listening_inodes(TCP, "127.0.0.1", 0x1A0B) == {"222"}  # 0.0.0.0 counts
    assert listening_inodes(TCP, "127.0.0.1", 0x9C41) == set()  # 127.0.0.2 does not


def test_resolve_default_app_from_repo_root() -> None:
    module, root = resolve_app("controllers/l2_switch.py")
    assert module == "controllers.l2_switch" and root == REPO_ROOT


def test_resolve_module_name_passes_through() -> None:
    assert resolve_app("controllers.l2_switch") == ("controllers.l2_switch", None)


def test_resolve_loose_file(tmp_path: Path) -> None:
    app = tmp_path / "myapp.py"
    app.write_text("")
    assert resolve_app(str(app)) == ("myapp", tmp_path)


def test_resolve_missing_file_is_an_error() -> None:
    with pytest.raises(errors.TestbedError, match="no such file"):
        resolve_app("controllers/nope.py")


def _bridges(rows) -> str:
    return json.dumps({"headings": ["name", "controller"], "data": rows})


def _controllers(rows) -> str:
    return json.dumps({"headings": ["_uuid", "is_connected"], "data": rows})


def test_connection_status_single_set_and_none() -> None:
    bridges = _bridges([
        ["b1", ["uuid", "u1"]],
        ["b2", ["set", [["uuid", "u2"], ["uuid", "u3"]]]],
        ["b3", ["set", []]],
        ["b4", ["uuid", "u4"]],
    ])
    ctls = _controllers([[["uuid", "u1"], True], [["uuid", "u2"], True],
                         [["uuid", "u3"], False], [["uuid", "u4"], False]])
    assert connection_status(bridges, ctls) == {"b1": True, "b2": False, "b3": False, "b4": False}


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_unstarted_controller_has_no_target_and_stop_is_harmless() -> None:
    ctl = Controller()
    with pytest.raises(errors.TestbedError):
        ctl.target
    ctl.stop()
    assert not ctl.alive()
