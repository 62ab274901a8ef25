"""A plain Mininet host (a namespace) whose shell output never crashes the reader on odd bytes."""

from __future__ import annotations

import codecs
from typing import Any

from mininet.node import Host


def tolerant_decoder() -> codecs.IncrementalDecoder:
    """A UTF-8 decoder that replaces undecodable bytes instead of raising mid-run."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


class PlainHost(Host):
    """Mininet's Host, with a decoder that tolerates non-UTF-8 output from commands."""

    def startShell(self, mnopts: Any = None) -> None:  # noqa: N802
        self.decoder = tolerant_decoder()
        super().startShell(mnopts)
