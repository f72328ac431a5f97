"""The LL-HLS media playlist model: tags, part rules, delta updates, read-back (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mixer_ext.hls.playlist import (
    MediaPlaylist,
    Part,
    PlaylistSyntaxError,
    Segment,
    parse_attributes,
    parse_media_playlist,
)

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
PART = 9 * 1024 / 48000  # 0.192 s


def part_uri(msn: int, i: int) -> str:
    return f"part-{msn:06d}-{i}.ts"


def build(segments: int, open_parts: int = 0, **kw: object) -> MediaPlaylist:
    """A playlist of ``segments`` complete 5-part segments and ``open_parts`` parts of the next."""
    kw.setdefault("part_target", 0.2)
    pl = MediaPlaylist(1.0, window=kw.pop("window", 6), **kw)  # type: ignore[arg-type]
    t = T0
    for msn in range(1, segments + 2):
        n = 5 if msn <= segments else open_parts
        for i in range(n):
            pl.add_part(Part(part_uri(msn, i), PART), segment_start=t if i == 0 else None)
            pl.preload_hint = part_uri(msn, i + 1) if i < 4 else part_uri(msn + 1, 0)
        if msn <= segments:
            pl.add(Segment(f"seg-{msn:06d}.ts", 5 * PART, t, msn))
        t += timedelta(seconds=5 * PART)
    return pl


def test_plain_playlist_is_unchanged_rfc8216() -> None:
    pl = MediaPlaylist(2.0, window=3)
    for i in range(1, 5):
        pl.add(Segment(f"seg-{i:06d}.ts", 2.0, T0 + timedelta(seconds=2 * i), i))
    text = pl.render()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n")
    assert "#EXT-X-MEDIA-SEQUENCE:2\n" in text
    for tag in ("PART", "SERVER-CONTROL", "PRELOAD-HINT", "SKIP"):
        assert tag not in text


def test_ll_header_tags_and_hold_backs() -> None:
    text = build(2, 2).render()
    lines = text.splitlines()
    assert lines[:6] == [
        "#EXTM3U",
        "#EXT-X-VERSION:10",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,HOLD-BACK=3",
        "#EXT-X-PART-INF:PART-TARGET=0.2",
        "#EXT-X-MEDIA-SEQUENCE:1",
    ]
    assert lines[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-000003-2.ts"'
    assert text.count("#EXT-X-PRELOAD-HINT") == 1


def test_part_hold_back_is_configurable_never_below_twice_the_part_target() -> None:
    """MIXER_HLS_PART_HOLD_BACK (issue 27.4): the origin says how far behind players sit;
    RFC 8216bis 4.4.3.8 wants at least 2 x PART-TARGET, and the setting says so."""
    text = build(1, 1, part_hold_back=0.5).render()
    assert "PART-HOLD-BACK=0.5,HOLD-BACK=3" in text
    assert parse_media_playlist(text).part_hold_back == 0.5
    with pytest.raises(ValueError, match="twice"):
        MediaPlaylist(1.0, window=6, part_target=0.2, part_hold_back=0.39)
    from mixer_ext.settings import Settings

    assert Settings(hls_part_target=0.5, hls_part_hold_back=1.5).hls_part_hold_back == 1.5
    with pytest.raises(ValueError, match=r"MIXER_HLS_PART_HOLD_BACK .* twice"):
        Settings(hls_part_target=0.5, hls_part_hold_back=0.9)


def test_pdt_precedes_first_part_and_parts_precede_their_segment() -> None:
    lines = build(1, 1).render().splitlines()
    i = lines.index("#EXT-X-INDEPENDENT-SEGMENTS")
    assert lines[i + 1].startswith("#EXT-X-PROGRAM-DATE-TIME:2026-12-01T12:00:00.000Z")
    assert lines[i + 2] == '#EXT-X-PART:DURATION=0.19200,URI="part-000001-0.ts",INDEPENDENT=YES'
    assert lines[i + 7] == "#EXTINF:0.960000,"
    assert lines[i + 8] == "seg-000001.ts"
    assert lines[i + 9].startswith("#EXT-X-PROGRAM-DATE-TIME:2026-12-01T12:00:00.960Z")
    assert lines[i + 10].startswith('#EXT-X-PART:DURATION=0.19200,URI="part-000002-0.ts"')


def test_parts_listed_for_last_three_segments_and_the_open_one() -> None:
    text = build(6, 3).render()
    for msn in (1, 2, 3):
        assert f"part-{msn:06d}-" not in text
        assert f"seg-{msn:06d}.ts" in text
    for msn in (4, 5, 6):
        assert all(f'"{part_uri(msn, i)}"' in text for i in range(5))
    assert all(f'"{part_uri(7, i)}"' in text for i in range(3))


def test_part_longer_than_target_is_refused() -> None:
    pl = MediaPlaylist(1.0, window=6, part_target=0.2)
    with pytest.raises(ValueError, match="longer than the part target"):
        pl.add_part(Part("p.ts", 0.21))
    with pytest.raises(ValueError, match="need a part target"):
        MediaPlaylist(1.0, window=6).add_part(Part("p.ts", 0.1))


def test_ended_playlist_has_no_hint_and_no_open_parts() -> None:
    pl = build(2, 2)
    pl.ended = True
    text = pl.render()
    assert text.endswith("#EXT-X-ENDLIST\n")
    assert "PRELOAD-HINT" not in text
    assert "part-000003-" not in text
    assert pl.position().preload_hint is None


def test_position_reports_the_live_edge() -> None:
    pos = build(4, 2).position()
    assert (pos.first_msn, pos.last_msn, pos.last_msn_parts, pos.open_parts) == (1, 4, 5, 2)
    assert pos.target_duration == 1 and pos.part_target == 0.2 and not pos.can_skip
    assert pos.preload_hint == "part-000005-2.ts"
    empty = MediaPlaylist(1.0, window=6, part_target=0.2).position()
    assert (empty.first_msn, empty.last_msn, empty.open_parts) == (1, 0, 0)


def test_window_slides_and_returns_what_left() -> None:
    pl = build(6)
    gone = pl.add(Segment("seg-000007.ts", 0.96, T0, 7))
    assert [s.sequence for s in gone] == [1]
    assert pl.media_sequence == 2


def test_delta_update_skips_segments_beyond_the_skip_boundary() -> None:
    pl = build(20, 1, window=None, delta_updates=True)
    full = pl.render()
    assert "CAN-SKIP-UNTIL=6," in full
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in full
    assert "#EXT-X-SKIP" not in full
    delta = pl.render(skip=True)
    # 6 s boundary over 0.96 s segments: the last 7 complete segments (6.72 s) stay
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=13\n" in delta
    assert "seg-000013.ts" not in delta and "seg-000014.ts" in delta
    assert delta.count("#EXTINF") == 7
    assert delta.splitlines()[-1] == full.splitlines()[-1]
    assert pl.position().can_skip
    # too short to skip anything
    assert "#EXT-X-SKIP" not in build(5, window=None, delta_updates=True).render(skip=True)


def test_delta_updates_are_not_offered_without_parts() -> None:
    pl = MediaPlaylist(1.0, window=None, delta_updates=True)
    for i in range(1, 30):
        pl.add(Segment(f"seg-{i:06d}.ts", 1.0, T0, i))
    assert "CAN-SKIP" not in pl.render() and "SKIP" not in pl.render(skip=True)


def test_long_event_playlist_renders_from_cache() -> None:
    pl = MediaPlaylist(1.0, window=None, part_target=0.2)
    for msn in range(1, 3001):
        for i in range(5):
            pl.add_part(Part(part_uri(msn, i), PART), segment_start=T0)
        pl.add(Segment(f"seg-{msn:06d}.ts", 0.96, T0, msn))
    first = pl.render()
    assert first == pl.render()
    assert first.count("#EXTINF") == 3000 and first.count("#EXT-X-PART:") == 15


@pytest.mark.parametrize(
    ("segments", "open_parts", "kw"),
    [
        (0, 0, {}),
        (0, 3, {}),
        (4, 2, {}),
        (7, 5, {}),
        (12, 1, {"window": None, "delta_updates": True}),
    ],
)
def test_render_parse_round_trip(segments: int, open_parts: int, kw: dict[str, object]) -> None:
    pl = build(segments, open_parts, **kw)
    text = pl.render()
    back = parse_media_playlist(text)
    assert back.render() == text
    assert back.position() == pl.position()


def test_round_trip_of_an_ended_plain_playlist() -> None:
    pl = MediaPlaylist(2.0, window=None)
    pl.add(Segment("seg-000001.ts", 1.5, T0, 1))
    pl.ended = True
    assert parse_media_playlist(pl.render()).render() == pl.render()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a playlist"),
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1\n", "no #EXT-X-TARGETDURATION"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:x\n", "line 2"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:1\nseg.ts\n", "line 3: segment URI without EXTINF"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:DURATION=0.2\n", "line 3"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n", "delta update"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PlaylistSyntaxError, match=message):
        parse_media_playlist(text)


def test_attribute_lists() -> None:
    assert parse_attributes('DURATION=0.2,URI="a,b.ts",INDEPENDENT=YES') == {
        "DURATION": "0.2",
        "URI": "a,b.ts",
        "INDEPENDENT": "YES",
    }
    with pytest.raises(PlaylistSyntaxError):
        parse_attributes('URI="open')
