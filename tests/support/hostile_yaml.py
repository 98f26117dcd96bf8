"""Hostile and broken ``docktor.yaml`` inputs: the named attacks, and mutations of a valid config.

Shared by ``tests/unit/test_config_hostile.py`` (hypothesis drives the mutations) and
``benchmarks/config_fuzz.py`` (a seeded random run that prints the outcome figures).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

VALID = """
mode: advisory
x-defaults: &defaults
  min_replicas: 1
  max_replicas: 5
services:
  - name: worker
    <<: *defaults
    executor: local
    command: python -c "import time; time.sleep(60)"
    check_interval: 5s
    policy: rules
    queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS, timeout: 2s}
    rules:
      scale_up_when:
        - {metric: queue.backlog, op: ">", value: 500}
        - {metric: queue.rate_in, op: ">", value: 200}
      scale_down_when:
        - {metric: queue.backlog, op: "<=", value: 100}
"""


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic alias bomb: ``width ** levels`` values once expanded, a few hundred bytes written."""
    lines = ["a: &a [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * width) + "]")
    lines.append(f"services: [*{chr(ord('a') + levels - 1)}]")
    return "\n".join(lines) + "\n"


#: the cases the issue names, and their relatives: (name, text)
NAMED: list[tuple[str, str]] = [
    ("nested lists 1,000 deep", "services: " + "[" * 1000 + "]" * 1000 + "\n"),
    ("nested flow maps 1,000 deep", "services: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n"),
    ("nested block maps 1,000 deep", "services:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 1000)) + "  " * 1000 + "v: 1\n"),
    ("self-referencing alias", "services: &x [*x]\n"),
    ("self-referencing mapping alias", "services: [&m {name: w, more: *m}]\n"),
    ("billion laughs (9 x 9)", billion_laughs()),
    ("billion laughs in a string-interpolated field", billion_laughs().replace('"lol"', '"${HOME}"')),
    ("wide alias fan-out (200 x 200 x 200)", "a: &a [" + ",".join(["x"] * 200) + "]\nb: &b [" + ",".join(["*a"] * 200)
     + "]\nservices: [" + ",".join(["*b"] * 200) + "]\n"),
    ("a 5,000-digit integer", VALID.replace("max_replicas: 5", "max_replicas: " + "9" * 5000)),
    ("a 2 MiB comment", VALID + "# " + "x" * (2 * 1024 * 1024) + "\n"),
    ("a 900 KiB key", VALID.replace("policy: rules", "policy: rules\n    " + "k" * 900_000 + ": 1")),
    ("python object tag", "services: !!python/object/apply:os.system ['echo pwned']\n"),
    ("NUL bytes", VALID.replace("worker", "wor\0ker")),
    ("two documents", VALID + "---\n" + VALID),
    ("not UTF-8", "services: [caf\udce9]\n"),
    ("empty", ""),
    ("only a comment", "# nothing\n"),
    ("a newline inside a key", 'services:\n  - name: w\n    "bad\\nkey": 1\n'),
    ("a key with an open bracket", VALID.replace("min_replicas: 1", "min_replica[s: 1")),
    # PyYAML's int constructor indexes the first character: an empty !!int was an IndexError, exit 1
    ("an int tag with no digits", VALID.replace("min_replicas: 1", "min_replicas: !!int")),
    ("an int tag as a key", "services: []\n? !!int\n: 1\n"),
]

#: fragments a mutation inserts: YAML syntax, tags, anchors, interpolation, odd scalars
TOKENS: Sequence[str] = (
    "&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "\t", ",", "? ", "|", ">", "#", "'", '"',
    "<<: *a\n", "!!python/object/apply:os.system ", "!!binary ", "!!str ", "!!int ", "!!map ", "%YAML 1.1\n", "---\n",
    "...\n", "\0", "\ufeff", "\u2028", "${X}", "${HOME}", "${", "$$", "${X:-", "1e400", "-1", "9" * 60, "null", "~",
    "true", "0x1F", ".inf", ".nan", "2001-12-14", "=", "\\", "%", "@", "`", "nats://u:p@h:1",
)


def mutate(text: str, ops: Sequence[tuple[int, float, float, int]]) -> str:
    """Apply ``ops`` to ``text``: each ``(kind, where, extent, token)``; ``where``/``extent`` in [0, 1)."""
    for kind, where, extent, token in ops:
        n = len(text)
        at = int(where * (n + 1))
        span = max(1, int(extent * min(n, 200)))
        k = kind % 9
        if k == 0:  # insert a token
            text = text[:at] + TOKENS[token % len(TOKENS)] + text[at:]
        elif k == 1:  # delete a span
            text = text[:at] + text[at + span:]
        elif k == 2:  # duplicate a span in place
            text = text[:at] + text[at:at + span] + text[at:]
        elif k in (3, 4):  # swap two lines / indent a line
            lines = text.split("\n")
            i = int(where * len(lines))
            j = int(extent * len(lines))
            if k == 3:
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = " " * (token % 7) + lines[i]
            text = "\n".join(lines)
        elif k == 5:  # replace a span with a token
            text = text[:at] + TOKENS[token % len(TOKENS)] + text[at + span:]
        elif k == 6:  # anchor here, alias there
            other = int(extent * (n + 1))
            lo, hi = sorted((at, other))
            text = text[:lo] + "&z " + text[lo:hi] + "*z" + text[hi:]
        elif k == 7:  # wrap the document in brackets, many levels
            depth = 1 + token % 120
            text = "services: " + "[" * depth + text.replace("\n", " ") + "]" * depth
        else:  # repeat a line many times
            lines = text.split("\n")
            i = int(where * len(lines))
            lines[i:i + 1] = [lines[i]] * (1 + token % 200)
            text = "\n".join(lines)
    return text


def random_ops(rng: random.Random, count: int) -> list[tuple[int, float, float, int]]:
    return [(rng.randrange(9), rng.random(), rng.random(), rng.randrange(1000)) for _ in range(count)]
