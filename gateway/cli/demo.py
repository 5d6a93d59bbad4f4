"""``dsgw demo``: on a fresh checkout, with embedded defaults only, the whole product end to end.

1. a development home (temporary, or ``--home DIR``): synthetic agency sources, a development
   PKI with one client certificate per agency, audit keys, a configuration with the development
   agreement catalogue (:mod:`gateway.devsetup`);
2. the gateway as its own process (``dsgw serve``) on a free loopback port, mTLS only;
3. real agency calls over mTLS: allowed (statutory duty and consent), denied (no agreement,
   purpose, field, expired agreement, consent missing, consent revoked), invalid input, a retried
   request id, a bulk comparison stream;
4. consents granted and revoked over gRPC, their signed receipts verified offline;
5. a provider outage (its database disappears): UNAVAILABLE within the deadline, then the
   circuit opens and calls fail fast, and the provider comes back;
6. SIGTERM: the gateway drains and exits 0;
7. the audit log verified (``dsgw audit verify``) and one citizen's subject report;
8. a summary (``--json``: one JSON document).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.cli import add_json_flag, emit
from gateway.errors import CheckFailed, UsageError
from gateway.identity import InvalidIdentifier, normalize_resident_id
from gateway.identity.forms import to_fullwidth, to_legacy15


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("demo", help="run the end-to-end demo")
    parser.add_argument("--home", type=Path, help="keep the demo's home (data, keys, logs) in DIR")
    parser.add_argument("--persons", type=int, default=5000, help="synthetic persons (default 5000)")
    parser.add_argument("--employers", type=int, default=500, help="synthetic employers (default 500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=40, help="persons to call about (default 40)")
    add_json_flag(parser)
    parser.set_defaults(handler=run)


@contextlib.contextmanager
def _home(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="dsgw-demo-") as tmp:
        yield Path(tmp)


def _identifiers(sample_id: str) -> dict[str, Any]:
    """Show normalisation of stored forms, and a precise refusal of a broken number."""
    forms = [
        sample_id.lower(),
        to_fullwidth(sample_id),
        f" {sample_id[:6]} {sample_id[6:14]} {sample_id[14:]} ",
    ]
    legacy = to_legacy15(sample_id)
    if legacy:
        forms.append(legacy)
    normalised = sum(normalize_resident_id(f) == sample_id for f in forms)
    broken = sample_id[:10] + sample_id[11] + sample_id[10] + sample_id[12:]
    if broken == sample_id:
        broken = sample_id[:16] + str((int(sample_id[16]) + 1) % 10) + sample_id[17]
    try:
        normalize_resident_id(broken)
        refusal = "accepted"
    except InvalidIdentifier as exc:
        refusal = exc.reason.value
    return {"forms_normalised": normalised, "forms_tried": len(forms), "transposed_digits_refused": refusal}


def _persons(truth: Path, n: int, *, graduates: bool) -> list[str]:
    """Persons for the demo, spread over the population (stable order)."""
    where = "graduation_date IS NOT NULL" if graduates else "graduation_date IS NULL"
    with contextlib.closing(sqlite3.connect(f"file:{truth}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            f"SELECT person_id FROM person WHERE {where} ORDER BY substr(person_id, 11) LIMIT ?", (n,)
        )
        return [r[0] for r in rows]


class _Tally:
    """Calls by outcome: ``allowed``, ``not_found``, or the refusal reason."""

    def __init__(self) -> None:
        self.by_decision: Counter[str] = Counter()
        self.denied: Counter[str] = Counter()

    def run(self, fn: Callable[[], Any]) -> Any:
        from gateway.client import GatewayError

        try:
            result = fn()
        except GatewayError as exc:
            if exc.code == "PERMISSION_DENIED":
                self.by_decision["denied"] += 1
                self.denied[exc.reason] += 1
            elif exc.code == "NOT_FOUND":
                self.by_decision["not_found"] += 1
            elif exc.code == "INVALID_ARGUMENT":
                self.by_decision["invalid"] += 1
                self.denied[exc.reason] += 1
            else:
                self.by_decision[exc.code.lower()] += 1
                self.denied[exc.reason] += 1
            return exc
        self.by_decision["allowed"] += 1
        return result


def _cli_json(*argv: str) -> tuple[int, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *argv, "--json"], capture_output=True, text=True, check=False
    )
    try:
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        return done.returncode, None


def run(args: argparse.Namespace) -> int:
    if args.persons < 100 or args.employers < 10:
        raise UsageError("the demo needs at least 100 persons and 10 employers")
    if args.sample < 4:
        raise UsageError("--sample must be at least 4")
    from gateway.client import GatewayClient
    from gateway.consent.receipts import home_receipt_keys, receipt_key_for, verify_receipt
    from gateway.devsetup import make_dev_home
    from gateway.server.process import start_serve_process

    say: Callable[[str], None] = (lambda _line: None) if args.json else (lambda line: print(line, flush=True))
    started = time.perf_counter()
    with _home(args.home) as home:
        say(f"dsgw demo: home {home}")
        dev = make_dev_home(
            home,
            persons=args.persons,
            employers=args.employers,
            seed=args.seed,
            server={"drain_seconds": 5.0},
            resilience={"fail_max": 2, "reset_timeout_s": 2.0, "attempts": 1},
        )
        truth = dev.data / "truth.sqlite"
        graduates = _persons(truth, args.sample, graduates=True)
        others = _persons(truth, args.sample, graduates=False)
        identifiers = _identifiers(graduates[0])
        say(
            f"  data, PKI (CA, server, 5 agency certificates) and config ready; identifiers: "
            f"{identifiers['forms_normalised']}/{identifiers['forms_tried']} stored forms normalised"
        )
        proc, port = start_serve_process(
            dev.config,
            ready=home / "serve.ready",
            log=home / "serve.log",
            env={"DSGW_LOG_FORMAT": "json", "DSGW_LOG_LEVEL": "info"},
        )
        say(f"  gateway listening on 127.0.0.1:{port} (mTLS; pid {proc.pid})")
        tally = _Tally()
        consents: dict[str, Any] = {"granted": 0, "revoked": 0, "receipts_verified": 0}
        batch: Counter[str] = Counter()
        outage: list[dict[str, Any]] = []
        replay: dict[str, Any] = {}
        try:
            target = f"127.0.0.1:{port}"

            def client(agency: str) -> GatewayClient:
                ca, cert, key = dev.agency_credentials(agency)
                return GatewayClient(target, ca=ca, cert=cert, key=key, timeout=10, operator=f"{agency}-demo")

            with client("hrss") as hrss, client("tax") as tax, client("civil_affairs") as civil:
                grad_ds = [("education", "graduation", ["level", "school_name", "graduation_date"])]
                # statutory duty: no consent needed (comparison only)
                for p in graduates + others:
                    tally.run(
                        functools.partial(
                            hrss.verify, p, "employment_assistance", "civil_affairs", "near_subsistence"
                        )
                    )
                # consent-gated: denied before consent, allowed after
                half = graduates[: len(graduates) // 2]
                for p in half:
                    tally.run(functools.partial(hrss.query, p, "graduate_employment", grad_ds))
                granted: dict[str, str] = {}
                for p in half:
                    consent, receipt = hrss.grant_consent(
                        p,
                        [("education", "graduation", [])],
                        ["graduate_employment"],
                        valid_days=365,
                        channel="app",
                        evidence_ref=f"APP-{p[-6:]}",
                        notice_version="v3",
                    )
                    granted[p] = consent.consent_id
                    consents["granted"] += 1
                    if receipt is not None:  # Ed25519, or SM2 on a gm home: the key its id names
                        verify_receipt(receipt, receipt_key_for(receipt, home_receipt_keys(home)))
                        consents["receipts_verified"] += 1
                for p in half:
                    tally.run(functools.partial(hrss.query, p, "graduate_employment", grad_ds))
                # a retried request id: same answer, one audit entry
                first = hrss.query(half[0], "graduate_employment", grad_ds, request_id="demo-retry-1")
                again = hrss.query(half[0], "graduate_employment", grad_ds, request_id="demo-retry-1")
                replay = {"same_answer": first.results == again.results, "replayed": again.replayed}
                # revoke: the next call is denied
                revoked = half[0]
                _, receipt = hrss.revoke_consent(granted[revoked], revoked, channel="counter")
                consents["revoked"] += 1
                if receipt is not None:
                    verify_receipt(receipt, receipt_key_for(receipt, home_receipt_keys(home)))
                    consents["receipts_verified"] += 1
                tally.run(lambda: hrss.query(revoked, "graduate_employment", grad_ds))
                # other denials
                p = half[1]
                tally.run(lambda: tax.query(p, "employment_assistance", grad_ds))  # no agreement
                tally.run(lambda: hrss.query(p, "startup_loan", grad_ds))  # purpose not allowed
                tally.run(
                    lambda: hrss.query(p, "graduate_employment", [("education", "graduation", ["major"])])
                )
                tally.run(
                    lambda: civil.query(p, "employment_assistance", [("hrss", "employment_status", [])])
                )
                employer = _employer(truth)
                tally.run(
                    lambda: tax.verify(
                        employer,
                        "job_stabilisation_refund",
                        "hrss",
                        "employer_insured_headcount_at_least",
                        {"n": 1},
                    )
                )  # agreement expired
                tally.run(
                    lambda: hrss.query(
                        p[:-1] + ("0" if p[-1] != "0" else "1"), "graduate_employment", grad_ds
                    )
                )
                say(f"  calls: {dict(tally.by_decision)}; refusals {dict(tally.denied)}")
                # bulk comparison on one stream
                items = [(str(i), s) for i, s in enumerate(graduates + others)] + [("bad", "12345")]
                for r in hrss.batch_verify(
                    items, "employment_assistance", "civil_affairs", "receives_subsistence_allowance"
                ):
                    batch[r.error_reason or ("yes" if r.result else "no")] += 1
                say(f"  batch comparison: {dict(batch)}")
                # a provider outage: the tax database disappears, then comes back
                employer_q = [("tax", "employer_tax", ["headcount_band"])]
                hrss.grant_consent(
                    employer,
                    [("tax", "employer_tax", [])],
                    ["hiring_subsidy"],
                    valid_days=30,
                    channel="web",
                    evidence_ref="WEB-1",
                    notice_version="v3",
                )
                consents["granted"] += 1
                tax_db = dev.data / "tax.sqlite"
                hidden = tax_db.with_suffix(".away")
                tax_db.rename(hidden)
                try:
                    for _ in range(3):
                        t0 = time.perf_counter()
                        r = tally.run(lambda: hrss.query(employer, "hiring_subsidy", employer_q))
                        outage.append(
                            {
                                "outcome": getattr(r, "reason", "answered"),
                                "seconds": round(time.perf_counter() - t0, 3),
                            }
                        )
                finally:
                    hidden.rename(tax_db)
                time.sleep(2.2)  # the breaker lets a trial call through after reset_timeout_s
                r = tally.run(lambda: hrss.query(employer, "hiring_subsidy", employer_q))
                outage.append({"outcome": getattr(r, "reason", "answered"), "seconds": 0.0})
                say("  provider outage: " + ", ".join(f"{o['outcome']} ({o['seconds']}s)" for o in outage))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                exit_code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_code = -9
        say(f"  SIGTERM: gateway drained and exited {exit_code}")
        log_dir = home / "audit" / "gw1"
        code, report = _cli_json("audit", "verify", "--log", str(log_dir))
        entries = int((report or {}).get("entries", 0))
        verified = code == 0
        say(f"  audit log: {entries} entries, verified: {verified}")
        _code, subj = _cli_json(
            "audit", "subject-report", half[0], "--log", str(log_dir), "--home", str(home)
        )
        seen = len((subj or {}).get("items", (subj or {}).get("entries", [])))
        say(f"  subject report for one citizen: {seen} items (who read what, when, why, on which basis)")
        result = {
            "home": str(home) if args.home else None,
            "data": {"persons": args.persons, "employers": args.employers},
            "identifiers": identifiers,
            "gateway": {"port": port, "exit_code": exit_code},
            "calls": dict(tally.by_decision),
            "refusals": dict(tally.denied),
            "replay": replay,
            "batch_verify": dict(batch),
            "consents": consents,
            "outage": outage,
            "audit": {"entries": entries, "verified": verified, "subject_report_items": seen},
            "seconds": round(time.perf_counter() - started, 3),
        }
    if args.json:
        emit(args, result)
    else:
        print(f"dsgw demo: done in {result['seconds']}s")
    if exit_code != 0 or not verified:
        raise CheckFailed("the gateway did not drain cleanly or the audit log did not verify")
    return 0


def _employer(truth: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{truth}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT credit_code FROM employer ORDER BY substr(credit_code, 11) LIMIT 1"
        ).fetchone()
    return str(row[0])
