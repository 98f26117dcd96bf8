"""Scripted faults, shared by the fake source and the fake executor: each affects a number of calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self


@dataclass
class Fault:
    """One scripted misbehaviour and how many more calls it affects (None: until cleared)."""

    kind: str
    times: int | None
    message: str = ""
    seconds: float = 0.0
    count: int = 0
    error: BaseException | None = None

    def take(self) -> bool:
        """Use it once; False when it is spent."""
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


class Faults:
    """Scripted faults, taken in the order they were added (a peer and an executor share this)."""

    def __init__(self) -> None:
        self._queue: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._queue.append(fault)

    def take(self, *kinds: str) -> Fault | None:
        """The first pending fault of one of ``kinds`` (any kind when none is given), used once."""
        for fault in list(self._queue):
            if kinds and fault.kind not in kinds:
                continue
            if fault.take():
                if fault.times == 0:
                    self._queue.remove(fault)
                return fault
            self._queue.remove(fault)
        return None

    def clear(self) -> None:
        self._queue.clear()


class Scripted:
    """What a fake's peer (:class:`FakeQueue`) and backend (:class:`FakeFleet`) share: a name, the
    faults scripted on it, and the two plugin bugs a test may want the daemon to survive."""

    #: how messages name it: ``fake queue``, ``fake fleet``
    what = "fake"

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = Faults()

    def hang(self, seconds: float, *, times: int | None = 1) -> Self:
        """A plugin bug: the next call (a read, a status) ignores every bound and takes ``seconds``."""
        return self.script(Fault("hang", times, seconds=seconds))

    def crash(self, error: BaseException | None = None, *, times: int | None = 1) -> Self:
        """A plugin bug: the next call raises ``error`` (a RuntimeError by default), not the SDK's error."""
        return self.script(Fault("crash", times, error=error or RuntimeError(f"{self.what} {self.name!r}: scripted plugin bug")))

    def clear(self) -> Self:
        """Drop every pending fault."""
        self.faults.clear()
        return self

    def script(self, fault: Fault) -> Self:
        """Add ``fault`` after those already scripted."""
        self.faults.add(fault)
        return self
