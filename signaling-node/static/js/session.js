// Conclave web client: the session. Join (token, devices, socket, `join`), the server's
// messages, heartbeats, leave, and surviving failures:
// when the WebSocket drops, the client reconnects (backing off) and sends `resume` with the
// `resumeToken` from `joined` — same participant, same peer connection, media never stops.
// If the server says `mediaState: failed` (its media node died; the room moved), the client
// builds a fresh peer connection and offers again, without leaving the room.

import { conclave, params, session, setSession } from './state.js';
import {
  clearStatus,
  clearStatusIfInfo,
  clearStatusTopic,
  logLine,
  makeTile,
  remoteTile,
  applyTileAudio,
  removeTile,
  renderRoster,
  reportError,
  setPill,
  setTileMedia,
  setTileName,
  renderDevices,
  setWsState,
  showCallView,
  showJoinView,
  showSpeaking,
  showStatus,
  ui,
  updateControls,
  updateGridCount,
  updateMediaPill,
} from './ui.js';
import { openSocket, send } from './protocol.js';
import {
  adoptLocalStream,
  applyPublishLayers,
  detachMid,
  dropPeerConnection,
  getLocalMedia,
  describeMediaFailure,
  onServerOffer,
  retryMedia,
  startMedia,
  stopLocalMedia,
  updateIceServers,
  watchViews,
} from './media.js';
import { refreshDevices } from './devices.js';
import { describeClose, describeServerError } from './errors.js';
import { playCue } from './sounds.js';

const LEAVE_TIMEOUT_MS = 2000;
/** Wait before offering again after `unavailable` (doubled at each attempt, see retryMedia). */
const UNAVAILABLE_RETRY_MS = 1000;
const HEARTBEAT_DEAD_INTERVALS = 3;

function newSession(room, name) {
  return {
    room,
    name,
    ws: null,
    pc: null,
    queue: Promise.resolve(), // server messages are handled strictly in order
    heartbeatTimer: null,
    lastServerMessageAt: 0,
    offerSent: false,
    pendingCandidates: [],
    /** access token, and `resume` credentials from `joined` */
    token: null,
    resumeToken: null,
    resumeGraceMs: 15000,
    reconnecting: false,
    mediaRetryTimer: null,
    /** offers since media last connected (see retryMedia) */
    mediaAttempts: 0,
    joinedResolve: null,
    joinedReject: null,
    leftResolve: null,
    leaving: false,
    closed: false,
    /** mid -> { participantId, track } currently attached to a tile */
    attached: new Map(),
    /** participants that left; their tiles must not come back from a late track */
    gone: new Set(),
    /** participantId -> { el, video, stream } */
    tiles: new Map(),
    localTile: null,
    soundBlocked: false,
  };
}

