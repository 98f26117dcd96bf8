"""Reading the decision log: forward (every decision, or following it live) and from its end
(the newest decisions, without reading what came before them).

Every reader merges an ``intent`` line with its ``outcome`` line (same ``id``) into one
decision, skips a line that does not parse (a power cut can truncate a file), and reads the
rotated files (``decisions.jsonl.1`` …) with the current one.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor.agent.timestamps import parse_rfc3339

#: bytes read at a time from the end of a file
_BLOCK = 256 * 1024


def log_files(path: Path) -> list[Path]:
    """The current log and its rotations, oldest first."""
    rotated = sorted(
        (p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return rotated + ([path] if path.exists() else [])


def _matches(rec: dict[str, Any], since: float | None, service: str | None) -> bool:
    if service is not None and rec.get("service") != service:
        return False
    if since is not None:
        try:
            return parse_rfc3339(str(rec.get("ts"))) >= since
        except ValueError:
            return False
    return True


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


#: what a decision whose outcome was never written says about it
UNKNOWN_OUTCOME = {
    "status": "unknown",
    "message": "no outcome recorded (yet): the executor may still be acting, or the daemon stopped (or its log "
               "became unwritable) while it acted",
    "duration_ms": None,
}


def _finish(intent: dict[str, Any], outcome: dict[str, Any] | None) -> dict[str, Any]:
    rec = dict(intent)
    rec.pop("phase", None)
    if outcome is None:
        rec["executed"] = True
        rec["outcome"] = dict(UNKNOWN_OUTCOME)
    else:
        rec["executed"] = outcome.get("executed", True)
        rec["outcome"] = outcome.get("outcome")
        rec["outcome_ts"] = outcome.get("ts")
    return rec


def merge_phases(
    lines: Iterable[dict[str, Any] | None],
    *,
    grace: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[dict[str, Any]]:
    """One record per decision, in the order they were decided: each ``intent`` line merged with
    its ``outcome`` line.

    ``lines`` may yield ``None`` when nothing new has come (:func:`follow` does, while it waits);
    then an intent still waiting after ``grace`` seconds is shown without its outcome. At the end
    of ``lines`` every waiting intent is shown so (``outcome.status: unknown``).
    """
    # Decisions are shown in order: a finished one waits behind an intent still acting.
    queue: OrderedDict[int, tuple[dict[str, Any], float | None]] = OrderedDict()
    waiting: dict[str, int] = {}  # decision id -> its key in the queue
    n = 0

    def ready() -> Iterator[dict[str, Any]]:
        while queue:
            key, (rec, since) = next(iter(queue.items()))
            if since is not None:
                if grace is None or clock() - since < grace:
                    return
                waiting.pop(str(rec.get("id")), None)
                rec = _finish(rec, None)
            queue.pop(key)
            yield rec

    for rec in lines:
        if rec is not None:
            phase = rec.get("phase")
            if phase == "intent" and rec.get("id") is not None:
                n += 1
                queue[n] = (rec, clock())
                waiting[str(rec["id"])] = n
            elif phase == "outcome":
                key = waiting.pop(str(rec.get("id")), None)
                if key is not None:
                    queue[key] = (_finish(queue[key][0], rec), None)
                # an outcome whose intent was rotated away (or filtered out) has nothing to join
            else:
                n += 1
                queue[n] = (rec, None)
        yield from ready()
    for key, (rec, since) in list(queue.items()):
        yield _finish(rec, None) if since is not None else rec
        del queue[key]


def _raw_lines(file: Path) -> Iterator[dict[str, Any]]:
    try:
        f = file.open("rb")
    except FileNotFoundError:  # rotated away between listing and opening
        return
    with f:
        for line in f:
            rec = _parse(line)
            if rec is not None:
                yield rec


def _filtered(lines: Iterable[dict[str, Any] | None], since: float | None, service: str | None) -> Iterator[dict[str, Any] | None]:
    # An outcome line is filtered with its intent (merge_phases drops an orphan), not by its own time.
    for rec in lines:
        if rec is None or rec.get("phase") == "outcome" or _matches(rec, since, service):
            yield rec


def read_records(path: Path, *, since: float | None = None, service: str | None = None) -> Iterator[dict[str, Any]]:
    """Every decision of the log and its rotations, oldest first, intents merged with their
    outcomes, skipping lines that do not parse."""
    lines = (rec for file in log_files(path) for rec in _raw_lines(file))
    yield from merge_phases(_filtered(lines, since, service))


def follow_lines(
    path: Path,
    *,
    from_start: bool = False,
    start_at: int | None = None,
    poll: float = 0.25,
    stop: Any = None,
) -> Iterator[dict[str, Any] | None]:
    """Raw lines appended after the call (or, with ``from_start``, the current file's lines too;
    with ``start_at``, those from that offset of the current file on), across rotations, until
    ``stop()`` returns True; ``None`` each time it waits for more. One open file handle carries on
    from the history, so nothing written in between is lost or shown twice."""
    f = None
    inode = None
    buf = b""
    skip_existing = path.exists() and not from_start
    try:
        while not (stop and stop()):
            if f is None and path.exists():
                f = path.open("rb")
                inode = os.fstat(f.fileno()).st_ino
                if skip_existing:
                    f.seek(0, os.SEEK_END) if start_at is None else f.seek(min(start_at, os.fstat(f.fileno()).st_size))
            if f is not None:
                chunk = f.read()
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        rec = _parse(line)
                        if rec is not None:
                            yield rec
                    continue
                try:
                    if os.stat(path).st_ino != inode:  # rotated: read the new file from its start
                        f.close()
                        f = path.open("rb")
                        inode = os.fstat(f.fileno()).st_ino
                        buf = b""
                        continue
                except FileNotFoundError:
                    pass
            yield None
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


#: how long ``follow`` shows nothing of a decision whose executor is still acting
FOLLOW_GRACE_S = 300.0


def follow(
    path: Path,
    *,
    service: str | None = None,
    since: float | None = None,
    from_start: bool = False,
    start_at: int | None = None,
    poll: float = 0.25,
    stop: Any = None,
    before: Iterable[dict[str, Any]] = (),
) -> Iterator[dict[str, Any]]:
    """Decisions appended after the call (see :func:`follow_lines`), each intent merged with its
    outcome. ``before``: raw lines to show first (the newest history, :attr:`Scan.lines`),
    merged in the same stream so an intent shown from the history still finds its outcome."""
    lines: Iterator[dict[str, Any] | None] = iter(before)
    live = follow_lines(path, from_start=from_start, start_at=start_at, poll=poll, stop=stop)
    yield from merge_phases(_filtered((x for src in (lines, live) for x in src), since, service), grace=FOLLOW_GRACE_S)


def raw_lines_of(files: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The parsed lines of ``files``, in order (for :func:`follow`'s ``before``)."""
    for file in files:
        yield from _raw_lines(file)


