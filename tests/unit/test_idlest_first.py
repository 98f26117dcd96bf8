"""Which replicas a scale-in removes first (tools/executors/scale_in.py), on fixed figures: the
executors' own tests measure real processes, whose CPU figures are the machine's."""

from __future__ import annotations

from dataclasses import dataclass

from docktor.tools.executors.scale_in import UNMEASURED, idlest_first


@dataclass(frozen=True)
class Replica:
    number: int
    running: bool
    cpu: float | None


def order(replicas: list[Replica], count: int) -> list[tuple[int, str]]:
    chosen = idlest_first(
        replicas,
        count,
        number=lambda r: r.number,
        running=lambda r: r.running,
        cpu=lambda r: r.cpu,
        not_running=lambda r: "not running",
    )
    return [(r.number, why) for r, why in chosen]


def test_not_running_then_unmeasured_then_lowest_cpu() -> None:
    replicas = [Replica(1, True, 3.0), Replica(2, True, None), Replica(3, False, None), Replica(4, True, 80.0)]
    assert [n for n, _ in order(replicas, 3)] == [3, 2, 1]
    whys = dict(order(replicas, 3))
    assert whys[3] == "not running" and whys[2] == UNMEASURED
    assert whys[1] == "lowest CPU: 3.0% (kept 4: 80.0%)"


def test_the_same_whole_percent_is_a_tie_that_goes_to_the_higher_number() -> None:
    # 0.2 % and 0.9 % are both 0: noise does not decide between two idle replicas
    replicas = [Replica(1, True, 0.2), Replica(2, True, 0.9), Replica(3, True, 97.0)]
    assert [n for n, _ in order(replicas, 2)] == [2, 1]
    # a whole percent apart is not a tie: the lower goes first whatever its number
    replicas = [Replica(1, True, 0.4), Replica(2, True, 1.1), Replica(3, True, 97.0)]
    assert [n for n, _ in order(replicas, 2)] == [1, 2]
