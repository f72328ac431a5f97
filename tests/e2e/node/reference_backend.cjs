'use strict';
// The steps of Twilio's reference backend for audio-mixer rooms (twilio-live-interactive-audio's
// serverless functions, and the video variant's context), replayed with the `twilio` Node
// library 3.x for Video and axios form POSTs for Media, as those functions do. Only the base
// URLs differ. Driven by tests/e2e/test_api_reference_node.py, one function per invocation:
//
//   node reference_backend.cjs create-room ROOM_NAME      -> {room_sid, player_streamer_sid, media_processor_sid}
//   node reference_backend.cjs join-room PLAYER_STREAMER   -> {token}  (the player grant inside)
//   node reference_backend.cjs remove-speaker ROOM IDENTITY -> {removed: true}
//   node reference_backend.cjs delete-room ROOM MP_SID PS_SID -> {deleted: true}
//
// Settings from the environment: ACCOUNT_SID, AUTH_TOKEN, TWILIO_API_KEY_SID,
// TWILIO_API_KEY_SECRET, MEDIA_EXTENSION, MEDIA_BASE_URL (the mixer-ext API), VIDEO_BASE_URL
// (the room server). Prints one JSON line; exits non-zero with the error on failure.

const querystring = require('querystring');
const axios = require('axios');
const twilio = require('twilio');

const env = process.env;
const AccessToken = twilio.jwt.AccessToken;
const MAX_ALLOWED_SESSION_DURATION = 14400;

function clients() {
  const client = twilio(env.ACCOUNT_SID, env.AUTH_TOKEN);
  client.video.baseUrl = env.VIDEO_BASE_URL; // was https://video.twilio.com
  const basic = Buffer.from(`${env.ACCOUNT_SID}:${env.AUTH_TOKEN}`, 'utf8').toString('base64');
  const media = axios.create({
    headers: {
      Authorization: `Basic ${basic}`,
      'content-type': 'application/x-www-form-urlencoded;charset=utf-8',
    },
    baseURL: `${env.MEDIA_BASE_URL}/v1/`, // was https://media.twilio.com/v1/
  });
  return { client, media };
}

async function createRoom(roomName) {
  const { client, media } = clients();
  const room = await client.video.rooms.create({ uniqueName: roomName, type: 'group' });
  const playerStreamer = await media('PlayerStreamers', { method: 'post', data: 'Video=false' });
  const mediaProcessor = await media('MediaProcessors', {
    method: 'post',
    data: querystring.stringify({
      Extension: env.MEDIA_EXTENSION,
      // the video reference backend's context: the audio mixer ignores video/resolution
      ExtensionContext: JSON.stringify({
        room: { name: room.sid },
        outputs: [playerStreamer.data.sid],
        resolution: '1920x1080',
        video: false,
      }),
    }),
  });
  return {
    room_sid: room.sid,
    player_streamer_sid: playerStreamer.data.sid,
    media_processor_sid: mediaProcessor.data.sid,
    media_processor_status: mediaProcessor.data.status,
  };
}

async function joinRoom(playerStreamerSid) {
  const { media } = clients();
  const grant = await media(`PlayerStreamers/${playerStreamerSid}/PlaybackGrant`, {
    method: 'post',
    data: 'AccessControlAllowOrigin=*',
  });
  const playbackGrant = grant.data.grant;
  const token = new AccessToken(env.ACCOUNT_SID, env.TWILIO_API_KEY_SID, env.TWILIO_API_KEY_SECRET, {
    ttl: MAX_ALLOWED_SESSION_DURATION,
  });
  token.identity = 'listener';
  // the reference's own way: a plain object standing for a grant under the key 'player'
  token.addGrant({ key: 'player', player: playbackGrant, toPayload: () => playbackGrant });
  return { token: token.toJwt() };
}

async function removeSpeaker(roomName, identity) {
  const { client } = clients();
  await client.video.rooms(roomName).participants(identity).update({ status: 'disconnected' });
  return { removed: true };
}

async function deleteRoom(roomName, mediaProcessorSid, playerStreamerSid) {
  const { client, media } = clients();
  const room = await client.video.rooms(roomName).update({ status: 'completed' });
  const mp = await media(`MediaProcessors/${mediaProcessorSid}`, { method: 'post', data: 'Status=ENDED' });
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const ps = await media(`PlayerStreamers/${playerStreamerSid}`, { method: 'post', data: 'Status=ENDED' });
  return { deleted: true, room_status: room.status, media_processor: mp.data.status, player_streamer: ps.data.status };
}

const steps = {
  'create-room': createRoom,
  'join-room': joinRoom,
  'remove-speaker': removeSpeaker,
  'delete-room': deleteRoom,
};

async function main() {
  const [step, ...args] = process.argv.slice(2);
  if (!steps[step]) throw new Error(`unknown step ${step}`);
  const result = await steps[step](...args);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((e) => {
  const detail = e.response ? ` (HTTP ${e.response.status} ${JSON.stringify(e.response.data)})` : '';
  process.stderr.write(`${e.message}${detail}\n`);
  process.exit(1);
});
