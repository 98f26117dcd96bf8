"""``queue.oldest_age`` of a RabbitMQ queue: the age of its head message by the ``timestamp``
property the publisher set (``head_message_timestamp`` in the management API's statistics).

Only the publisher sets that property (pika: ``BasicProperties(timestamp=int(time.time()))``;
Celery's producer never does), in whole seconds on the publisher's clock. Classic queues report
it; quorum and stream queues do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from docktor.tools.sdk.ages import age_since
from docktor.tools.sdk.metric_info import Missing

#: the statistics show no message ready: nothing waits, the age is 0 (the source checks the exact count)
NOTHING_READY = "nothing pending: no message is ready"
#: why ``queue.oldest_age`` is absent
NO_TIMESTAMP = "the head message has no timestamp property (its publisher did not set one)"
NOT_REPORTED = "the broker reports no head_message_timestamp for this queue (classic queues do; quorum and stream queues do not)"
NO_STATISTICS = "no statistics yet"
HEAD_NOT_YET = "messages are ready, but the statistics show no head yet (they lag up to statistics_interval)"


def head_age(q: Mapping[str, Any], now: float) -> float | str:
    """``queue.oldest_age`` from a queue's statistics: ``now`` minus the head message's
    ``timestamp`` property (whole seconds, the publisher's clock), :class:`Missing` for a time
    that cannot be one; or why it is absent (a ``str``). The head is the statistics' head, up to
    one statistics period old (a head taken meanwhile still shows)."""
    ready = q.get("messages_ready")
    if not isinstance(ready, int) or isinstance(ready, bool) or ready < 0:
        return NO_STATISTICS
    if ready == 0:
        return NOTHING_READY
    if "head_message_timestamp" not in q:
        return NOT_REPORTED
    stamp = q["head_message_timestamp"]
    if stamp is None or stamp == "":
        return NO_TIMESTAMP
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return Missing(f"head_message_timestamp {str(stamp)[:40]!r} is not a number")
    return age_since(float(stamp), now, "the head message's timestamp property")
