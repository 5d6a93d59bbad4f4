"""Embedded (SQLite) sources and store are read inline on the event loop; with
``server.inline_local_io = false`` (or a server database) every blocking step goes to the I/O
threads."""

from __future__ import annotations

from pathlib import Path

from adapters.agencies import Agency
from gateway.devsetup import DevHome
from tests.gateway.conftest import start_gateway


def test_sqlite_steps_run_inline_unless_turned_off(dev_home: DevHome, tmp_path: Path) -> None:
    for inline in (True, False):
        gw = start_gateway(dev_home, tmp_path / f"home-{inline}", server={"inline_local_io": inline})
        try:
            x = gw.background.worker.exchange
            assert x is not None
            adapters = [x.adapters[Agency.EDUCATION], x.adapters[Agency.HRSS]]
            assert x._is_local(adapters) is inline
        finally:
            gw.stop()
