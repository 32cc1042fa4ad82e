"""Call recordings through the API: who may hear which, streaming with byte ranges, download,
deletion and retention. Recordings are real WAV files catalogued like the call path does."""

from __future__ import annotations

import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from pomelo.api.recordings import RangeNotSatisfiable, parse_range
from pomelo.recordings.files import recording_path
from pomelo.recordings.models import Recording, RecordingParticipant
from pomelo.recordings.service import NewRecording, RecordingCatalog
from tests.conftest import Server, TenantFixture
from tests.integration.api.test_basics import assert_problem
from tests.support.recordings import make_recording


def ids(page: httpx.Response) -> set[str]:
    assert page.status_code == 200, page.text
    return {r["id"] for r in page.json()["items"]}


async def row_count(server: Server, recording_id: str) -> int:
    async with server.platform.db.session() as s:
        recordings = await s.scalar(
            select(func.count()).select_from(Recording).where(Recording.id == recording_id)
        )
        people = await s.scalar(
            select(func.count())
            .select_from(RecordingParticipant)
            .where(RecordingParticipant.recording_id == recording_id)
        )
    return int(recordings or 0) + int(people or 0)


async def test_each_role_hears_only_the_calls_in_its_reach(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    p = server.platform
    sales, support = tenant.group_ids
    operator, head = tenant["operator"], tenant["group_head"]
    own, _ = await make_recording(p, tenant.id, user_ids=(operator.id, tenant["marketer"].id))
    marketer_only, _ = await make_recording(p, tenant.id, user_ids=(tenant["marketer"].id,))
    to_sales, _ = await make_recording(p, tenant.id, group_id=sales)
    to_support, _ = await make_recording(p, tenant.id, group_id=support)
    everything = {tenant.recording_id, own, marketer_only, to_sales, to_support}

    mine = await http.get("/api/v1/recordings", headers=operator.headers)
    assert ids(mine) == {tenant.recording_id, own}
    assert mine.json()["total"] == 2
    # A group head: his group's members' calls and calls to his group's number.
    assert ids(await http.get("/api/v1/recordings", headers=head.headers)) == {
        tenant.recording_id,
        own,
        to_sales,
    }
    company = await http.get("/api/v1/recordings?limit=100", headers=tenant["company_head"].headers)
    assert ids(company) == everything

    for hidden in (marketer_only, to_sales):
        assert_problem(
            await http.get(f"/api/v1/recordings/{hidden}", headers=operator.headers),
            404,
            "no-such-recording",
        )
        assert_problem(
            await http.get(f"/api/v1/recordings/{hidden}/audio", headers=operator.headers),
            404,
            "no-such-recording",
        )
    assert_problem(
        await http.get(f"/api/v1/recordings/{to_support}", headers=head.headers),
        404,
        "no-such-recording",
    )
    detail = (await http.get(f"/api/v1/recordings/{own}", headers=operator.headers)).json()
    assert sorted(detail["user_ids"]) == sorted([operator.id, tenant["marketer"].id])
    assert (detail["channels"], detail["sample_rate"], detail["duration_ms"]) == (2, 8000, 1000)
    assert detail["audio_url"] == f"/api/v1/recordings/{own}/audio"
    # Roles without recordings.listen get nothing at all.
    for role in ("marketer", "accountant", "nobody"):
        assert_problem(
            await http.get("/api/v1/recordings", headers=tenant[role].headers), 403, "forbidden"
        )


async def test_another_tenants_recordings_do_not_exist(
    http: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    foreign = other_tenant.recording_id
    for path in (f"/api/v1/recordings/{foreign}", f"/api/v1/recordings/{foreign}/audio"):
        assert_problem(await http.get(path, headers=admin), 404, "no-such-recording")
    assert_problem(
        await http.delete(f"/api/v1/recordings/{foreign}", headers=admin), 404, "no-such-recording"
    )
    listed = await http.get("/api/v1/recordings?limit=500", headers=admin)
    assert foreign not in ids(listed)
    assert other_tenant["operator"].id not in listed.text
    filtered = await http.get(
        f"/api/v1/recordings?user_id={other_tenant['operator'].id}", headers=admin
    )
    assert ids(filtered) == set()
    # Still there for its own tenant.
    mine = await http.get(
        f"/api/v1/recordings/{foreign}/audio", headers=other_tenant["operator"].headers
    )
    assert mine.status_code == 200


async def test_filters_and_paging(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    p = server.platform
    admin = tenant["administrator"].headers
    base = datetime.now(UTC) - timedelta(days=3)
    made = [
        (await make_recording(p, tenant.id, user_ids=(tenant["company_head"].id,), started_at=at))[
            0
        ]
        for at in (base, base + timedelta(hours=1), base + timedelta(hours=2))
    ]
    by_user = (
        await http.get(f"/api/v1/recordings?user_id={tenant['company_head'].id}", headers=admin)
    ).json()
    assert [r["id"] for r in by_user["items"]] == made[::-1]  # newest first
    window = await http.get(
        "/api/v1/recordings",
        headers=admin,
        params={
            "since": (base + timedelta(minutes=30)).isoformat(),
            "until": (base + timedelta(hours=2)).isoformat(),
        },
    )
    assert ids(window) == {made[1]}
    one = (await http.get(f"/api/v1/recordings/{made[0]}", headers=admin)).json()
    by_call = await http.get(f"/api/v1/recordings?call_id={one['call_id']}", headers=admin)
    assert ids(by_call) == {made[0]}
    page = (
        await http.get(
            f"/api/v1/recordings?user_id={tenant['company_head'].id}&limit=2&offset=2",
            headers=admin,
        )
    ).json()
    assert (page["total"], [r["id"] for r in page["items"]]) == (3, [made[0]])
    naive = await http.get("/api/v1/recordings?since=2026-01-01T00:00:00", headers=admin)
    assert_problem(naive, 422, "invalid-request")


async def test_audio_streams_whole_files_and_byte_ranges(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    operator = tenant["operator"].headers
    recording_id, path = await make_recording(
        server.platform, tenant.id, user_ids=(tenant["operator"].id,), seconds=2.5
    )
    data = path.read_bytes()
    size = len(data)
    url = f"/api/v1/recordings/{recording_id}/audio"

    whole = await http.get(url, headers=operator)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == size
    assert "content-disposition" not in whole.headers
    assert whole.content == data
    with wave.open(str(path)) as wav:  # a real, playable stereo file
        assert (wav.getnchannels(), wav.getframerate(), wav.getnframes()) == (2, 8000, 20000)

    expected = {
        "bytes=0-99": (0, 99),
        "bytes=1000-1999": (1000, 1999),
        f"bytes={size - 10}-": (size - 10, size - 1),
        "bytes=-50": (size - 50, size - 1),
        f"bytes=100-{size + 5000}": (100, size - 1),  # clamped to the end
        f"bytes=-{size * 2}": (0, size - 1),  # a suffix longer than the file: all of it
    }
    for header, (first, last) in expected.items():
        part = await http.get(url, headers={**operator, "Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert int(part.headers["content-length"]) == last - first + 1
        assert part.content == data[first : last + 1], header

    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        refused = await http.get(url, headers={**operator, "Range": header})
        assert refused.status_code == 416, header
        assert_problem(refused, 416, "range-not-satisfiable")
        assert refused.headers["content-range"] == f"bytes */{size}"

    # Ranges the server does not serve partially get the whole file, as HTTP allows.
    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=9-3"):
        ignored = await http.get(url, headers={**operator, "Range": header})
        assert (ignored.status_code, ignored.content) == (200, data), header

    download = await http.get(f"{url}?download=true", headers={**operator, "Range": "bytes=0-3"})
    assert download.status_code == 206
    assert download.content == b"RIFF"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="recording-{recording_id}.wav"'
    )


async def test_deletion_removes_file_and_row_and_is_audited(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    recording_id, path = await make_recording(
        server.platform, tenant.id, user_ids=(tenant["operator"].id,)
    )
    url = f"/api/v1/recordings/{recording_id}"
    for role in ("operator", "group_head", "company_head"):  # may listen, may not delete
        assert_problem(await http.delete(url, headers=tenant[role].headers), 403, "forbidden")
    assert path.exists()

    assert (await http.delete(url, headers=admin)).status_code == 204
    assert not path.exists()
    assert await row_count(server, recording_id) == 0
    assert_problem(await http.get(url, headers=admin), 404, "no-such-recording")
    assert_problem(await http.delete(url, headers=admin), 404, "no-such-recording")

    audit = (
        await http.get(
            f"/api/v1/audit?object_type=recording&object_id={recording_id}", headers=admin
        )
    ).json()
    assert [e["action"] for e in audit["items"]] == ["recording.delete"]
    entry = audit["items"][0]
    assert entry["actor_id"] == tenant["administrator"].id
    assert entry["before"]["user_ids"] == [tenant["operator"].id]
    events = (await http.get("/api/v1/events?limit=1000", headers=admin)).json()
    kinds = {e["kind"] for e in events if e["data"].get("recording_id") == recording_id}
    assert kinds == {"RecordingStored", "RecordingDeleted"}


async def test_live_events_reach_those_who_may_listen(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    sales, support = tenant.group_ids
    for_sales, _ = await make_recording(server.platform, tenant.id, group_id=sales)
    for_support, _ = await make_recording(server.platform, tenant.id, group_id=support)
    seen = (
        await http.get("/api/v1/events?limit=1000", headers=tenant["group_head"].headers)
    ).json()
    stored = {e["data"]["recording_id"] for e in seen if e["kind"] == "RecordingStored"}
    assert for_sales in stored
    assert for_support not in stored


async def test_a_lost_file_is_a_distinct_404(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    operator = tenant["operator"].headers
    recording_id, path = await make_recording(
        server.platform, tenant.id, user_ids=(tenant["operator"].id,)
    )
    path.unlink()
    lost = await http.get(f"/api/v1/recordings/{recording_id}/audio", headers=operator)
    assert_problem(lost, 404, "recording-file-missing")
    # The catalogue entry itself is still there (and can be deleted by an administrator).
    assert (
        await http.get(f"/api/v1/recordings/{recording_id}", headers=operator)
    ).status_code == 200
    deleted = await http.delete(
        f"/api/v1/recordings/{recording_id}", headers=tenant["administrator"].headers
    )
    assert deleted.status_code == 204


async def test_retention_deletes_old_recordings_and_keeps_new(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    p = server.platform
    admin = tenant["administrator"].headers
    now = datetime.now(UTC)
    old, old_path = await make_recording(
        p, tenant.id, user_ids=(tenant["operator"].id,), started_at=now - timedelta(days=91)
    )
    new, new_path = await make_recording(
        p, tenant.id, user_ids=(tenant["operator"].id,), started_at=now - timedelta(days=89)
    )
    forever = RecordingCatalog(p.uow, p.recordings.root, retention_days=0)
    assert await forever.sweep(now) == 0
    assert old_path.exists()

    assert p.recordings.retention == timedelta(days=90)
    assert await p.recordings.sweep(now) == 1
    assert not old_path.exists()
    assert new_path.exists()
    assert await row_count(server, old) == 0
    assert_problem(
        await http.get(f"/api/v1/recordings/{old}", headers=admin), 404, "no-such-recording"
    )
    assert (await http.get(f"/api/v1/recordings/{new}/audio", headers=admin)).status_code == 200
    audit = (await http.get(f"/api/v1/audit?object_id={old}", headers=admin)).json()["items"]
    assert [(e["action"], e["actor_name"]) for e in audit] == [("recording.expire", "retention")]
    assert await p.recordings.sweep(now) == 0


async def test_files_are_laid_out_per_tenant_and_day(server: Server, tenant: TenantFixture) -> None:
    root = server.platform.recordings.root
    started = datetime(2026, 3, 4, 23, 30, tzinfo=UTC)
    assert recording_path(root, tenant.id, "abc123", started) == (
        root / tenant.id / "2026" / "03" / "04" / "abc123.wav"
    )
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="file name"):
            recording_path(root, tenant.id, bad, started)
    outside = NewRecording(
        tenant_id=tenant.id,
        call_id="x",
        path=Path("/etc/passwd"),
        started_at=started,
        ended_at=started,
        duration_s=0,
        size_bytes=0,
        sample_rate=8000,
        channels=2,
        from_number="1",
        to_number="2",
    )
    with pytest.raises(ValueError, match="outside"):
        await server.platform.recordings.add(outside)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("BYTES = 1 - 2", 10, (1, 2)),
        ("bytes=-", 10, None),
        ("bytes=0-", 0, RangeNotSatisfiable),
        ("bytes=-5", 0, RangeNotSatisfiable),
    ],
)
def test_range_header_parsing(
    header: str | None, size: int, expected: tuple[int, int] | type[Exception] | None
) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == expected
