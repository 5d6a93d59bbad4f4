"""Bulk extracts: chunking in key order, merged duplicates, identifiers that do not normalise,
watermarks and incremental runs, on both backends."""

from __future__ import annotations

import datetime as dt

from adapters.agencies import Agency
from adapters.contract import ExtractChunk, PersonInsurance
from gateway.identity.forms import to_legacy15
from tests.adapters.nativedb import AS_OF, NativeDb, employer_id, person_id


def records(chunks: list[ExtractChunk]) -> list[tuple[str, str | None]]:
    return [(r.native_key, r.subject_id) for c in chunks for r in c.records]


def test_chunks_in_key_order_with_one_watermark(db: NativeDb) -> None:
    for n in range(1, 8):
        db.add("ac01", aac001=n, aac002=person_id(n), aae036=f"2026-01-0{n} 08:00:00", aac003=f"人{n}")
    db.add("jy_rylb", aac001=4, rylb="11", aae036="2026-02-01 09:30:00")
    adapter = db.adapter(Agency.HRSS)
    chunks = list(adapter.extract("person_category", chunk_size=3, as_of=AS_OF))
    assert [len(c.records) for c in chunks] == [3, 3, 1]
    assert records(chunks) == [(str(n), person_id(n)) for n in range(1, 8)]
    assert {c.watermark for c in chunks} == {"2026-02-01 09:30:00"}
    first = chunks[0].records[0]
    assert first.raw_id == person_id(1) and first.name == "人1" and first.birth_date == dt.date(1990, 1, 1)
    assert [r.record.model_dump()["veteran"] for c in chunks for r in c.records] == [
        n == 4 for n in range(1, 8)
    ]


def test_duplicates_merged_once_across_chunks(db: NativeDb) -> None:
    p = person_id(1)
    db.add("ac01", aac001=1, aac002=p)
    for n in range(2, 5):
        db.add("ac01", aac001=n, aac002=person_id(n))
    db.add("ac01", aac001=5, aac002=to_legacy15(p))  # the same person again, in another chunk
    db.add("ab01", aab001=1, aab003=employer_id(1))
    db.add("ac02", aac001=1, aab001=1, aae030="202401", aae031="202412")
    db.add("ac02", aac001=5, aab001=1, aae030="202601")
    adapter = db.adapter(Agency.HRSS)
    chunks = list(adapter.extract("person_insurance", chunk_size=2, as_of=AS_OF))
    got = records(chunks)
    assert got == [("1", p), ("2", person_id(2)), ("3", person_id(3)), ("4", person_id(4))]
    merged = chunks[0].records[0].record
    assert isinstance(merged, PersonInsurance)
    assert merged.currently_insured and merged.insured_months_24m == 2 + 10
    assert merged == adapter_fetch_record(db, p)


def adapter_fetch_record(db: NativeDb, pid: str) -> PersonInsurance:
    from adapters.contract import Subject, SubjectKind

    values = (
        db.adapter(Agency.HRSS)
        .fetch("person_insurance", Subject(SubjectKind.PERSON, pid), as_of=AS_OF)
        .values
    )
    return PersonInsurance(**values)


def test_identifiers_that_do_not_normalise_travel_with_raw_id(db: NativeDb) -> None:
    p = person_id(1)
    transposed = p[:6] + p[7] + p[6] + p[8:] if p[6] != p[7] else p[:8] + p[9] + p[8] + p[10:]
    db.add("ac01", aac001=1, aac002=transposed, aac003="钱 八", aac006="19900101")
    db.add("ac01", aac001=2, aac002=None, aac003="周九", aac006="1990-1-1")  # malformed birth date
    db.add("jy_rylb", aac001=1, rylb="12")
    adapter = db.adapter(Agency.HRSS)
    (chunk,) = list(adapter.extract("person_category", as_of=AS_OF))
    one, two = chunk.records
    assert (one.subject_id, one.raw_id, one.name, one.birth_date) == (
        None,
        transposed,
        "钱 八",
        dt.date(1990, 1, 1),
    )
    assert one.record.model_dump()["returning_migrant"] is True
    assert (two.subject_id, two.raw_id, two.birth_date) == (None, None, None)


def test_incremental_since_watermark(db: NativeDb) -> None:
    old, new = "2026-01-01 00:00:00", "2026-03-01 00:00:00"
    for n in range(1, 6):
        db.add("ac01", aac001=n, aac002=person_id(n), aae036=old)
    db.add("ab01", aab001=1, aab003=employer_id(1), aae036=old)
    db.add("ac02", aac001=2, aab001=1, aae030="202501", aae036=old)
    adapter = db.adapter(Agency.HRSS)
    (full,) = list(adapter.extract("person_insurance", as_of=AS_OF))
    assert len(full.records) == 5 and full.watermark == old

    (nothing,) = list(adapter.extract("person_insurance", since=full.watermark, as_of=AS_OF))
    assert nothing.records == () and nothing.watermark == old

    db.add("ac02", aac001=4, aab001=1, aae030="202602", aae036=new)  # a new spell of person 4
    db.flush()
    ac01 = db.table("ac01")
    db.execute(Agency.HRSS, ac01.update().where(ac01.c.aac001 == 5).values(aae036="2026-02-01 00:00:00"))
    chunks = list(adapter.extract("person_insurance", since=full.watermark, as_of=AS_OF))
    assert records(chunks) == [("4", person_id(4)), ("5", person_id(5))]
    assert chunks[0].watermark == new
    assert next(adapter.extract("person_insurance", since=new, as_of=AS_OF)).records == ()


