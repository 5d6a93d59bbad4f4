"""``dsgw id``: check and normalize resident identity numbers and unified social credit codes."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli import add_json_flag, emit
from gateway.errors import UsageError
from gateway.identity import (
    CreditCode,
    InvalidIdentifier,
    ResidentId,
    parse_credit_code,
    parse_resident_id,
)
from gateway.identity.checksums import looks_like_resident_id
from gateway.identity.resident_id import KIND as PERSON_KIND

KINDS = ("auto", "person", "employer")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("id", help="check and normalize identifiers")
    isub = parser.add_subparsers(dest="id_command", required=True, metavar="VERB")

    check = isub.add_parser("check", help="validate one identifier and show what it encodes")
    check.add_argument("value", metavar="VALUE", help="identity number or credit code, any stored form")
    check.add_argument("--kind", choices=KINDS, default="auto", help="person, employer or auto (default)")
    add_json_flag(check)
    check.set_defaults(handler=_check)

    normalize = isub.add_parser("normalize", help="print the canonical form of each identifier")
    normalize.add_argument("values", metavar="VALUE", nargs="+", help="identity numbers or credit codes")
    normalize.add_argument("--kind", choices=KINDS, default="auto", help="person, employer or auto (default)")
    add_json_flag(normalize)
    normalize.set_defaults(handler=_normalize)


def parse_any(value: str, kind: str = "auto") -> ResidentId | CreditCode:
    """Parse ``value`` as ``kind``; ``auto`` takes whichever parses, else reports the error of the
    kind it looks like (all digits: a person)."""
    if kind == "person":
        return parse_resident_id(value)
    if kind == "employer":
        return parse_credit_code(value)
    try:
        return parse_resident_id(value)
    except InvalidIdentifier as person_error:
        try:
            return parse_credit_code(value)
        except InvalidIdentifier as employer_error:
            raise (person_error if looks_like_resident_id(value) else employer_error) from None


def _describe(parsed: ResidentId | CreditCode) -> dict[str, Any]:
    if isinstance(parsed, ResidentId):
        return {
            "kind": "person",
            "canonical": parsed.number,
            "valid": True,
            "birth_date": parsed.birth_date.isoformat(),
            "gender": parsed.gender,
            "division_code": parsed.division_code,
            "division_name": parsed.division_name,
            "sequence": parsed.sequence,
        }
    return {
        "kind": "employer",
        "canonical": parsed.code,
        "valid": True,
        "registration_authority": parsed.registration_authority,
        "authority_name": parsed.authority_name,
        "entity_category": parsed.entity_category,
        "category_name": parsed.category_name,
        "division_code": parsed.division_code,
        "division_name": parsed.division_name,
        "organization_code": parsed.organization_code,
    }


def _human(payload: dict[str, Any]) -> str:
    lines = [f"{payload['kind']} {payload['canonical']}"]
    if payload["kind"] == "person":
        lines += [
            f"  birth date  {payload['birth_date']}",
            f"  gender      {payload['gender']}",
            f"  division    {payload['division_code']} {payload['division_name']}",
        ]
    else:
        lines += [
            f"  authority   {payload['registration_authority']} {payload['authority_name']}",
            f"  category    {payload['entity_category']} {payload['category_name']}",
            f"  division    {payload['division_code']} {payload['division_name']}",
            f"  org code    {payload['organization_code']}",
        ]
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    try:
        payload = _describe(parse_any(args.value, args.kind))
    except InvalidIdentifier as exc:
        if args.json:
            kind = "person" if exc.kind == PERSON_KIND else "employer"
            failed = {
                "kind": kind,
                "canonical": None,
                "valid": False,
                "reason": str(exc.reason),
                "message": str(exc),
            }
            emit(args, failed)
        raise
    emit(args, payload, _human(payload))
    return 0


def _normalize(args: argparse.Namespace) -> int:
    canonical: list[str] = []
    for index, value in enumerate(args.values, start=1):
        try:
            parsed = parse_any(value, args.kind)
        except InvalidIdentifier as exc:
            raise UsageError(f"argument {index}: {exc}") from None
        canonical.append(parsed.number if isinstance(parsed, ResidentId) else parsed.code)
    emit(args, {"canonical": canonical}, "\n".join(canonical))
    return 0
