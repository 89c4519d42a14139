"""What the dispatcher reports as it works: a port, so that metrics stay out of business code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class DispatchObserver(Protocol):
    def outcomes(self, channel: str, counts: Mapping[str, int]) -> None: ...

    def handoff(self, channel: str, seconds: float, messages: int) -> None: ...

    def queue_to_sent(self, channel: str, seconds: float) -> None: ...


class NullObserver:
    def outcomes(self, channel: str, counts: Mapping[str, int]) -> None:
        pass

    def handoff(self, channel: str, seconds: float, messages: int) -> None:
        pass

    def queue_to_sent(self, channel: str, seconds: float) -> None:
        pass
