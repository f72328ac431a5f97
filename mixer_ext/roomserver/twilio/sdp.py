"""Making the server's re-offers acceptable to the browser that offered first.

aiortc numbers RTP header extensions and payload types afresh in every offer
(``createOffer`` resets each transceiver to its defaults), while the browser keeps the
numbers negotiated from its own first offer.  Chrome refuses a re-offer that moves an
extension to another ID on an active m-line ("RTP extension ID reassignment not
supported"), so the server rewrites its offers into the client's numbering before sending
and applying them: header extension IDs by URI, audio payload types by codec
(name/clock rate/channels).  aiortc adopts the numbers of the browser's answer afterwards,
so both sides agree.  Plain text in, text out; no I/O.
"""

from __future__ import annotations

import re

_EXTMAP = re.compile(r"^a=extmap:(\d+)(/\w+)? (\S+)(.*)$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)(?:/(\d+))?$")
_PT_LINE = re.compile(r"^a=(rtpmap|fmtp|rtcp-fb):(\d+)(.*)$")


def _sections(sdp: str) -> list[list[str]]:
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def numbering(sdp: str) -> tuple[dict[str, int], dict[tuple[str, int, int], int]]:
    """The client's numbers: {extension URI: id}, {(codec, clock, channels): audio PT}."""
    extensions: dict[str, int] = {}
    audio_pts: dict[tuple[str, int, int], int] = {}
    for section in _sections(sdp):
        audio = bool(section) and section[0].startswith("m=audio")
        for line in section:
            m = _EXTMAP.match(line)
            if m:
                extensions.setdefault(m.group(3), int(m.group(1)))
            m = _RTPMAP.match(line)
            if m and audio:
                key = (m.group(2).lower(), int(m.group(3)), int(m.group(4) or 1))
                audio_pts.setdefault(key, int(m.group(1)))
    return extensions, audio_pts


def align_offer(offer: str, reference: str) -> str:
    """``offer`` (the server's) renumbered into ``reference``'s (the client's) numbering.

    An extension the client never offered keeps its ID unless that ID is the client's for
    another URI, then it is dropped; likewise an audio codec the client never offered keeps
    its payload type unless that would collide, then it leaves that m-line.
    """
    extensions, audio_pts = numbering(reference)
    ext_ids = set(extensions.values())
    used_pts = set(audio_pts.values())
    out: list[str] = []
    for section in _sections(offer):
        if not section or not section[0].startswith("m="):
            out.extend(section)
            continue
        audio = section[0].startswith("m=audio")
        pt_map: dict[int, int | None] = {}
        if audio:
            for line in section:
                m = _RTPMAP.match(line)
                if m:
                    old = int(m.group(1))
                    key = (m.group(2).lower(), int(m.group(3)), int(m.group(4) or 1))
                    new = audio_pts.get(key)
                    pt_map[old] = new if new is not None else (None if old in used_pts else old)
        for line in section:
            if line.startswith("m=") and audio:
                words = line.split(" ")
                kept = []
                for pt in words[3:]:
                    mapped = pt_map.get(int(pt), int(pt)) if pt.isdigit() else None
                    if mapped is not None:
                        kept.append(str(mapped))
                out.append(" ".join(words[:3] + kept))
                continue
            m = _EXTMAP.match(line)
            if m:
                uri = m.group(3)
                new_id = extensions.get(uri)
                if new_id is None:
                    if int(m.group(1)) in ext_ids:
                        continue
                    new_id = int(m.group(1))
                out.append(f"a=extmap:{new_id}{m.group(2) or ''} {uri}{m.group(4)}")
                continue
            m = _PT_LINE.match(line)
            if m and audio:
                new_pt = pt_map.get(int(m.group(2)), int(m.group(2)))
                if new_pt is not None:
                    out.append(f"a={m.group(1)}:{new_pt}{m.group(3)}")
                continue
            out.append(line)
    return "\r\n".join(out) + "\r\n"
