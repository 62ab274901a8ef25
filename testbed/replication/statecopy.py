"""Copies a directory over TCP as a tar stream: `python -m testbed.replication.statecopy recv|send ...`.

Run inside the replicas' network namespaces (nsenter -n, the machine's file system), so the bytes
cross the emulated network between the two hosts, with its shaping:

    recv ADDR PORT DIR      listen on ADDR:PORT, print "ready", take one stream, unpack it into DIR,
                            print "done BYTES"
    send ADDR PORT DIR      pack DIR and send it to ADDR:PORT, print "sent BYTES"
"""

from __future__ import annotations

import io
import socket
import sys
import tarfile
from pathlib import Path


class _Counting(io.RawIOBase):
    """A socket as a file that counts what passes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.count = sock, 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        n = self.sock.recv_into(buf)
        self.count += n
        return n

    def write(self, data) -> int:  # type: ignore[override]
        self.sock.sendall(data)
        self.count += len(data)
        return len(data)


def recv(addr: str, port: int, target: Path, timeout: float = 60.0) -> int:
    """Take one tar stream on addr:port and unpack it into `target`; the bytes received."""
    with socket.create_server((addr, port)) as srv:
        srv.settimeout(timeout)
        print("ready", flush=True)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(timeout)
            stream = _Counting(conn)
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:  # only plain files and directories inside `target` (no links, no ../)
                    parts = Path(member.name).parts
                    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                        continue
                    tar.extract(member, target)
            while conn.recv(65536):  # the end-of-archive padding tar's reader left
                pass
            return stream.count


def send(addr: str, port: int, source: Path, timeout: float = 60.0) -> int:
    """Send `source` (a directory) as a tar stream to addr:port; the bytes sent."""
    with socket.create_connection((addr, port), timeout=timeout) as conn:
        stream = _Counting(conn)
        with tarfile.open(fileobj=stream, mode="w|") as tar:
            if source.is_dir():
                for item in sorted(source.iterdir()):
                    tar.add(item, arcname=item.name)
        conn.shutdown(socket.SHUT_WR)
        return stream.count


def main(argv: list[str]) -> int:
    """The command line: recv|send ADDR PORT DIR."""
    if len(argv) != 4 or argv[0] not in ("recv", "send"):
        print("usage: statecopy recv|send ADDR PORT DIR", file=sys.stderr)
        return 2
    mode, addr, port, path = argv[0], argv[1], int(argv[2]), Path(argv[3])
    if mode == "recv":
        print(f"done {recv(addr, port, path)}", flush=True)
    else:
        print(f"sent {send(addr, port, path)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
