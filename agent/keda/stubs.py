"""The Python modules generated from ``externalscaler.proto`` (grpcio-tools), and how to remake them.

``externalscaler_pb2.py`` (the messages, typed in its ``.pyi``) and ``externalscaler_pb2_grpc.py`` (the service's stub
and servicer) are committed, so running ``docktor keda`` needs grpcio and protobuf only. After
changing the ``.proto``: ``python -m docktor.agent.keda.stubs`` rewrites them (grpcio-tools, the
``test`` extra); ``tests/unit/test_keda_stubs.py`` fails while they differ from what it makes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "externalscaler.proto"
#: the proto's path as protoc sees it: the generated service module then imports the messages as
#: ``docktor.agent.keda.externalscaler_pb2``, the installed name
IMPORT_PATH = "docktor/agent/keda"
GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py")


def generate() -> dict[str, str]:
    """The generated modules' text by file name, made from :data:`PROTO` into a scratch folder."""
    from importlib.resources import files

    from grpc_tools import protoc

    well_known = str(files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as out:
        code = protoc.main([
            "grpc_tools.protoc", f"-I{IMPORT_PATH}={HERE}", f"-I{well_known}",
            f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", f"{IMPORT_PATH}/{PROTO.name}",
        ])
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {code})")
        return {name: (Path(out) / IMPORT_PATH / name).read_text() for name in GENERATED}


def main() -> int:
    for name, text in generate().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
