"""The state agent, run inside a service's container (`python3 -c`, stdlib only): sends and receives its state.

Every byte goes over the emulated network between the two hosts (a TCP connection from the
source's migration address to the destination's), so the WAN's rate and delay apply. It also runs
on the machine in a host's network namespace (`transfer.host_argv`), for directories of the
machine's file system (a replica's state under /proc/PID/root, an image archive). DIR's files are
taken recursively (names starting with "." left out); only plain files and directories inside DIR
are extracted. Frames are a 4-byte header length, a JSON header, an 8-byte payload length and a
tar of state files. `send` streams its frame: the tar's length is computed from the files' sizes,
then the tar is written to the socket as the files are read (no archive in memory); `recv` extracts
each frame's tar as it arrives. Each line the agent prints on stdout is one JSON object.

    send SRC_IP DST_IP PORT DIR                 one frame with every file of DIR, then exit
    recv PORT DIR ONCE LOST_S                   extract each frame into DIR; ONCE=1: exit after one;
                                                after a first frame, LOST_S without one prints {"lost"}, exits
    checkpoint SRC_IP DST_IP PORT DIR INTERVAL_S  every interval a frame of the files changed since the last
"""

import io
import json
import os
import socket
import struct
import sys
import tarfile
import time

TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}  # members checked here


def say(**fields):
    print(json.dumps(fields), flush=True)


def files_of(root):
    """The regular files under `root` as sorted relative paths (names starting with "." left out)."""
    out = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(top, root)
        for name in files:
            path = name if rel == "." else os.path.join(rel, name)
            if not name.startswith(".") and os.path.isfile(os.path.join(root, path)):
                out.append(path)
    return sorted(out)


def snapshot(root, seen):
    """A tar of the files under `root` whose (mtime, size) differ from `seen` (updated); (bytes, count)."""
    buf = io.BytesIO()
    n = 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in files_of(root):
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
                key = (st.st_mtime_ns, st.st_size)
                if seen is not None and seen.get(name) == key:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(st.st_mtime)
            tar.addfile(info, io.BytesIO(data))
            if seen is not None:
                seen[name] = key
            n += 1
        end = tar.offset  # after the last member: keep the two end blocks, not the 10 KiB record padding
    return buf.getvalue()[:end + 1024], n


def counter_of(root):
    try:
        with open(os.path.join(root, "counter")) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


def frame(header, payload):
    head = json.dumps(header).encode()
    return struct.pack("!I", len(head)) + head + struct.pack("!Q", len(payload)) + payload


def read_exact(conn, n):
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(min(n - len(out), 1 << 20))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def connect(src, dst, port, deadline):
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.settimeout(2.0)
        try:
            s.connect((dst, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def plan(root):
    """The files under `root` to stream as (name, path, TarInfo), and the exact length of their tar."""
    members, size = [], 0
    for name in files_of(root):
        path = os.path.join(root, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        info = tarfile.TarInfo(name)
        info.size, info.mtime = st.st_size, int(st.st_mtime)
        size += len(info.tobuf(tarfile.DEFAULT_FORMAT, tarfile.ENCODING, "surrogateescape"))
        size += -(-st.st_size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        members.append((name, path, info))
    return members, size + 2 * tarfile.BLOCKSIZE


class Wire:
    """A file-like sink that sends what tar writes to the socket, up to `limit` bytes (no record padding)."""

    def __init__(self, sock, limit):
        self.sock, self.limit, self.sent = sock, limit, 0

    def write(self, data):
        part = bytes(data[:max(self.limit - self.sent, 0)])
        if part:
            self.sock.sendall(part)
        self.sent += len(part)
        return len(data)

    def tell(self):
        return self.sent


def send(src, dst, port, root):
    """One frame streamed: the tar is written to the socket as it is read from disk (no archive in memory)."""
    t0 = time.time()
    members, size = plan(root)
    t1 = time.time()
    s = connect(src, dst, int(port), t0 + 10)
    s.settimeout(120)
    t2 = time.time()
    head = json.dumps({"seq": 1, "taken": t1, "counter": counter_of(root), "files": len(members)}).encode()
    s.sendall(struct.pack("!I", len(head)) + head + struct.pack("!Q", size))
    wire = Wire(s, size)
    with tarfile.open(fileobj=wire, mode="w", copybufsize=1 << 20) as tar:
        for _name, path, info in members:
            with open(path, "rb") as f:
                tar.addfile(info, f)
    if wire.sent != size:
        raise RuntimeError(f"streamed {wire.sent} bytes, announced {size}")
    s.shutdown(socket.SHUT_WR)
    s.recv(16)  # the receiver closes once it has extracted everything: the state is there
    t3 = time.time()
    say(bytes=size, files=len(members), export_s=t1 - t0, connect_s=t2 - t1, transfer_s=t3 - t2)


class Payload:
    """A file-like view of the next `size` bytes of the connection (read as tar extracts)."""

    def __init__(self, conn, size):
        self.conn, self.left = conn, size

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        if n <= 0:
            return b""
        chunk = self.conn.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError
        self.left -= len(chunk)
        return chunk

    def drain(self):
        while self.read(1 << 20):
            pass


def safe(m):
    """A member that stays inside the target: a plain file or directory, no absolute path, no ".."."""
    return (m.isfile() or m.isdir()) and not m.name.startswith("/") and ".." not in m.name.split("/")


def recv(port, root, once, lost_s):
    os.makedirs(root, exist_ok=True)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(port)))
    ls.listen(1)
    say(listening=int(port), pid=os.getpid())
    conn, _ = ls.accept()
    lost = float(lost_s)
    while True:
        conn.settimeout(lost if lost > 0 else None)
        try:
            head = read_exact(conn, struct.unpack("!I", read_exact(conn, 4))[0])
            size = struct.unpack("!Q", read_exact(conn, 8))[0]
            payload = Payload(conn, size)
            with tarfile.open(fileobj=payload, mode="r|") as tar:  # extracted as it arrives
                for member in tar:
                    if safe(member):
                        tar.extract(member, root, **TRUSTED)
            payload.drain()
        except (socket.timeout, EOFError, OSError, tarfile.ReadError) as exc:
            say(lost=time.time(), why=type(exc).__name__)
            return
        header = json.loads(head)
        say(received=time.time(), bytes=size, **header)
        if once == "1":
            conn.close()
            return


def checkpoint(src, dst, port, root, interval_s):
    interval = float(interval_s)
    s = connect(src, dst, int(port), time.time() + 10)
    s.settimeout(max(5 * interval, 2.0))
    say(connected=time.time(), pid=os.getpid())
    seen = {}
    seq = 0
    start = time.time()
    while True:
        seq += 1
        payload, files = snapshot(root, seen)
        taken = time.time()
        try:
            s.sendall(frame({"seq": seq, "taken": taken, "counter": counter_of(root), "files": files}, payload))
        except OSError as exc:
            say(error=str(exc), seq=seq)
            return
        say(seq=seq, taken=taken, bytes=len(payload), files=files)
        time.sleep(max(start + seq * interval - time.time(), 0))


if __name__ == "__main__":
    {"send": send, "recv": recv, "checkpoint": checkpoint}[sys.argv[1]](*sys.argv[2:])
