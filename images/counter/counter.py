"""A stateful UDP counter: every request increments a counter kept in its state directory.

A prober request (``REQ <seq> <ns>``) is answered ``REQ <seq> <ns> @<node> n=<count>``; ``get``
is answered with the count without counting. The state is ``counter`` (the count) and ``rib``
(a table of RIB_BYTES rewritten at each update, as a router's routing table), both replaced
atomically, and ``ballast`` (BALLAST_BYTES, or the first argument, written once: state that
does not change). At start
the count is read back from the state directory, so a copy of it carries the service's state.
"""

import os
import socket
import sys

STATE = os.environ.get("STATE_DIR", "/srv/counter")
PORT = int(os.environ.get("PORT", "7100"))
RIB = int(os.environ.get("RIB_BYTES", "4096"))
BALLAST = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BALLAST_BYTES", "0"))
NODE = os.environ.get("TB_NODE") or socket.gethostname()


def replace(name: str, data: bytes) -> None:
    tmp = os.path.join(STATE, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(STATE, name))


def main() -> None:
    os.makedirs(STATE, exist_ok=True)
    try:
        with open(os.path.join(STATE, "counter")) as f:
            count = int(f.read().strip() or 0)
    except (OSError, ValueError):
        count = 0
    ballast = os.path.join(STATE, "ballast")
    if BALLAST and not os.path.exists(ballast):
        replace("ballast", os.urandom(BALLAST))
    print(f"counter on udp {PORT}, starting at {count}", flush=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", PORT))
    line = (b"%d " * 8 + b"\n")
    while True:
        data, peer = sock.recvfrom(65535)
        body = data.rstrip(b"\n")
        if body == b"get":
            sock.sendto(b"%d\n" % count, peer)
            continue
        count += 1
        rib = (line % tuple([count] * 8)) * (RIB // 64 + 1)
        replace("rib", rib[:RIB])
        replace("counter", b"%d\n" % count)
        sock.sendto(body + b" @" + NODE.encode() + b" n=%d\n" % count, peer)


if __name__ == "__main__":
    sys.exit(main())
