"""The committed gRPC modules of ``docktor keda`` are what protoc makes of the .proto beside them,
and that .proto keeps KEDA's wire contract (the field numbers and names KEDA sends and reads)."""

from __future__ import annotations

from docktor.agent.keda import externalscaler_pb2 as pb
from docktor.agent.keda.stubs import HERE, generate


def test_committed_stubs_are_what_the_proto_generates() -> None:
    for name, text in generate().items():
        committed = (HERE / name).read_text()
        assert committed == text, f"{name} differs from what agent/keda/externalscaler.proto generates: run python -m docktor.agent.keda.stubs"


def test_the_wire_contract() -> None:
    """Names and numbers as KEDA's external scaler protocol documents them."""
    def fields(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert pb.DESCRIPTOR.package == "externalscaler"
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    assert sorted(m.name for m in service.methods) == ["GetMetricSpec", "GetMetrics", "IsActive", "StreamIsActive"]
    assert service.methods_by_name["StreamIsActive"].server_streaming
    assert fields(pb.ScaledObjectRef) == {"name": 1, "namespace": 2, "scalerMetadata": 3}
    assert fields(pb.IsActiveResponse) == {"result": 1}
    assert fields(pb.GetMetricSpecResponse) == {"metricSpecs": 1}
    assert fields(pb.MetricSpec) == {"metricName": 1, "targetSize": 2, "targetSizeFloat": 3}
    assert fields(pb.GetMetricsRequest) == {"scaledObjectRef": 1, "metricName": 2}
    assert fields(pb.GetMetricsResponse) == {"metricValues": 1}
    assert fields(pb.MetricValue) == {"metricName": 1, "metricValue": 2, "metricValueFloat": 3}
    # a round trip through bytes: what KEDA's Go client would decode
    ref = pb.ScaledObjectRef(name="worker-scaler", namespace="jobs", scalerMetadata={"service": "worker"})
    assert pb.ScaledObjectRef.FromString(ref.SerializeToString()).scalerMetadata["service"] == "worker"
