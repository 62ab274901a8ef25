"""Unit tests of the control protocol's request handling (no sockets on interfaces, no root)."""

from __future__ import annotations

import json
import os

from testbed.control import answer, encode_request
from testbed.linkemu import control
from testbed.links.userspace import check_shape, in_netns_args, shape_to_wire
from testbed.errors import SpecError
from testbed.topology.model import Shape

import pytest


class FakeLink:
    def __init__(self, link_id):
        from testbed.linkemu.schedule import Direction, ShapeParams
        import random
        self.link_id = link_id
        self.forward = Direction(ShapeParams(), random.Random(0))
        self.reverse = Direction(ShapeParams(), random.Random(0))


class FakeEngine:
    """Records what the handler asked for, in place of the packet engine."""

    def __init__(self):
        self.links = {}
        self.calls = []
        self.running = True

    def add_link(self, link_id, a, b, fwd, rev, seed):
        if link_id in self.links:
            raise ValueError("exists")
        self.links[link_id] = FakeLink(link_id)
        self.calls.append(("add", link_id, a, b, fwd, rev, seed))

    def link(self, link_id):
        if link_id not in self.links:
            raise ValueError(f"no link {link_id!r}")
        return self.links[link_id]

    def set_shape(self, link_id, fwd, rev):
        self.calls.append(("set", link_id, fwd, rev))

    def set_up(self, link_id, up):
        self.link(link_id)
        self.calls.append(("up" if up else "down", link_id))

    def remove_link(self, link_id):
        self.link(link_id)
        del self.links[link_id]

    def stats(self, link_id=None):
        return {"n": len(self.links)}


def ask(eng, cmd, **args):
    """One request through the shared protocol to the emulator's handlers: the decoded reply."""
    return json.loads(answer(control.make_handlers(eng), encode_request(cmd, args)))


def test_add_set_up_down_remove():
    eng = FakeEngine()
    assert ask(eng, "add", link_id="l1", a="le0a", b="le0b", forward={"delay_ms": 10}, seed=3) == \
        {"ok": True, "result": {"link_id": "l1"}}
    op, _, a, b, fwd, rev, seed = eng.calls[-1]
    assert (a, b, fwd.delay_s, rev.delay_s, seed) == ("le0a", "le0b", 0.010, 0.0, 3)
    assert ask(eng, "set", link_id="l1", reverse={"loss_pct": 50})["ok"]
    _, _, fwd, rev = eng.calls[-1]
    assert fwd is None and rev.loss == 0.5
    assert ask(eng, "down", link_id="l1")["result"] == {"link_id": "l1", "up": False}
    assert ask(eng, "up", link_id="l1")["ok"]
    assert eng.calls[-2:] == [("down", "l1"), ("up", "l1")]
    assert ask(eng, "stats") == {"ok": True, "result": {"n": 1}}
    assert ask(eng, "remove", link_id="l1")["ok"] and eng.links == {}
    assert ask(eng, "shutdown")["ok"] and eng.running is False


@pytest.mark.parametrize("cmd,args,message", [
    ("nope", {}, "unknown command 'nope'; known: add, down, ping, remove, set, shutdown, stats, up"),
    ("add", {"link_id": "l1"}, "add: a: expected a non-empty string, got None"),
    ("add", {"link_id": "l1", "a": "x", "b": "y", "forward": {"delay_ms": -5}}, "add: delay_ms: -5"),
    ("add", {"link_id": "l1", "a": "x", "b": "y", "seed": 1.5}, "add: seed: expected an integer or a string"),
    ("set", {"link_id": "missing", "forward": {}}, "set: no link 'missing'"),
    ("down", {}, "down: link_id: expected a non-empty string"),
    ("remove", {"link_id": 7}, "remove: link_id: expected a non-empty string, got 7"),
])
def test_bad_requests_get_an_error_reply(cmd, args, message):
    reply = ask(FakeEngine(), cmd, **args)
    assert reply["ok"] is False and reply["error"].startswith(message)


@pytest.mark.parametrize("line", [b"null", b"[]", b'"ping"', b'{"op": "ping"}', b"\xff\xfe"])
def test_malformed_requests_get_an_error_reply(line):
    reply = json.loads(answer(control.make_handlers(FakeEngine()), line))
    assert reply["ok"] is False and reply["error"].startswith("bad request")


def test_ping():
    assert ask(FakeEngine(), "ping") == {"ok": True, "result": {"pid": os.getpid(), "links": 0}}


def test_shape_to_wire_and_check():
    wire = shape_to_wire(Shape(bw_mbit=10, delay_ms=25, jitter_ms=1, loss_pct=2, queue_pkts=100))
    assert wire == {"bw_mbit": 10, "delay_ms": 25, "jitter_ms": 1, "loss_pct": 2, "queue_pkts": 100}
    with pytest.raises(SpecError) as exc:
        check_shape(Shape(delay_ms=-3), "links.l1.forward")
    assert "links.l1.forward" in str(exc.value)


def test_in_netns_args():
    assert in_netns_args(None, ["ip", "link"]) == ["ip", "link"]
    assert in_netns_args(42, ["ip", "link"]) == ["nsenter", "--target=42", "--net", "ip", "link"]


def test_server_survives_garbage_and_answers_over_the_socket(tmp_path):
    import socket
    import stat
    import threading

    from testbed.control import call
    from testbed.errors import TestbedError
    from testbed.linkemu.control import serve
    from testbed.linkemu.engine import Engine

    eng = Engine(seed=1)
    path = tmp_path / "ctl.sock"
    t = threading.Thread(target=serve, args=(eng, path), kwargs={"on_stop": eng.close}, daemon=True)
    t.start()
    for _ in range(200):  # readiness: the socket answers
        try:
            call(path, "ping")
            break
        except TestbedError:
            import time
            time.sleep(0.01)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(str(path))
    raw.sendall(b"not json\n{\"op\": 5}\n\xff\xfe\n")
    replies = b""
    while replies.count(b"\n") < 3:
        replies += raw.recv(4096)
    assert replies.count(b'"ok": false') == 3
    raw.close()
    with pytest.raises(TestbedError, match="no link"):
        call(path, "down", link_id="ghost")
    with pytest.raises(TestbedError, match="no interface"):
        call(path, "add", link_id="l1", a="no-such-if0", b="no-such-if1")
    assert call(path, "ping")["links"] == 0  # still alive
    call(path, "shutdown")
    t.join(timeout=5)
    assert not t.is_alive() and not path.exists()
