"""The interface every link emulation backend offers to the network builder and to faults."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from testbed.topology.model import Shape


@dataclass(frozen=True)
class LinkEnds:
    """The two interfaces an emulated link joins; `nsN` is a PID whose netns holds it (None: root)."""

    link_id: str
    intf1: str
    ns1: int | None
    intf2: str
    ns2: int | None


class LinkBackend(ABC):
    """Makes the interfaces of emulated links and shapes each direction; one instance per run."""

    name: str = ""

    @abstractmethod
    def create(self, ends: LinkEnds, forward: Shape, reverse: Shape) -> None:
        """Create `ends.intf1` and `ends.intf2` joined through the emulation; forward is 1→2."""

    @abstractmethod
    def shape(self, link_id: str, forward: Shape | None = None, reverse: Shape | None = None) -> None:
        """Change one or both directions of a link at run time (None: leave that direction)."""

    @abstractmethod
    def set_up(self, link_id: str, up: bool) -> None:
        """Take a link down (no frame crosses, carrier off) or bring it back up."""

    @abstractmethod
    def delete(self, link_id: str) -> None:
        """Remove the link's interfaces and emulation state."""

    @abstractmethod
    def close(self) -> None:
        """Remove every link and stop whatever the backend started."""
