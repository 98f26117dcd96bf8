"""What one read of a JetStream stream and its consumer says, from the JetStream API or from the
server's ``/jsz`` monitoring endpoint: the figures and the sequences the rates are measured from,
and which changes between two reads are not traffic (a purge, a re-created stream).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from nats.js.api import ConsumerInfo, SequenceInfo, StreamInfo

from docktor.tools.sdk.errors import reason
from docktor.tools.sdk.rates import Counters
from docktor.tools.sdk.retry import Permanent, Transient


class JetStreamCounters(Counters):
    """What one read tells of the stream and the consumer, whichever way it was obtained (the
    JetStream API or ``/jsz``): the figures and the sequences the rates are measured from."""

    stream_created: dt.datetime | None
    consumer_created: dt.datetime | None
    retention: str | None
    first_seq: int
    last_seq: int
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    num_waiting: int
    delivered_stream_seq: int
    delivered_consumer_seq: int
    ack_floor_stream_seq: int
    ack_floor_consumer_seq: int

    def totals(self) -> tuple[int, int]:
        # everything the stream took in; everything acknowledged (the ack floor, in stream terms)
        return self.last_seq, self.ack_floor_stream_seq

    def discontinuity(self, earlier: JetStreamCounters) -> str | None:
        """Why the change since ``earlier`` is not traffic, or None when it is."""
        prev, cur = earlier, self
        if prev.stream_created != cur.stream_created:
            return "stream re-created"
        if prev.consumer_created != cur.consumer_created:
            return "consumer re-created"
        for name in ("last_seq", "delivered_stream_seq", "delivered_consumer_seq", "ack_floor_stream_seq", "ack_floor_consumer_seq"):
            if getattr(cur, name) < getattr(prev, name):
                return f"{name} went backwards"
        if cur.delivered_stream_seq > prev.delivered_stream_seq and cur.delivered_consumer_seq == prev.delivered_consumer_seq:
            # The server moved the consumer past messages it never delivered: a purge or limits discard.
            return "consumer skipped undelivered messages (purge or discard)"
        if (
            cur.retention == "limits"
            and cur.first_seq - 1 > prev.ack_floor_stream_seq
            and cur.ack_floor_stream_seq > prev.ack_floor_stream_seq
        ):
            # Under limits retention an ack never removes a message, so messages above the old ack
            # floor vanished (purge, discard, delete) and the floor was dragged along, not acked.
            return "messages above the ack floor were removed (purge or discard)"
        return None


def from_api(si: StreamInfo, ci: ConsumerInfo) -> JetStreamCounters:
    """The counters of a stream-info and a consumer-info answer of the JetStream API."""
    delivered = ci.delivered or SequenceInfo(consumer_seq=0, stream_seq=0)
    floor = ci.ack_floor or SequenceInfo(consumer_seq=0, stream_seq=0)
    return JetStreamCounters(
        stream_created=si.created,
        consumer_created=ci.created,
        retention=_enum_value(si.config.retention),
        first_seq=si.state.first_seq,
        last_seq=si.state.last_seq,
        num_pending=ci.num_pending or 0,
        num_ack_pending=ci.num_ack_pending or 0,
        num_redelivered=ci.num_redelivered or 0,
        num_waiting=ci.num_waiting or 0,
        delivered_stream_seq=delivered.stream_seq,
        delivered_consumer_seq=delivered.consumer_seq,
        ack_floor_stream_seq=floor.stream_seq,
        ack_floor_consumer_seq=floor.consumer_seq,
    )


def from_jsz(body: Any, stream: str, consumer: str) -> JetStreamCounters:
    """The counters of ``stream``/``consumer`` in a ``/jsz?consumers=true&config=true`` answer;
    Permanent when it has no such stream or consumer, Transient when it is not what /jsz says."""
    try:
        streams = [
            sd
            for acc in body.get("account_details") or []
            for sd in acc.get("stream_detail") or []
            if sd.get("name") == stream
        ]
        if not streams:
            raise Permanent(f"stream {stream!r} not found (monitoring)")
        if len(streams) > 1:
            raise Permanent(f"stream {stream!r} exists in several accounts (monitoring cannot tell which)")
        sd = streams[0]
        cd = next((c for c in sd.get("consumer_detail") or [] if c.get("name") == consumer), None)
        if cd is None:
            raise Permanent(f"consumer {consumer!r} not found on stream {stream!r} (monitoring)")
        state, delivered, floor = sd["state"], cd["delivered"], cd["ack_floor"]
        return JetStreamCounters(
            stream_created=_time(sd.get("created")),
            consumer_created=_time(cd.get("created")),
            retention=(sd.get("config") or {}).get("retention"),
            first_seq=int(state["first_seq"]),
            last_seq=int(state["last_seq"]),
            num_pending=int(cd.get("num_pending", 0)),
            num_ack_pending=int(cd.get("num_ack_pending", 0)),
            num_redelivered=int(cd.get("num_redelivered", 0)),
            num_waiting=int(cd.get("num_waiting", 0)),
            delivered_stream_seq=int(delivered["stream_seq"]),
            delivered_consumer_seq=int(delivered["consumer_seq"]),
            ack_floor_stream_seq=int(floor["stream_seq"]),
            ack_floor_consumer_seq=int(floor["consumer_seq"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise Transient(f"unexpected /jsz answer: {reason(e)}") from None


def _time(value: Any) -> dt.datetime | None:
    # /jsz and the API give the same RFC 3339 instant; both are compared at microsecond precision.
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def _enum_value(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