function randomId(prefix) {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function userId() {
  let id = null;
  try {
    id = sessionStorage.getItem('conclave.userId');
    if (!id) {
      id = randomId('u-');
      sessionStorage.setItem('conclave.userId', id);
    }
  } catch (_) {
    id = id || randomId('u-');
  }
  return id;
}

// ---------------------------------------------------------------------------------------
// Join, reconnect, heartbeat, leave
// ---------------------------------------------------------------------------------------
async function fetchToken(room, name) {
  const fromUrl = params.get('token');
  if (fromUrl) return fromUrl;
  const q = new URLSearchParams({ room, user: userId(), name, community: 'default' });
  let res;
  try {
    res = await fetch(`/dev/token?${q}`, { cache: 'no-store' });
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  if (res.status === 404) throw new Error('this server needs a token (open the link you were given, with ?token=...)');
  if (res.status === 400) {
    const body = await res.json().catch(() => null);
    throw new Error(`token request refused: ${(body && body.message) || 'bad request'}`);
  }
  if (!res.ok) throw new Error(`token request failed: HTTP ${res.status}`);
  const body = await res.json();
  if (!body || typeof body.token !== 'string') throw new Error('token request returned no token');
  return body.token;
}

export async function join(room, name, opts) {
  room = String(room || '').trim();
  name = String(name || '').trim();
  if (!room) throw new Error('room is required');
  if (!name) name = 'Guest';
  if (conclave.state === 'joining' || conclave.state === 'joined') throw new Error(`already ${conclave.state}`);
  const wantAudio = opts && 'audio' in opts ? !!opts.audio : ui.startAudio.checked;
  const wantVideo = opts && 'video' in opts ? !!opts.video : ui.startVideo.checked;

  const s = newSession(room, name);
  setSession(s);
  resetCallState();
  conclave.state = 'joining';
  conclave.timings = { joinStart: performance.now(), joined: null, firstFrame: {} };
  showCallView(room);
  showStatus('Joining…', 'info');

  try {
    const [token, stream] = await Promise.all([fetchToken(room, name), getLocalMedia(wantAudio, wantVideo)]);
    if (session !== s) throw new Error('join cancelled');
    // The microphone is open even if it starts muted; the camera only if it starts on.
    adoptLocalStream(stream, wantAudio);
    refreshDevices().then(renderDevices);
    s.localTile = makeTile('', name, true);
    for (const t of stream.getTracks()) s.localTile.stream.addTrack(t);
    s.localTile.video.play().catch(() => {});
    updateControls();

    await connect(s, room);
    const joined = new Promise((resolve, reject) => {
      s.joinedResolve = resolve;
      s.joinedReject = reject;
    });
    s.token = token;
    send({ id: 'join', token, name, audio: conclave.audio, video: conclave.video });
    await joined;
  } catch (err) {
    if (session === s && !s.closed) {
      reportError(`Could not join: ${err.readable || err.message}`, '', err.code);
      teardown(s);
      conclave.state = 'idle';
      showJoinView();
    }
    throw err;
  }
}

/** Open the socket with this module's handlers (protocol.js knows nothing of sessions). */
function connect(s, room) {
  return openSocket(s, room, handle, onSocketClosed);
}

/** The open socket of the current call closed: the leave completed, a join or resume was
 * refused, or the connection dropped. */
function onSocketClosed(s, ev) {
  if (s.leftResolve) {
    s.leftResolve();
    return;
  }
  const why = describeClose(ev.code, ev.reason);
  logLine('warn', `socket closed: code ${ev.code}${ev.reason ? ', ' + ev.reason : ''}`);
  if ((conclave.state === 'joining' || s.reconnecting) && s.joinedReject) {
    const err = new Error(`server closed the connection (code ${ev.code}${ev.reason ? ', ' + ev.reason : ''})`);
    err.readable = why;
    s.joinedReject(err);
    return;
  }
  // 4001: this participant was resumed on another connection (another tab?): stop here.
  // 4002: the same user joined the room again (another tab or device): this seat is gone.
  // 1008: closed for a policy (a rate limit; see docs/protocol.md): reconnecting would repeat it.
  if (conclave.state === 'joined' && (ev.code === 4001 || ev.code === 4002 || ev.code === 1008)) connectionLost(s, why);
  else if (conclave.state === 'joined') reconnect(s, why);
}

/** The WebSocket dropped: reconnect and `resume` within the grace period, media untouched. */
async function reconnect(s, why) {
  if (session !== s || s.closed || s.reconnecting) return;
  s.reconnecting = true;
  conclave.state = 'reconnecting';
  conclave.reconnects += 1;
  conclave.lastDisconnect = why;
  showStatus(`Connection lost (${why}); reconnecting…`, 'warn', 'connection');
  logLine('warn', `connection lost (${why}); reconnecting`);
  if (s.heartbeatTimer) clearInterval(s.heartbeatTimer);
  s.heartbeatTimer = null;
  const old = s.ws;
  s.ws = null;
  if (old && old.readyState === WebSocket.OPEN) old.close(4000, 'reconnecting');
  const deadline = Date.now() + s.resumeGraceMs;
  let delay = 200;
  while (session === s && !s.closed && Date.now() < deadline) {
    try {
      await connect(s, s.room);
      const back = new Promise((resolve, reject) => {
        s.joinedResolve = resolve;
        s.joinedReject = reject;
      });
      send({ id: 'resume', token: s.token, resumeToken: s.resumeToken });
      await back;
      s.reconnecting = false;
      return;
    } catch (err) {
      logLine('warn', `reconnect failed: ${err.message}`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 2000);
  }
  s.reconnecting = false;
  connectionLost(s, 'could not reconnect in time');
}

function startHeartbeat(s, intervalMs) {
  const interval = Number(intervalMs) > 0 ? Number(intervalMs) : 10000;
  if (s.heartbeatTimer) clearInterval(s.heartbeatTimer);
  s.lastServerMessageAt = Date.now();
  s.heartbeatTimer = setInterval(() => {
    send({ id: 'heartbeat' });
    // The server sends something at least every interval: a long silence means a dead link.
    const silentMs = Date.now() - s.lastServerMessageAt;
    if (silentMs > HEARTBEAT_DEAD_INTERVALS * interval && s.ws) {
      reconnect(s, `the server has been silent for ${Math.round(silentMs / 1000)} s`);
    } else if (silentMs > 1.5 * interval) {
      setPill(ui.wsState, 'stale', 'no reply');
    } else if (conclave.wsState === 'open') {
      setPill(ui.wsState, 'open');
    }
  }, interval);
}

function connectionLost(s, why) {
  if (session !== s || s.closed) return;
  reportError(`Lost the connection to the server (${why})`, 'connection');
  teardown(s);
  conclave.state = 'left';
  showJoinView();
}

export async function leave() {
  const s = session;
  if (!s || (conclave.state !== 'joined' && conclave.state !== 'joining')) return;
  s.leaving = true;
  const left = new Promise((resolve) => {
    s.leftResolve = resolve;
  });
  const sent = send({ id: 'leave' });
  if (s.pc) s.pc.close();
  stopLocalMedia();
  if (sent) await Promise.race([left, new Promise((r) => setTimeout(r, LEAVE_TIMEOUT_MS))]);
  teardown(s);
  conclave.state = 'left';
  showJoinView();
  showStatus('You left the room.', 'info');
}

// ---------------------------------------------------------------------------------------
// Server messages (in arrival order, see protocol.js)
// ---------------------------------------------------------------------------------------
async function handle(s, msg) {
  switch (msg.id) {
    case 'joined':
      return msg.resumed ? onResumed(s, msg) : onJoined(s, msg);
    case 'answer':
      if (!s.pc || s.pc.signalingState !== 'have-local-offer') {
        throw new Error(`unexpected answer in signaling state ${s.pc ? s.pc.signalingState : 'none'}`);
      }
      await s.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      return;
    case 'serverOffer':
      return onServerOffer(s, msg);
    case 'participantJoined': {
      const p = msg.participant;
      const isNew = !(p.participantId in conclave.participants);
      conclave.participants[p.participantId] = p;
      const tile = session.tiles.get(p.participantId) || remoteTile(p.participantId);
      if (tile) {
        setTileName(tile, p.name, false);
        setTileMedia(tile, p.audio, p.video, p.deafened, p.media);
        applyTileAudio(tile);
      }
      renderRoster();
      if (isNew && p.participantId !== conclave.participantId) playCue('join', p.participantId);
      return;
    }
    case 'participantLeft': {
      const known = msg.participantId in conclave.participants;
      removeParticipant(s, msg.participantId);
      renderRoster();
      if (known && msg.participantId !== conclave.participantId) playCue('leave', msg.participantId);
      return;
    }
    case 'participantState': {
      const p = conclave.participants[msg.participantId];
      if (p) {
        p.audio = msg.audio;
        p.video = msg.video;
        p.deafened = !!msg.deafened; // absent: not deafened (and servers before deafen)
        if (msg.media) p.media = msg.media; // absent: a server that does not tell
      }
      const tile = s.tiles.get(msg.participantId);
      if (tile) setTileMedia(tile, msg.audio, msg.video, !!msg.deafened, p ? p.media : msg.media);
      renderRoster();
      return;
    }
    case 'mediaState':
      conclave.serverMediaState = msg.state;
      updateMediaPill();
      if (msg.state === 'failed') {
        // The media node lost our peer (it died, or the connection timed out): try again at
        // once (the room may be on a live node by now), unless it failed too often.
        return retryMedia(s, describeMediaFailure(s.pc), 0);
      }
      if (msg.state === 'connected') {
        clearStatusIfInfo();
        clearStatusTopic('media');
      }
      return;
    case 'publishLayers':
      return applyPublishLayers(s, msg);
    case 'speaking':
      conclave.speaking = { participants: msg.participants || [], dominant: msg.dominant || null };
      showSpeaking();
      return;
    case 'left':
      if (s.leftResolve) s.leftResolve();
      return;
    case 'error': {
      if (msg.code === 'resume_failed' && s.reconnecting) {
        // Gone from the room (the grace period passed): join again as a new participant.
        logLine('warn', 'resume refused; joining again');
        for (const pid of Array.from(s.tiles.keys())) removeParticipant(s, pid);
        s.gone.clear(); // they may well still be there: the new roster says
        send({ id: 'join', token: s.token, name: s.name, audio: conclave.audio, video: conclave.video });
        return;
      }
      if (msg.code === 'unavailable' && conclave.state === 'joined' && s.pc && s.pc.signalingState === 'have-local-offer') {
        // Our new offer came while the room was moving to another media node, or the media
        // node is unreachable: try again a little later, a few times.
        return retryMedia(s, 'the media server is unavailable', UNAVAILABLE_RETRY_MS);
      }
      if (msg.code === 'unknown_message' && /setSources/.test(msg.message || '')) {
        // A server from before source declarations: it takes every video track for a camera.
        logLine('warn', 'this server does not take source declarations');
        return;
      }
      if (msg.code === 'unknown_message' && /setDeafened/.test(msg.message || '')) {
        // A server from before deafen: incoming audio is still muted here, the room just
        // does not hear of it.
        logLine('warn', 'this server does not relay deafen');
        return;
      }
      const readable = describeServerError(msg.code, msg.message);
      if ((conclave.state === 'joining' || s.reconnecting) && s.joinedReject) {
        const err = new Error(`${msg.code}: ${msg.message}`);
        err.code = msg.code;
        err.readable = readable;
        s.joinedReject(err);
        return; // the join's own failure report says it
      }
      reportError(readable, '', msg.code);
      return;
    }
    default:
      logLine('warn', `ignored unknown message ${msg.id}`);
  }
}

async function onJoined(s, msg) {
  conclave.participantId = msg.participantId;
  conclave.room = msg.room;
  conclave.community = msg.community;
  conclave.timings.joined = Math.round(performance.now() - conclave.timings.joinStart);
  conclave.participants = {};
  for (const p of msg.participants || []) conclave.participants[p.participantId] = p;
  if (s.localTile) s.localTile.el.dataset.participantId = msg.participantId;
  for (const p of msg.participants || []) remoteTile(p.participantId);
  ui.roomLabel.textContent = msg.room;
  ui.roomLabel.hidden = false;

  s.resumeToken = msg.resumeToken;
  if (Number(msg.resumeGraceMs) > 0) s.resumeGraceMs = Number(msg.resumeGraceMs);
  startHeartbeat(s, msg.heartbeatIntervalMs);
  dropPeerConnection(s); // a rejoin after a failed resume starts over
  updateIceServers(s, msg.iceServers); // TURN credentials minted for this join
  await startMedia(s);
  if (!s.stopWatchingViews) watchViews(s);

  conclave.state = 'joined';
  // Deafened before joining (or before a rejoin): the room hears of it now (docs/protocol.md).
  if (conclave.deafened) send({ id: 'setDeafened', enabled: true });
  updateMediaPill();
  updateControls();
  clearStatusIfInfo();
  if (s.joinedResolve) s.joinedResolve();
  s.joinedResolve = s.joinedReject = null;
}

/** `joined` answering our `resume`: same participant and media; catch up on the roster. */
function onResumed(s, msg) {
  conclave.resumes += 1;
  s.resumeToken = msg.resumeToken;
  // Fresh TURN credentials: the live connection keeps its path; the next one uses them.
  updateIceServers(s, msg.iceServers);
  const now = new Set((msg.participants || []).map((p) => p.participantId));
  for (const pid of Object.keys(conclave.participants)) {
    if (pid !== conclave.participantId && !now.has(pid)) removeParticipant(s, pid);
  }
  for (const p of msg.participants || []) {
    conclave.participants[p.participantId] = p;
    const tile = s.tiles.get(p.participantId) || remoteTile(p.participantId);
    if (tile) {
      setTileName(tile, p.name, false);
      setTileMedia(tile, p.audio, p.video, p.deafened, p.media);
      applyTileAudio(tile);
    }
  }
  // Joined again before rendering: the roster shows our own entry only when joined.
  conclave.state = 'joined';
  renderRoster();
  startHeartbeat(s, msg.heartbeatIntervalMs);
  setWsState('open');
  clearStatus();
  logLine('info', 'session resumed');
  if (s.joinedResolve) s.joinedResolve();
  s.joinedResolve = s.joinedReject = null;
}

function removeParticipant(s, pid) {
  s.gone.add(pid);
  delete conclave.participants[pid];
  for (const [mid, a] of Array.from(s.attached)) if (a.participantId === pid) detachMid(mid);
  removeTile(pid);
}

// ---------------------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------------------
function teardown(s) {
  s.closed = true;
  if (s.joinedReject) s.joinedReject(new Error('left before the join completed'));
  s.joinedResolve = s.joinedReject = null;
  if (s.heartbeatTimer) clearInterval(s.heartbeatTimer);
  s.heartbeatTimer = null;
  if (s.stopWatchingViews) s.stopWatchingViews();
  if (s.pc && s.pc.signalingState !== 'closed') s.pc.close();
  if (s.ws && (s.ws.readyState === WebSocket.OPEN || s.ws.readyState === WebSocket.CONNECTING)) {
    s.ws.close(1000, 'leave');
  }
  stopLocalMedia();
  for (const pid of Array.from(s.tiles.keys())) removeTile(pid);
  if (s.localTile) {
    s.localTile.video.srcObject = null;
    s.localTile.el.remove();
    s.localTile = null;
  }
  ui.grid.textContent = '';
  updateGridCount();
  s.attached.clear();
  ui.soundButton.hidden = true;
  setWsState('closed');
  conclave.pc = null;
  conclave.ws = null;
  conclave.participants = {};
  conclave.tracks = {};
  conclave.audio = false;
  conclave.video = false;
  conclave.serverMediaState = null;
  setPill(ui.mediaState, 'none');
  renderRoster();
}

function resetCallState() {
  conclave.participantId = null;
  conclave.speaking = { participants: [], dominant: null };
  conclave.participants = {};
  conclave.tracks = {};
  conclave.pc = null;
  conclave.ws = null;
  conclave.serverMediaState = null;
  ui.grid.textContent = '';
  ui.eventLog.textContent = '';
}
