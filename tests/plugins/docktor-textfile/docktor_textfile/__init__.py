"""``kind: textfile``: one ``name value`` pair per line, written by a job, read each tick.

Another program (a cron job, a batch scheduler) writes its figures into a file; Docktor reads
them. Lines starting with ``#`` are comments. A name the settings list but the file lacks is
missing, never zero.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from docktor.tools.sdk import Context, MetricInfo, Metrics, PluginSettings, Source, SourceError


class TextfileSettings(PluginSettings):
    kind: Literal["textfile"]
    path: Path
    #: metric name -> what it means; only these are read
    metrics: dict[str, str]


class TextfileSource(Source[TextfileSettings]):
    Settings = TextfileSettings

    def __init__(self, settings: TextfileSettings, context: Context) -> None:
        super().__init__(settings, context)
        self.path = context.path(settings.path)

    @classmethod
    def metrics_for(cls, settings: TextfileSettings) -> Mapping[str, MetricInfo]:
        return {name: MetricInfo("", meaning) for name, meaning in settings.metrics.items()}

    @classmethod
    def describe(cls, settings: TextfileSettings) -> str:
        return f"textfile {settings.path}"

    async def read(self) -> Metrics:
        try:
            text = await asyncio.to_thread(self.path.read_text, encoding="utf-8")
        except OSError as e:
            raise SourceError(f"cannot read {self.path}: {e.strerror or e}") from None
        out: Metrics = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not parts[0].startswith("#") and parts[0] in self.settings.metrics:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    continue  # not a number: missing, like an absent line
        return out
