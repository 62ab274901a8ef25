"""veth.peer_elsewhere: which NIC host port gets its host-bound frames with bpf_redirect_peer (read from `ip -j -d link`)."""

from __future__ import annotations

import json

import pytest

from testbed import proc
from testbed.links import veth


def _link(monkeypatch: pytest.MonkeyPatch, rc: int, out: str) -> None:
    monkeypatch.setattr(proc, "run", lambda argv, **kw: proc.Result(list(argv), rc, out, ""))


@pytest.mark.parametrize("link, want", [
    ({"ifname": "nic-h", "link_netnsid": 0, "linkinfo": {"info_kind": "veth"}}, True),
    ({"ifname": "nic-h", "linkinfo": {"info_kind": "veth"}}, False),           # peer in the same namespace
    ({"ifname": "nic-h", "link_netnsid": 3, "linkinfo": {"info_kind": "vxlan"}}, False),  # not a veth
    ({"ifname": "nic-h", "link_netnsid": 1}, False),                          # no linkinfo at all
])
def test_peer_elsewhere_needs_a_veth_with_its_peer_in_another_namespace(monkeypatch, link, want):
    _link(monkeypatch, 0, json.dumps([link]))
    assert veth.peer_elsewhere("nic-h") is want


@pytest.mark.parametrize("rc, out", [(1, ""), (0, "not json"), (0, "[]")])
def test_peer_elsewhere_is_false_when_ip_cannot_say(monkeypatch, rc, out):
    _link(monkeypatch, rc, out)
    assert veth.peer_elsewhere("nic-h") is False
