"""The wire contract: generated code is current and the shared messages behave."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dsgw.v1 import common_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_subject_ref_round_trips() -> None:
    ref = common_pb2.SubjectRef(kind=common_pb2.SUBJECT_KIND_PERSON, id="11010519491231002X")
    back = common_pb2.SubjectRef.FromString(ref.SerializeToString())
    assert back == ref
    assert common_pb2.SubjectKind.Name(back.kind) == "SUBJECT_KIND_PERSON"


def test_agency_codes_match_the_contract() -> None:
    from adapters.agencies import Agency

    names = {common_pb2.AgencyCode.Name(v) for v in common_pb2.AgencyCode.values()}
    for agency in Agency:
        assert f"AGENCY_CODE_{agency.value.upper()}" in names


def test_error_reasons_are_unique_and_named() -> None:
    values = common_pb2.ErrorReason.values()
    assert len(values) == len(set(values))
    assert "CONSENT_REVOKED" in common_pb2.ErrorReason.keys()  # noqa: SIM118 - an enum wrapper, not a dict
