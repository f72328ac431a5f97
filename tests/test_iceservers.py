"""ICE servers for clients: TURN REST credentials in coturn's scheme (mixer_ext/iceservers.py)."""

from __future__ import annotations

from mixer_ext.iceservers import IceServers, turn_rest_credential


def test_turn_rest_credential_is_coturns_scheme() -> None:
    # base64(HMAC-SHA1("north", "1700000000:alice")), computed independently with openssl:
    # printf 1700000000:alice | openssl dgst -sha1 -hmac north -binary | base64
    user, password = turn_rest_credential("north", "alice", 1_700_000_000)
    assert user == "1700000000:alice"
    assert password == "Cd/49soE35ICqcJF/bCTn8Z4OyE="
    ice = IceServers(
        stun_urls=("stun:s:3478",), turn_urls=("turn:t:3478",), turn_secret="north", turn_ttl=60
    )
    anonymous = ice.for_client(None, 100.0)
    assert anonymous == [{"urls": ["stun:s:3478"]}]  # no relay for who proved nothing
    named = ice.for_client("bob", 100.0)[1]
    assert named["username"] == "160:bob" and "north" not in repr(ice)
