"""Bad input to the agency client and ``dsgw call`` is refused cleanly: exit 2 and one line on
stderr naming what is wrong (no traceback, no gRPC log lines), or a typed error from the client;
``batch-verify`` does not wait for ever on a gateway that stopped answering."""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.client import BatchItemError, CredentialError, GatewayClient, GatewayError
from gateway.devsetup import DevHome
from tests.gateway.conftest import REPO, Gateway, Subjects, serve_env, serving, write_gateway_config

ASK = ["--purpose", "employment_assistance", "--provider", "civil_affairs"]
PREDICATE = ["--predicate", "receives_subsistence_allowance"]


def _creds(gateway: Gateway, agency: str = "hrss") -> list[str]:
    ca, cert, key = gateway.dev.agency_credentials(agency)
    return ["--target", gateway.target, "--ca", str(ca), "--cert", str(cert), "--key", str(key)]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# --- 1. input the request iterator cannot give ---------------------------------------------------


@pytest.mark.parametrize("chunk", ["500", "1"])
def test_batch_verify_of_a_file_that_is_not_utf8_exits_2_naming_the_line(
    gateway: Gateway, subjects: Subjects, tmp_path: Path, capsys: pytest.CaptureFixture[str], chunk: str
) -> None:
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes(f"1,{subjects.assisted[0]}\n".encode() + "张,110101197104197207\n".encode("gbk"))
    capsys.readouterr()
    code = main(["call", "batch-verify", str(gbk), *_creds(gateway), *ASK, *PREDICATE, "--chunk", chunk])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines()[-1] == f"dsgw: {gbk} line 2: not UTF-8"
    assert "Traceback" not in err and "Exception iterating" not in err and "UNKNOWN" not in err


def test_batch_verify_of_stdin_that_is_not_utf8_exits_2(
    gateway: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = f"{subjects.assisted[0]}\n".encode() + b"\xd5\xc5,110101197104197207\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    capsys.readouterr()
    assert main(["call", "batch-verify", "-", *_creds(gateway), *ASK, *PREDICATE]) == 2
    assert _one_line(capsys) == "dsgw: stdin line 2: not UTF-8\n"


class _InputBroke(Exception):
    pass


def test_the_client_raises_the_exception_of_the_callers_items(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("hrss")
    ask = ("employment_assistance", "civil_affairs", "receives_subsistence_allowance")
    raised = _InputBroke("the input broke")

    def items() -> Iterator[tuple[str, str]]:
        yield ("1", subjects.assisted[0])
        raise raised

    for chunk in (500, 1):
        with pytest.raises(_InputBroke) as caught:
            list(client.batch_verify(items(), *ask, chunk=chunk))
        assert caught.value is raised
    # the stream was ended: the channel still serves
    assert [r.item_id for r in client.batch_verify([("a", subjects.assisted[0])], *ask)] == ["a"]


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (("1", 110101197104197207), "pair of strings, got str and int"),
        ("ab", "pair, got str"),
        (("1", "2", "3"), "pair, got tuple"),
        (None, "pair, got NoneType"),
        (("1", "\udcd5"), "not valid Unicode"),
    ],
)
def test_the_client_refuses_a_malformed_batch_item(
    gateway: Gateway, subjects: Subjects, item: Any, words: str
) -> None:
    client = gateway.client("hrss")
    items = [("a", subjects.assisted[0]), item]
    ask = ("employment_assistance", "civil_affairs", "receives_subsistence_allowance")
    with pytest.raises(BatchItemError, match=words) as caught:
        list(client.batch_verify(items, *ask))
    assert caught.value.position == 2 and str(caught.value).startswith("batch item 2: ")


# --- 2. a gateway that does not answer ---------------------------------------------------------


def test_the_client_gives_up_on_a_batch_the_gateway_does_not_answer(dev_home: DevHome) -> None:
    """A listener that never answers (a stopped process: the kernel still accepts)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        ca, cert, key = dev_home.agency_credentials("hrss")
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        client = GatewayClient(target, ca=ca, cert=cert, key=key, timeout=0.5)
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                list(client.batch_verify([("1", "110101197605021525")], "p", "civil_affairs", "q"))
            except BaseException as exc:  # kept for the assertion
                outcome.append(exc)

        started = time.monotonic()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(15)
        client.close()
    assert not worker.is_alive(), "batch_verify waited for ever"
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], GatewayError) and outcome[0].code == "DEADLINE_EXCEEDED"


_env = serve_env


@pytest.fixture(scope="module")
def served(dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(pid, port) of a ``dsgw serve`` process (a test may stop it: it is continued after)."""
    tmp_path = tmp_path_factory.mktemp("served")
    config = write_gateway_config(dev_home, tmp_path / "home")
    with serving(config, tmp_path) as (proc, port):
        yield proc.pid, port


