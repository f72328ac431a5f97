// Speaker page of the mixer-ext embedded room server. Plain JS, no build step.
// Protocol: mixer_ext/roomserver/protocol.py (version 1). The server always offers; this page
// answers, publishes its microphone on the m-line named `publish_mid`, and plays the others.
"use strict";

const PROTOCOL_VERSION = 1;
const $ = (id) => document.getElementById(id);
const state = { ws: null, pc: null, mic: null, muted: false, chain: Promise.resolve(),
                people: new Map(), identity: null };

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function renderPeople() {
  const ul = $("people");
  ul.replaceChildren();
  for (const [name, info] of state.people) {
    const li = document.createElement("li");
    li.textContent = name + (name === state.identity ? " (you)" : "");
    if (info.muted) li.className = "muted";
    ul.appendChild(li);
  }
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...message }));
  }
}

async function fetchToken(room, identity) {
  const typed = $("token").value.trim();
  if (typed) return typed;
  const resp = await fetch("/v1/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ room, identity }),
  });
  if (resp.status === 403) throw new Error("this server hands out no tokens: paste one");
  if (!resp.ok) throw new Error("token request failed (" + resp.status + ")");
  return (await resp.json()).token;
}

function iceGatheringDone(pc, timeoutMs) {
  // The server takes no trickled candidates: answer once gathering is complete.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function onOffer(msg) {
  const pc = state.pc;
  await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
  if (msg.publish_mid !== null && msg.publish_mid !== undefined) {
    const t = pc.getTransceivers().find((x) => x.mid === msg.publish_mid);
    if (t && !t.sender.track) {
      await t.sender.replaceTrack(state.mic.getAudioTracks()[0]);
      t.direction = "sendonly";
    }
  }
  await pc.setLocalDescription(await pc.createAnswer());
  await iceGatheringDone(pc, 3000);
  send({ type: "answer", sdp: pc.localDescription.sdp });
}

function onMessage(msg) {
  switch (msg.type) {
    case "joined":
      state.people.set(state.identity, { muted: false });
      for (const p of msg.participants) {
        state.people.set(p.identity, { muted: p.tracks.some((t) => !t.enabled) });
      }
      setStatus("Joined room " + msg.room + " as " + msg.identity + ".");
      $("mute").disabled = false;
      $("leave").disabled = false;
      break;
    case "participant-joined":
      state.people.set(msg.identity, { muted: false });
      break;
    case "participant-left":
      state.people.delete(msg.identity);
      break;
    case "track-enabled":
      if (state.people.has(msg.identity)) state.people.get(msg.identity).muted = !msg.enabled;
      break;
    case "offer":
      // one negotiation at a time, in order
      state.chain = state.chain.then(() => onOffer(msg)).catch((e) => setStatus("Media error: " + e, true));
      break;
    case "error":
      console.warn("server refused a message:", msg.code, msg.message);
      break;
    case "disconnected":
      setStatus("Disconnected: " + msg.reason + (msg.message ? " (" + msg.message + ")" : ""),
                msg.reason !== "left");
      break;
  }
  renderPeople();
}

async function join(event) {
  event.preventDefault();
  const identity = $("identity").value.trim();
  const room = $("room").value.trim();
  $("join").disabled = true;
  try {
    const token = await fetchToken(room, identity);
    setStatus("Opening the microphone...");
    state.mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      video: false,
    });
    state.identity = identity;
    // STUN/TURN from the server (TURN credentials for this token's identity)
    const config = await (await fetch("/v1/config?room=" + encodeURIComponent(room), {
      headers: { Authorization: "Bearer " + token },
    })).json();
    state.pc = new RTCPeerConnection({
      iceServers: config.iceServers || [],
      bundlePolicy: "max-bundle",
    });
    state.pc.ontrack = (ev) => {
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.srcObject = new MediaStream([ev.track]);
      $("players").appendChild(audio);
    };
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    state.ws = new WebSocket(scheme + location.host + "/v1/signal");
    state.ws.onopen = () => send({ type: "join", room, token, publish: true, auto_subscribe: true });
    state.ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
    state.ws.onclose = () => { hangUp(); if (!$("status").textContent.startsWith("Disconnected")) setStatus("Disconnected."); };
    setStatus("Joining...");
  } catch (e) {
    setStatus(String(e.message || e), true);
    hangUp();
  }
}

function toggleMute() {
  state.muted = !state.muted;
  const track = state.mic && state.mic.getAudioTracks()[0];
  if (track) track.enabled = !state.muted; // the browser then sends silence
  send({ type: "set-enabled", enabled: !state.muted });
  if (state.people.has(state.identity)) state.people.get(state.identity).muted = state.muted;
  $("mute").textContent = state.muted ? "Unmute" : "Mute";
  renderPeople();
}

function leave() {
  send({ type: "leave" });
  setStatus("Disconnected: left");
  if (state.ws) state.ws.close();
  hangUp();
}

function hangUp() {
  if (state.pc) state.pc.close();
  if (state.mic) state.mic.getTracks().forEach((t) => t.stop());
  state.pc = null; state.mic = null; state.muted = false;
  state.people.clear();
  renderPeople();
  $("players").replaceChildren();
  $("join").disabled = false;
  $("mute").disabled = true;
  $("mute").textContent = "Mute";
  $("leave").disabled = true;
}

async function init() {
  const params = new URLSearchParams(location.search);
  for (const key of ["identity", "room"]) if (params.get(key)) $(key).value = params.get(key);
  try {
    const config = await (await fetch("/v1/config")).json();
    if (config.open) $("token-hint").textContent = "(optional: this server hands out tokens)";
    else $("token").required = true;
  } catch (e) { /* the form still works with a pasted token */ }
  $("form").addEventListener("submit", join);
  $("mute").addEventListener("click", toggleMute);
  $("leave").addEventListener("click", leave);
}

init();
