"""``dsgw serve --config FILE``: the gateway until SIGTERM (then it drains and exits 0).

``--check`` validates the configuration (and its cross-checks against the providers and the
purpose catalogue), the TLS files and the CRL (readable, matching, signed by the CA, current) and
exits: 0 when good, 2 with a one-line reason naming the bad key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.cli import add_json_flag, emit
from gateway.config import load_config


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the gateway (gRPC, mTLS) until SIGTERM")
    p.add_argument("--config", type=Path, required=True, help="configuration file (TOML or JSON)")
    p.add_argument("--check", action="store_true", help="check the configuration, TLS files and CRL; exit")
    p.add_argument(
        "--ready-file", type=Path, help='write {"port": N} here once listening (for scripts and tests)'
    )
    add_json_flag(p)
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from gateway import logs

    logs.check_environment()
    config = load_config(args.config)
    if args.check:
        from gateway.server.app import preflight

        preflight(config)  # the TLS files and the CRL too: what a start would refuse
        emit(
            args,
            {
                "ok": True,
                "agreements": len(config.agreements),
                "providers": sorted(a.value for a in config.providers),
            },
            f"configuration ok: {len(config.agreements)} agreements, {len(config.providers)} providers",
        )
        return 0
    from gateway.server.app import serve

    logs.configure(level=os.environ.get("DSGW_LOG_LEVEL", "INFO"))

    def ready(port: int) -> None:
        if args.ready_file is not None:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": port}))
            tmp.replace(args.ready_file)
        print(
            json.dumps({"listening": port}) if args.json else f"dsgw: listening on port {port}",
            file=sys.stderr,
        )

    return serve(config, ready=ready)