# --------------------------------------------------------------------------- from the end


def lines_backwards(files: list[Path], budget: int | None = None, end: int | None = None) -> Iterator[bytes | None]:
    """The lines of ``files`` (newest file first), last line first; ``None`` once, then stops,
    when ``budget`` bytes (None: no bound) were read before the start of the oldest file.

    Reads blocks from the end, so the newest decisions of a log of any size cost what they
    weigh, not the whole file (``daemon logs -n 20`` on a 400 MiB log). ``end``: read the first
    file only up to that offset (what a follower will read from there on)."""
    spent = 0
    for file in files:
        try:
            f = file.open("rb")
        except FileNotFoundError:  # rotated away since it was listed
            continue
        with f:
            size = f.seek(0, os.SEEK_END)
            pos = min(size, end) if end is not None and file is files[0] else size
            head = b""
            while pos > 0:
                if budget is not None and spent >= budget:
                    yield None
                    return
                block = min(_BLOCK, pos)
                pos -= block
                f.seek(pos)
                lines = (f.read(block) + head).split(b"\n")
                spent += block
                head = lines[0]  # maybe the end of a line that starts in the block before
                for line in reversed(lines[1:]):
                    if line:
                        yield line
            if head:
                yield head


@dataclass
class Scan:
    records: list[dict[str, Any]]  # oldest first, each intent merged with its outcome
    #: False: the byte budget ran out before the limit or the window's start was reached
    complete: bool
    #: the raw lines the records were made of, oldest first (for :func:`follow`'s ``before``)
    lines: list[dict[str, Any]]


def scan_log(
    path: Path,
    *,
    service: str | None = None,
    limit: int | None = None,
    since: float | None = None,
    want: Callable[[dict[str, Any]], bool] | None = None,
    needle: bytes | None = None,
    budget: int | None = None,
    end: int | None = None,
) -> Scan:
    """The newest decisions of the log (``limit`` of them, or all since ``since``) matching
    ``service`` and ``want``, read backwards from the end of the log and its rotations.

    Lines that do not contain ``needle`` (or the service's name, quoted) are skipped without
    parsing: a byte search is far cheaper than JSON, and what is parsed is checked field by field.
    """
    needles = [n for n in (needle, json.dumps(service).encode() if service else None) if n]
    raw: list[dict[str, Any]] = []  # newest first
    found = 0
    complete = True
    for line in lines_backwards(list(reversed(log_files(path))), budget, end):
        if line is None:
            complete = False
            break
        if any(n not in line for n in needles):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn line (a power cut) is skipped, as every reader of the log does
        if not isinstance(rec, dict) or (service is not None and rec.get("service") != service):
            continue
        if rec.get("phase") == "outcome":
            raw.append(rec)  # joins its intent, which is older
            continue
        if since is not None:
            try:
                if parse_rfc3339(str(rec.get("ts"))) < since:
                    break
            except ValueError:
                continue
        raw.append(rec)
        if want is None or want(rec):
            found += 1
            if limit is not None and found >= limit:
                break
    raw.reverse()
    records = [r for r in merge_phases(raw) if want is None or want(r)]
    if limit is not None:
        records = records[-limit:]
    return Scan(records, complete, raw)