@contextlib.contextmanager
def _stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_the_client_gives_up_on_a_gateway_stopped_after_connecting(
    served: tuple[int, int], dev_home: DevHome, subjects: Subjects
) -> None:
    pid, port = served
    ca, cert, key = dev_home.agency_credentials("hrss")
    ask = ("employment_assistance", "civil_affairs", "receives_subsistence_allowance")
    with GatewayClient(f"127.0.0.1:{port}", ca=ca, cert=cert, key=key, timeout=1) as client:
        assert client.catalogue().entries  # the connection is up
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                list(client.batch_verify([(str(n), s) for n, s in enumerate(subjects.assisted)], *ask))
            except BaseException as exc:  # kept for the assertion
                outcome.append(exc)

        with _stopped(pid):
            started = time.monotonic()
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            worker.join(15)
            assert not worker.is_alive(), "batch_verify waited for ever"
            assert time.monotonic() - started < 5
    assert isinstance(outcome[0], GatewayError) and outcome[0].code == "DEADLINE_EXCEEDED"


def test_batch_verify_exits_1_when_the_gateway_stops_mid_stream(
    served: tuple[int, int], dev_home: DevHome, subjects: Subjects
) -> None:
    """stdin is read as it comes; the gateway answers the first item, then stops."""
    pid, port = served
    ca, cert, key = dev_home.agency_credentials("hrss")
    argv = ["call", "batch-verify", "-", "--target", f"127.0.0.1:{port}", "--timeout", "1", "--chunk", "1"]
    argv += ["--ca", str(ca), "--cert", str(cert), "--key", str(key), *ASK, *PREDICATE]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *argv],
        cwd=REPO,
        env={**_env(), "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(f"a,{subjects.assisted[0]}\nb,{subjects.assisted[1]}\n")
        proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(15), "no answer for the first item"
        assert proc.stdout.readline().startswith("a\t")
        with _stopped(pid):
            proc.stdin.write(f"c,{subjects.assisted[2]}\n")
            proc.stdin.close()
            started = time.monotonic()
            code = proc.wait(timeout=15)
            assert time.monotonic() - started < 5
        err = proc.stderr.read() if proc.stderr else ""
        assert code == 1, err
        assert err.count("\n") == 1 and "DEADLINE_EXCEEDED" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# --- 3. timeouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "86401"])
def test_a_timeout_that_is_not_finite_or_over_a_day_exits_2(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    capsys.readouterr()
    assert main(["call", "catalogue", *_creds(gateway), f"--timeout={value}"]) == 2
    assert "--timeout must be more than 0 and at most 86400 seconds" in _one_line(capsys)


def test_the_client_refuses_a_timeout_it_cannot_use(dev_home: DevHome) -> None:
    ca, cert, key = dev_home.agency_credentials("hrss")
    for value in (float("nan"), float("inf"), 0.0, 1e300):
        with pytest.raises(ValueError, match="timeout must be more than 0"):
            GatewayClient("127.0.0.1:1", ca=ca, cert=cert, key=key, timeout=value)


# --- 4. the target ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("", "--target is empty"),  # refused by the CLI's edge, before the command
        ("127.0.0.1", "want HOST:PORT"),
        (":7443", "want HOST:PORT"),
        ("127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:+80", "the port must be a number from 1 to 65535"),
        ("::1:7443", "an IPv6 address goes in brackets"),
        ("[::zz]:7443", "is not an IPv6 address"),
        ("999.0.0.1:7443", "is not an IPv4 address"),
        ("gate way:7443", "is not a host name"),
        ("-gw.example:7443", "is not a host name"),
    ],
)
def test_a_target_that_is_not_host_port_exits_2(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], target: str, words: str
) -> None:
    capsys.readouterr()
    assert main(["call", "catalogue", *_creds(gateway), f"--target={target}"]) == 2
    err = _one_line(capsys)
    assert words in err and "--target" in err


