"""The controller's connection watcher: datapaths counted from os-ken's state changes."""

from __future__ import annotations

from types import SimpleNamespace

from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER

from testbed.connections import Connections


def event(dpid, state):
    return SimpleNamespace(datapath=SimpleNamespace(id=dpid), state=state)


def test_a_datapath_counts_from_main_state_until_it_dies() -> None:
    app = Connections()
    connected = app.northbound_handlers()["connected"]
    assert connected({}) == {"dpids": []}
    app.state_change(event(None, MAIN_DISPATCHER))  # before features: no id yet
    app.state_change(event(0xB, MAIN_DISPATCHER))
    app.state_change(event(0xA, MAIN_DISPATCHER))
    assert connected({}) == {"dpids": [0xA, 0xB]}
    app.state_change(event(0xB, DEAD_DISPATCHER))
    assert connected({}) == {"dpids": [0xA]}
    app.state_change(event(0xC, CONFIG_DISPATCHER))  # not subscribed to, but never counted if delivered
    assert 0xC not in connected({})["dpids"]
