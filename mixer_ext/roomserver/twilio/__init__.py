"""What existing Twilio Video apps speak, for the embedded room server.

Sans-I/O pieces, each with its own tests:

* ``errors``: the twilio-video.js error codes the server sends (``TwilioVideoError``);
* ``access_token``: verifying access tokens minted by the Twilio helper libraries
  (``AccessToken`` + ``VideoGrant``) with ``MIXER_ACCOUNT_SID`` / ``MIXER_API_KEYS``;
* ``connection``: the twilio-video.js connection protocol (TCMP v2: hello/welcome,
  heartbeats, msg, bye) as a server-side state machine;
* ``signaling``: the v2 room signaling messages (connect, connected, update, synced,
  disconnected, error; participants, tracks, revisions, peer connection descriptions);
* ``sids``: Twilio-shaped resource SIDs (``RM``/``PA``/``MT`` + 32 hex).

Written from twilio-video.js 2.36.0 (``lib/twilioconnection.js``,
``lib/signaling/v2/``, ``lib/util/twilio-video-errors.js``), pinned in package.json.
"""