def test_a_host_name_target_is_accepted(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    for target in (
        f"localhost:{gateway.port}",
        f"dns:///localhost:{gateway.port}",
        f"ipv4:127.0.0.1:{gateway.port}",
    ):
        assert main(["call", "catalogue", *_creds(gateway), "--target", target, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["caller"] == "hrss"


# --- 5. credential files ---------------------------------------------------------------------


def test_credential_files_that_do_not_fit_exit_2_naming_the_option(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca, cert, key = gateway.dev.agency_credentials("hrss")
    _, other_cert, other_key = gateway.dev.agency_credentials("tax")
    plain = tmp_path / "passwd"
    plain.write_text("root:x:0:0:root:/root:/bin/bash\n")
    cases = [
        ((ca, cert, other_key), f"--key {other_key}: not the private key of the certificate {cert}"),
        ((ca, cert, other_cert), f"--key {other_cert}: not an unencrypted PEM private key"),
        ((plain, cert, key), f"--ca {plain}: not a PEM certificate"),
        ((key, cert, key), f"--ca {key}: not a PEM certificate"),
        ((ca, key, key), f"--cert {key}: not a PEM certificate"),
        ((ca, other_cert, key), f"--key {key}: not the private key of the certificate {other_cert}"),
    ]
    for (a, c, k), message in cases:
        capsys.readouterr()
        argv = ["call", "catalogue", "--target", gateway.target, "--ca", str(a), "--cert", str(c)]
        assert main([*argv, "--key", str(k)]) == 2
        assert _one_line(capsys) == f"dsgw: {message}\n"


def test_the_client_checks_its_credential_files(gateway: Gateway) -> None:
    ca, cert, key = gateway.dev.agency_credentials("hrss")
    _, _, other_key = gateway.dev.agency_credentials("tax")
    with pytest.raises(CredentialError) as caught:
        GatewayClient(gateway.target, ca=ca, cert=cert, key=other_key)
    assert (caught.value.which, caught.value.path) == ("key", other_key)
    with pytest.raises(CredentialError) as caught:
        GatewayClient(gateway.target, ca=cert.with_suffix(".key"), cert=cert, key=key)
    assert caught.value.which == "ca"
    with pytest.raises(FileNotFoundError):
        GatewayClient(gateway.target, ca=ca.with_name("absent.crt"), cert=cert, key=key)


# --- 6. --dataset names ----------------------------------------------------------------------


def test_dataset_names_are_stripped(
    gateway: Gateway, subjects: Subjects, capsys: pytest.CaptureFixture[str]
) -> None:
    subject = subjects.graduates[7][0]
    gateway.client("hrss").grant_consent(
        subject,
        [("education", "graduation", [])],
        ["graduate_employment"],
        valid_days=30,
        channel="app",
        evidence_ref="APP-STRIP",
        notice_version="v1",
    )
    capsys.readouterr()
    argv = ["call", "query", *_creds(gateway), "--subject", subject, "--purpose", "graduate_employment"]
    code = main([*argv, "--dataset", " education . graduation : level , graduation_date ", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    [result] = json.loads(out.out)["results"]
    assert (result["provider"], result["dataset"], result["found"]) == ("education", "graduation", True)
    assert set(result["values"]) == {"level", "graduation_date"}


@pytest.mark.parametrize(
    "spec", ["education.graduation:", "education.graduation: ", "education.graduation:level,"]
)
def test_an_empty_field_list_is_not_every_field(
    gateway: Gateway, subjects: Subjects, spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``PROVIDER.DATASET:`` with nothing (or an empty name) after the colon exits 2; it asked
    every field the agreement shares, as the consent CLI refuses the same form."""
    argv = ["call", "query", *_creds(gateway), "--subject", subjects.graduates[7][0]]
    code = main([*argv, "--purpose", "graduate_employment", "--dataset", spec])
    assert code == 2
    assert "a field name is empty" in _one_line(capsys)


# --- 7. --agency -----------------------------------------------------------------------------


@pytest.mark.parametrize("agency", ["../ca", "ca", "HRSS "])
def test_an_unknown_agency_code_exits_2(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], agency: str
) -> None:
    capsys.readouterr()
    argv = ["call", "catalogue", "--target", gateway.target, "--pki", str(gateway.dev.pki)]
    assert main([*argv, "--agency", agency]) == 2
    assert f"--agency {agency!r}: unknown agency (known: hrss, " in _one_line(capsys)
    assert main([*argv, "--agency", "hrss", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["caller"] == "hrss"
