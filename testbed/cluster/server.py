"""The one command door to a server: a command for `localhost` runs here, any other goes over ssh.

Both go through testbed/proc.py as argument lists; the remote side gets `shlex.join(argv)`, so it
is split back into the same list by the server's shell. ssh runs with BatchMode (never a password
prompt), the server's key, port and known_hosts file when given, and a connect timeout; a failure is
a CommandError with ssh's own stderr (exit status 255: ssh itself could not connect).

While a run holds a master connection to the server (`control_path`, made by the Cluster), short
commands (`run`) are multiplexed over it (~0.1 s a command here instead of ~0.3 s for a new
connection), at most MUX_SESSIONS at a time (sshd's MaxSessions defaults to 10); without the
master ssh connects on its own. Long-lived sessions (shells, tunnels, forwards) never use it.
"""

from __future__ import annotations

import logging
import shlex
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

from testbed import proc
from testbed.ledger import start_in_stat
from testbed.topology.model import LOCAL_SERVER, ServerSpec

if TYPE_CHECKING:
    from testbed.ledger import Ledger

log = logging.getLogger(__name__)

#: Seconds ssh waits for the TCP connection and the handshake.
CONNECT_TIMEOUT_S = 5
#: Commands multiplexed over one master connection at once (below sshd's default MaxSessions 10).
MUX_SESSIONS = 8
_mux_slots: dict[str, threading.BoundedSemaphore] = {}
_mux_lock = threading.Lock()


def _slots(path: str) -> threading.BoundedSemaphore:
    with _mux_lock:
        return _mux_slots.setdefault(path, threading.BoundedSemaphore(MUX_SESSIONS))


@dataclass(frozen=True)
class Server:
    """Where commands run: this machine (`address` None) or a server reached over ssh."""

    name: str = LOCAL_SERVER
    address: str | None = None
    user: str = "root"
    key: str | None = None
    port: int = 22
    known_hosts: str | None = None
    control_path: str | None = None  # a run's master connection, for short commands (not recorded)

    @classmethod
    def of(cls, spec: ServerSpec | None) -> "Server":
        """The server a spec names; None (a site on LOCAL_SERVER) is this machine."""
        if spec is None:
            return cls()
        return cls(spec.name, spec.address, spec.user, spec.key, spec.port, spec.known_hosts)

    @classmethod
    def from_record(cls, record: dict) -> "Server":
        """The server a ledger record describes (`record()`)."""
        keys = ("name", "address", "user", "key", "port", "known_hosts")
        return cls(**{k: record[k] for k in keys if k in record})

    def record(self) -> dict:
        """What the ledger keeps so that cleanup can reach this server after the run is gone."""
        return {k: v for k, v in asdict(self).items() if k != "control_path"}

    @property
    def local(self) -> bool:
        return self.address is None

    @property
    def destination(self) -> str:
        """`user@address`, as ssh takes it."""
        return f"{self.user}@{self.address}"

    def ssh_options(self, mux: bool = False) -> list[str]:
        """ssh's options for this server (no destination, no command): BatchMode, key, port, known_hosts;
        `mux`: over the run's master connection when there is one."""
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "LogLevel=ERROR",
                "-p", str(self.port)]
        if self.key:
            opts += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        if mux and self.control_path:
            opts += ["-o", f"ControlPath={self.control_path}", "-o", "ControlMaster=no"]
        return opts

    def argv(self, args: Sequence[str], tty: bool = False, mux: bool = False) -> list[str]:
        """The local argument list that runs `args` on this server (`tty`: on a terminal there, `ssh -tt`)."""
        argv = [str(a) for a in args]
        if self.local:
            return argv
        return ["ssh", *self.ssh_options(mux), *(["-tt"] if tty else []), self.destination, "--", shlex.join(argv)]

    def run(self, args: Sequence[str], *, timeout: float = 30.0, check: bool = True,
            input: str | None = None) -> proc.Result:
        """Run `args` on this server; CommandError (with stderr) when it fails and `check`."""
        log.debug("%s: run %s", self.name, list(args))
        if self.local or not self.control_path:
            return proc.run(self.argv(args), timeout=timeout, check=check, input=input)
        with _slots(self.control_path):
            return proc.run(self.argv(args, mux=True), timeout=timeout, check=check, input=input)

    def __str__(self) -> str:
        return self.name if self.local else f"{self.name} ({self.destination}:{self.port})"


LOCAL = Server()


def record_server(book: "Ledger", server: Server) -> None:
    """Write down how to reach `server` in the run's ledger, before anything is made on it."""
    book.record("server", server.name, **{k: v for k, v in server.record().items() if k != "name"})


def record_remote_process(book: "Ledger", server: Server, pid: int | str, what: str) -> None:
    """Write down process `pid` on `server` with its start time there (read through the door), as ledger processes
    are; not when it is gone already."""
    start = start_in_stat(server.run(["cat", f"/proc/{pid}/stat"], check=False).stdout)
    if start is None:  # gone already (a short-lived child listed by `ip netns pids`): nothing to remove
        log.debug("%s: process %s (%s) gone before it was recorded", server.name, pid, what)
        return
    book.record("process", str(pid), start=start, what=what, server=server.name)


def parse_destination(text: str) -> Server:
    """A server given on the command line as `[user@]address[:port]` (the key and known_hosts: ssh's own)."""
    from testbed.errors import UsageError
    from testbed.topology.servers import address

    user, _, rest = text.rpartition("@")
    host, colon, num = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    try:
        addr = address(host, "--server")
    except Exception as exc:
        raise UsageError(f"--server {text!r}: {getattr(exc, 'message', exc)}") from None
    if colon and not num.isdigit():
        raise UsageError(f"--server {text!r}: the port after ':' must be a number")
    return Server(text, addr, user or "root", port=int(num) if colon else 22)
