"""A Protobuf schema registered as ``.proto`` text, compiled to the descriptor the decoder reads.

A registry gives a Protobuf writer schema either as a base64 ``FileDescriptorProto`` (what
confluent-kafka's serializers register) or as ``.proto`` text (what a producer registering
by hand, or Confluent's Java serializer, sends). The text is compiled by protoc itself
(the ``grpcio-tools`` wheel), so its meaning is exactly the compiler's, not a second
parser's. protoc runs in a child process, with a timeout: its error message is captured
for the dead letters' reason, and a compiler crash on hostile text cannot take the worker
down. The well-known types (``google/protobuf/*.proto``) are on its include path; other
imports are not resolved. Called once per schema id (the decoder caches the result).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from loader.errors import clip

__all__ = ["ProtoTextError", "compile_proto"]

_FILE = "schema.proto"
"""The name the text is compiled under (a registry's text has no file name)."""
_TIMEOUT_S = 30.0
_REASON_CHARS = 300


class ProtoTextError(ValueError):
    """The text is not a ``.proto`` file protoc compiles (the message says why)."""


def compile_proto(text: str) -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` of ``text``, as protoc compiles it; ProtoTextError if it does not."""
    include = str(files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="loader-proto-") as work:
        folder = Path(work)
        (folder / _FILE).write_text(text, encoding="utf-8")
        out = folder / "out.pb"
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={folder}",
            f"--proto_path={include}",
            f"--descriptor_set_out={out}",
            _FILE,
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=_TIMEOUT_S, check=False)  # noqa: S603
        except subprocess.TimeoutExpired:
            raise ProtoTextError(
                f"protoc did not compile the .proto text within {_TIMEOUT_S:.0f} s"
            ) from None
        if done.returncode != 0 or not out.is_file():
            message = done.stderr.decode("utf-8", "replace").replace(f"{folder}/", "").strip()
            raise ProtoTextError(f"protoc refused the .proto text: {clip(message, _REASON_CHARS)}")
        try:
            found = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        except DecodeError as exc:
            raise ProtoTextError(f"protoc's descriptor set does not parse: {exc}") from None
    for proto in found:
        if proto.name == _FILE:
            return proto
    raise ProtoTextError("protoc's descriptor set lacks the compiled file")
