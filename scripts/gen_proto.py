"""Regenerate the Python protobuf/gRPC code under dsgw/v1 from proto/dsgw/v1.

    python scripts/gen_proto.py            # write dsgw/v1/*_pb2*.py(i)
    python scripts/gen_proto.py --check    # exit 1 if the checked-in code differs (CI)

Output is reproducible: files are generated in sorted order by the pinned grpcio-tools
and written only from protoc's output, so the same inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = ROOT / "dsgw" / "v1"
INIT_TEXT = '"""Generated from proto/dsgw/v1 by scripts/gen_proto.py. Do not edit."""\n'


def _generate(out_root: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    # protoc finds the mypy plugins on PATH; they live beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "dsgw" / "v1").glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for pkg in (out_root / "dsgw", out_root / "dsgw" / "v1"):
        (pkg / "__init__.py").write_text(INIT_TEXT)
        (pkg / "py.typed").write_text("")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the checked-in code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _generate(out)
        generated = out / "dsgw" / "v1"
        if args.check:
            want, have = _files(generated), _files(OUT_PACKAGE) if OUT_PACKAGE.exists() else set()
            stale = sorted(want ^ have)
            stale += sorted(
                f for f in want & have if not filecmp.cmp(generated / f, OUT_PACKAGE / f, shallow=False)
            )
            if stale:
                print("generated protobuf code is stale; run python scripts/gen_proto.py:", ", ".join(stale))
                return 1
            print("generated protobuf code is up to date")
            return 0
        if OUT_PACKAGE.exists():
            shutil.rmtree(OUT_PACKAGE)
        OUT_PACKAGE.parent.mkdir(parents=True, exist_ok=True)
        (ROOT / "dsgw" / "__init__.py").write_text(INIT_TEXT)
        (ROOT / "dsgw" / "py.typed").write_text("")
        shutil.copytree(generated, OUT_PACKAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