def test_incremental_change_on_the_duplicate_row_emits_the_merged_subject(db: NativeDb) -> None:
    old, new = "2026-01-01 00:00:00", "2026-03-01 00:00:00"
    p = person_id(1)
    db.add("ac01", aac001=1, aac002=p, aae036=old)
    db.add("ac01", aac001=2, aac002=person_id(2), aae036=old)
    db.add("ac01", aac001=3, aac002=p.lower() if p.endswith("X") else to_legacy15(p), aae036=old)
    db.add("jy_rylb", aac001=1, rylb="11", aae036=old)
    db.add("jy_rylb", aac001=3, rylb="12", aae036=new)
    adapter = db.adapter(Agency.HRSS)
    chunks = list(adapter.extract("person_category", since=old, chunk_size=1, as_of=AS_OF))
    ((rec,),) = [c.records for c in chunks]
    assert rec.subject_id == p and rec.native_key == "3"
    assert rec.record.model_dump() == {"veteran": True, "returning_migrant": True, "poverty_lifted": False}


def test_employer_extract_and_integer_watermark(db: NativeDb) -> None:
    db.add("dj_nsrxx", djxh=1, nsrsbh=employer_id(1), lrrq=1_700_000_000, nsrmc="甲公司")
    db.add("dj_nsrxx", djxh=2, nsrsbh=employer_id(2).lower(), lrrq=1_800_000_000)
    db.add("dj_nsrxx", djxh=3, nsrsbh="91120116XXXXXXXX00", lrrq=1_600_000_000)  # invalid code
    adapter = db.adapter(Agency.TAX)
    (chunk,) = list(adapter.extract("employer_tax"))
    assert [(r.native_key, r.subject_id) for r in chunk.records] == [
        ("1", employer_id(1)),
        ("2", employer_id(2)),
        ("3", None),
    ]
    assert chunk.records[0].name == "甲公司" and chunk.records[0].birth_date is None
    assert chunk.watermark == "1800000000"
    (later,) = list(adapter.extract("employer_tax", since="1700000000"))
    assert [r.native_key for r in later.records] == ["2"]


def test_assistance_household_change_reaches_every_member(db: NativeDb) -> None:
    old, new = "2026/01/01 00:00:00", "2026/05/01 12:00:00"
    db.add("T_JZ_JT", JTBH="H1", GXSJ=old)
    db.add("T_JZ_JT", JTBH="H2", GXSJ=old)
    db.add("T_JZ_CY", CYBH=1, JTBH="H1", SFZH=person_id(1), GXSJ=old)
    db.add("T_JZ_CY", CYBH=2, JTBH="H1", SFZH=person_id(2), GXSJ=old)
    db.add("T_JZ_CY", CYBH=3, JTBH="H2", SFZH=person_id(3), GXSJ=old)
    db.add("T_JZ_CY", CYBH=4, JTBH="H1", SFZH=None, GXSJ=new)  # a new member: the size changes for all
    adapter = db.adapter(Agency.CIVIL_AFFAIRS)
    chunks = list(adapter.extract("assistance", since=old))
    assert records(chunks) == [("1", person_id(1)), ("2", person_id(2)), ("4", None)]
    assert {r.record.model_dump()["household_size"] for c in chunks for r in c.records} == {3}
    assert chunks[0].watermark == new


def test_empty_source_yields_one_empty_chunk(db: NativeDb) -> None:
    adapter = db.adapter(Agency.MARKET_REGULATION)
    (chunk,) = list(adapter.extract("business_registration"))
    assert chunk == ExtractChunk((), "")


def test_malformed_row_skipped_in_extract_but_typed_error_in_fetch(db: NativeDb) -> None:
    from adapters.contract import ProviderUnavailable, Subject, SubjectKind

    db.add("E_BASEINFO", PRIPID="A", UNISCID=employer_id(1), ENTTYPE="7777")  # unknown entity type
    db.add("E_BASEINFO", PRIPID="B", UNISCID=employer_id(2))
    adapter = db.adapter(Agency.MARKET_REGULATION)
    (chunk,) = list(adapter.extract("business_registration"))
    assert [r.native_key for r in chunk.records] == ["B"]
    try:
        adapter.fetch("business_registration", Subject(SubjectKind.EMPLOYER, employer_id(1)))
    except ProviderUnavailable as exc:
        assert "malformed native data" in exc.cause and "ENTTYPE" in exc.cause
    else:  # pragma: no cover
        raise AssertionError("expected ProviderUnavailable")
    assert adapter.source.circuit.failures == 0  # bad data is not an unhealthy source
