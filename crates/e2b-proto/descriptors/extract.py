"""Writes envd.fds, the FileDescriptorSet of E2B's envd protocol
(process/process.proto, filesystem/filesystem.proto, and the
google/protobuf/timestamp.proto the latter imports), from the descriptors
the published `e2b` Python SDK (and its protobuf runtime) embed in their
generated modules.

    python -m venv /tmp/e2b && /tmp/e2b/bin/pip install e2b==2.63.0
    /tmp/e2b/bin/python crates/e2b-proto/descriptors/extract.py

The schemas are the SDK's own (serialized FileDescriptorProtos, read from
the literal each `*_pb.py` passes to `file_desc`); nothing is retyped.
"""

import ast
import importlib.util
import pathlib
import sys

# (package, module): dependencies first.
MODULES = [
    ("protobuf", "wkt/google/protobuf/timestamp_pb.py"),
    ("e2b", "envd/process/process_pb.py"),
    ("e2b", "envd/filesystem/filesystem_pb.py"),
]


def descriptor(path: pathlib.Path) -> bytes:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "file_desc":
            return node.args[0].value
    sys.exit(f"no file_desc(...) in {path}")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def main() -> None:
    fds = b""
    for package, module in MODULES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            sys.exit("install the e2b SDK first (pip install e2b==2.63.0)")
        fdp = descriptor(pathlib.Path(spec.origin).parent / module)
        fds += b"\x0a" + varint(len(fdp)) + fdp  # FileDescriptorSet.file = 1
    out = pathlib.Path(__file__).with_name("envd.fds")
    out.write_bytes(fds)
    print(f"{out}: {len(fds)} bytes")


if __name__ == "__main__":
    main()
