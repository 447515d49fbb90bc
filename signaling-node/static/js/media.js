// Conclave web client: media. The local tracks (camera off = device closed, microphone
// muted = `track.enabled`, device switches), the one RTCPeerConnection to the SFU (our single
// offer, answers to the server's offers, ICE candidates), putting received tracks on tiles,
// and inbound stats. The client offers once per peer connection; from then on only the server
// offers (`serverOffer`). Mute, camera off and device switches are `track.enabled` or
// `replaceTrack` plus `setAudio` / `setVideo`, never renegotiation.

import { conclave, session, localTrack, params, prefs, savePrefs } from './state.js';
import {
  clearStatusTopic,
  logLine,
  playTile,
  refreshTileVideo,
  remoteTile,
  renderDevices,
  reportError,
  showStatus,
  ui,
  updateControls,
  updateMediaPill,
} from './ui.js';
import { send } from './protocol.js';
import { applySinkEverywhere, getMedia, openDevice, refreshDevices, trackDeviceId } from './devices.js';
import { describeDeviceError } from './errors.js';

// ---------------------------------------------------------------------------------------
// Local tracks: camera really off, microphone muted or released, device switches
// ---------------------------------------------------------------------------------------
// The camera is open only while it is on: off stops the track (the camera light goes out)
// and on opens it again. The microphone stays open while muted (`track.enabled = false`), so
// unmuting and push-to-talk are instant, unless the user releases it ("Leave microphone").
// A new track reaches the media server through `replaceTrack` on the transceiver that exists
// since the join offer: never a renegotiation.

/**
 * The tracks to join with: the microphone (even if it starts muted), and the camera only if
 * it starts on. Never throws: a device that cannot be opened is left out, and said so.
 */
export async function getLocalMedia(wantAudio, wantVideo) {
  conclave.deviceErrors = {};
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    reportError('Camera and microphone are unavailable here (the page must be served over https or from localhost). Joining to watch and listen only.');
    conclave.deviceErrors = { audio: 'NotSupportedError', video: 'NotSupportedError' };
    return new MediaStream();
  }
  const kinds = wantVideo ? ['audio', 'video'] : ['audio'];
  const attempts = wantVideo ? [['audio', 'video'], ['audio'], ['video']] : [['audio']];
  const errors = {};
  for (const a of attempts) {
    try {
      const stream = await getMedia(a);
      const missing = kinds.filter((k) => !a.includes(k));
      for (const k of missing) conclave.deviceErrors[k] = (errors[k] || errors.both || {}).name || 'NotFoundError';
      if (missing.length) {
        showStatus(`${describeDeviceError(errors.both, missing)} Joining without it.`, 'warn');
      }
      return stream;
    } catch (err) {
      errors[a.length === 2 ? 'both' : a[0]] = err;
    }
  }
  const err = errors.both || errors.audio || errors.video;
  for (const k of kinds) conclave.deviceErrors[k] = (errors[k] || err).name || 'Error';
  reportError(`Could not use camera or microphone: ${describeDeviceError(err, kinds)} Joining to watch and listen only.`);
  return new MediaStream();
}

export function stopLocalMedia() {
  if (conclave.localStream) {
    for (const t of conclave.localStream.getTracks()) t.stop();
  }
  conclave.localStream = null;
}

// Device operations one at a time (a double click must not open the camera twice).
let deviceOps = Promise.resolve();
function serialized(fn) {
  const run = deviceOps.then(fn, fn);
  deviceOps = run.catch(() => {});
  return run;
}

/**
 * Make `track` (or none) the call's local track of `kind`: in the local stream and preview,
 * and on the sender of the join offer's transceiver (`replaceTrack`, no renegotiation).
 * The previous track is stopped.
 */
async function useLocalTrack(kind, track) {
  if (!conclave.localStream) conclave.localStream = new MediaStream();
  const stream = conclave.localStream;
  const old = localTrack(kind);
  if (old === track) return;
  const s = session;
  const tr = s && s.transceivers && s.transceivers[kind];
  if (tr && s.pc && s.pc.signalingState !== 'closed') await tr.sender.replaceTrack(track);
  if (old) {
    stream.removeTrack(old);
    old.stop();
  }
  if (track) stream.addTrack(track);
  if (s && s.localTile) {
    const preview = s.localTile.stream;
    for (const t of preview.getTracks()) if (t.kind === kind) preview.removeTrack(t);
    if (track) preview.addTrack(track);
    refreshTileVideo(s.localTile);
    s.localTile.video.play().catch(() => {});
  }
  if (track) {
    // Unplugged or revoked: the call goes on without it, and the user is told.
    track.addEventListener('ended', () => onTrackEnded(kind, track));
  }
}

/** A device in use went away (unplugged, revoked): carry on with another one if there is one. */
function onTrackEnded(kind, track) {
  if (localTrack(kind) !== track) return; // stopped by us
  const what = kind === 'audio' ? 'microphone' : 'camera';
  logLine('warn', `${what} stopped (unplugged?)`);
  serialized(async () => {
    if (localTrack(kind) !== track) return;
    let next = null;
    try {
      next = await openDevice(kind); // the remembered one if it is there, else any
    } catch (_) {}
    if (next) {
      if (kind === 'audio') next.enabled = micShouldSend();
      await useLocalTrack(kind, next);
      showStatus(`Your ${what} went away; now using ${next.label || 'another one'}.`, 'warn');
    } else {
      await useLocalTrack(kind, null);
      if (kind === 'video') setCameraState(false);
      else setMicState(false);
      reportError(`Your ${what} stopped (unplugged?). Plug it in again or pick another in Settings.`);
    }
    await refreshDevices();
    renderDevices();
  });
}

/** Whether the microphone should send right now: not muted, and push-to-talk's key held. */
export function micShouldSend() {
  return conclave.audio && (!prefs.ptt || conclave.pttHeld);
}

/** Apply mute and push-to-talk to the microphone track. */
export function applyMicEnabled() {
  const t = localTrack('audio');
  if (t) t.enabled = micShouldSend();
  updateControls();
}

function setMicState(enabled) {
  conclave.audio = enabled;
  applyMicEnabled();
  if (conclave.state === 'joined') send({ id: 'setAudio', enabled });
}

function setCameraState(enabled) {
  conclave.video = enabled;
  if (conclave.state === 'joined') send({ id: 'setVideo', enabled });
  updateControls();
}

/** Microphone on (opening it again if it was released) or muted (the device stays open). */
export function setAudio(enabled) {
  enabled = !!enabled;
  return serialized(async () => {
    if (enabled && !localTrack('audio')) {
      try {
        await useLocalTrack('audio', await openDevice('audio'));
      } catch (err) {
        conclave.deviceErrors.audio = err.name || 'Error';
        reportError(describeDeviceError(err, ['audio']));
        updateControls();
        return false;
      }
    }
    if (!localTrack('audio')) return false;
    setMicState(enabled);
    return true;
  });
}

/** Close the microphone ("Leave microphone"): muted, and the device is released. */
export function releaseMicrophone() {
  return serialized(async () => {
    const had = !!localTrack('audio');
    await useLocalTrack('audio', null);
    if (conclave.audio) setMicState(false);
    else updateControls();
    return had;
  });
}

/** Camera on (opens the device) or off (stops it: the camera light goes out). */
export function setVideo(enabled) {
  enabled = !!enabled;
  return serialized(async () => {
    if (enabled) {
      let track = localTrack('video');
      if (!track || track.readyState === 'ended') {
        try {
          track = await openDevice('video');
        } catch (err) {
          conclave.deviceErrors.video = err.name || 'Error';
          reportError(describeDeviceError(err, ['video']));
          updateControls();
          return false;
        }
        await useLocalTrack('video', track);
      }
      track.enabled = true;
    } else {
      await useLocalTrack('video', null);
    }
    setCameraState(enabled);
    return true;
  });
}

/**
 * Use another device: 'audioinput' / 'videoinput' switch the live track (if any) without
 * renegotiation, 'audiooutput' moves every tile's sound. The choice is remembered.
 */
export function switchDevice(kind, deviceId) {
  deviceId = deviceId || '';
  if (kind === 'audiooutput') {
    savePrefs({ audioOutput: deviceId });
    applySinkEverywhere();
    return Promise.resolve(true);
  }
  const trackKind = kind === 'audioinput' ? 'audio' : 'video';
  savePrefs(trackKind === 'audio' ? { audioInput: deviceId } : { videoInput: deviceId });
  return serialized(async () => {
    const old = localTrack(trackKind);
    if (!old || old.readyState === 'ended') return true; // used when the device is next opened
    if (deviceId && trackDeviceId(old) === deviceId) return true;
    let track;
    try {
      track = await openDevice(trackKind, deviceId || undefined);
    } catch (err) {
      if (err && err.name === 'NotReadableError') {
        // Some devices (phones' cameras) open only one at a time: let the old one go first.
        await useLocalTrack(trackKind, null);
        try {
          track = await openDevice(trackKind, deviceId || undefined);
        } catch (err2) {
          reportError(describeDeviceError(err2, [trackKind]));
          if (trackKind === 'video') setCameraState(false);
          else setMicState(false);
          return false;
        }
      } else {
        reportError(describeDeviceError(err, [trackKind]));
        return false;
      }
    }
    if (trackKind === 'audio') track.enabled = micShouldSend();
    await useLocalTrack(trackKind, track);
    logLine('info', `${trackKind === 'audio' ? 'microphone' : 'camera'}: ${track.label}`);
    renderDevices();
    return true;
  });
}

/** Devices were plugged in or out: refresh the pickers; a released choice falls back. */
export async function onDeviceChange() {
  const devices = await refreshDevices();
  // A device that was missing may be there now: let the buttons try again.
  for (const k of ['audio', 'video']) if (conclave.deviceErrors[k] === 'NotFoundError') delete conclave.deviceErrors[k];
  // The device the user chose is back (plugged in again): use it instead of the stand-in.
  for (const [kind, list, pref] of [
    ['audio', devices.audioinput, prefs.audioInput],
    ['video', devices.videoinput, prefs.videoInput],
  ]) {
    const t = localTrack(kind);
    if (t && pref && trackDeviceId(t) !== pref && list.some((d) => d.deviceId === pref)) {
      await switchDevice(kind === 'audio' ? 'audioinput' : 'videoinput', pref);
    }
  }
  renderDevices();
  updateControls();
}

/** The tracks `getLocalMedia` opened become the call's (before the join offer). */
export function adoptLocalStream(stream, wantAudio) {
  conclave.localStream = stream;
  conclave.audio = !!localTrack('audio') && wantAudio;
  conclave.video = !!localTrack('video');
  for (const t of stream.getTracks()) {
    const kind = t.kind;
    t.addEventListener('ended', () => onTrackEnded(kind, t));
  }
  applyMicEnabled();
}

// ---------------------------------------------------------------------------------------
// Peer connection
// ---------------------------------------------------------------------------------------
/**
 * Offers in a row that may fail to connect before the client stops and waits for the user:
 * a network that blocks media fails the same way every time (each try costs the server's
 * 30 s connect deadline), and a room that moves to a live media node needs one or two.
 */
const MAX_MEDIA_ATTEMPTS = 3;

/**
 * The `iceServers` of a `joined` (TURN with credentials minted for us, maybe STUN), keeping
 * only well-formed entries: `RTCPeerConnection` throws on a malformed one.
 */
function usableIceServers(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const e of list) {
    if (!e || typeof e !== 'object') continue;
    const urls = (Array.isArray(e.urls) ? e.urls : [e.urls]).filter((u) => typeof u === 'string' && /^(stuns?|turns?):[^/]/.test(u));
    if (!urls.length) continue;
    const server = { urls };
    if (typeof e.username === 'string' && typeof e.credential === 'string') {
      server.username = e.username;
      server.credential = e.credential;
    } else if (urls.some((u) => u.startsWith('turn'))) {
      continue; // TURN without credentials cannot work
    }
    out.push(server);
  }
  return out;
}

/**
 * The peer connection's configuration: the ICE servers of our last `joined`, and only
 * relayed candidates when the test hook `conclave.forceRelay` (or `?relay=1`) asks, as on a
 * network that lets nothing but the TURN server through.
 */
function peerConfig(s) {
  const config = { iceServers: s.iceServers || [] };
  if (conclave.forceRelay) config.iceTransportPolicy = 'relay';
  return config;
}

/** Fresh ICE servers (a resume's `joined`): the next ICE restart or gathering uses them. */
export function updateIceServers(s, list) {
  const before = JSON.stringify(s.iceServers || []);
  s.iceServers = usableIceServers(list);
  conclave.iceServers = s.iceServers;
  if (!s.pc || s.pc.signalingState === 'closed' || JSON.stringify(s.iceServers) === before) return;
  try {
    s.pc.setConfiguration(Object.assign(s.pc.getConfiguration(), peerConfig(s)));
  } catch (err) {
    logLine('warn', `could not update the ICE servers: ${err.message}`);
  }
}

function newRTCPeerConnection(s) {
  try {
    return new RTCPeerConnection(peerConfig(s));
  } catch (err) {
    // The server's list was refused: a direct connection may still work.
    logLine('warn', `ICE servers refused (${err.message}); connecting without them`);
    return new RTCPeerConnection({ iceServers: [] });
  }
}

function createPeerConnection() {
  const s = session;
  const pc = newRTCPeerConnection(s);
  pc.onicecandidate = (ev) => {
    const c = ev.candidate;
    if (!c || !c.candidate) return; // end of candidates
    const msg = { id: 'iceCandidate', candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex };
    if (s.offerSent) send(msg);
    else s.pendingCandidates.push(msg);
  };
  pc.ontrack = (ev) => {
    if (session !== s) return;
    attachTransceiver(ev.transceiver, ev.track, ev.streams);
  };
  pc.onconnectionstatechange = () => {
    if (session !== s) return;
    updateMediaPill();
    logLine('info', `media connection ${pc.connectionState}`);
    if (pc.connectionState === 'connected') {
      // It works: the next failure starts a new series of attempts.
      s.mediaAttempts = 0;
      conclave.mediaGaveUp = null;
    }
    if (pc.connectionState === 'failed') {
      reportError('Media connection failed (no route to the media server?)', 'media');
    }
    // Media is back (after a restart, the server's `mediaState` may come later or not at all).
    if (pc.connectionState === 'connected') clearStatusTopic('media');
  };
  pc.oniceconnectionstatechange = () => {
    if (session === s) logLine('info', `ice ${pc.iceConnectionState}`);
  };
  return pc;
}

/**
 * The camera's simulcast layers: full, half and quarter size, each subscriber gets the one
 * that fits its tile and its bandwidth (docs/media-quality.md). Listed from high to low: from
 * a capture too small for three, the browser drops the last ones, so the best stays.
 */
const SIMULCAST_LAYERS = [
  { rid: 'f', maxBitrate: 1_200_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 450_000 },
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
];

/** Our one offer on a new peer connection (after `joined`, or when the server lost our peer). */
export async function startMedia(s) {
  s.mediaAttempts = (s.mediaAttempts || 0) + 1;
  const pc = createPeerConnection();
  s.pc = conclave.pc = pc;
  s.offerSent = false;
  s.pendingCandidates = [];
  if (!conclave.localStream) conclave.localStream = new MediaStream();
  const local = conclave.localStream;
  s.transceivers = {};
  for (const kind of ['audio', 'video']) {
    const track = localTrack(kind);
    // Keep both m-lines even without a device (camera off, no microphone), so the layout the
    // server sees is fixed and a device turned on later only needs `replaceTrack`.
    const init = { direction: 'sendonly', streams: [local] };
    if (kind === 'video' && params.get('simulcast') !== 'off') init.sendEncodings = SIMULCAST_LAYERS;
    s.transceivers[kind] = pc.addTransceiver(track || kind, init);
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  // Say which m-line is the microphone and which the camera (a screen share will be
  // `screen`): the others' tiles go by it (docs/protocol.md, setSources).
  send({ id: 'setSources', sources: { [s.transceivers.audio.mid]: 'microphone', [s.transceivers.video.mid]: 'camera' } });
  send({ id: 'offer', sdp: pc.localDescription.sdp });
  s.offerSent = true;
  for (const c of s.pendingCandidates.splice(0)) send(c);
}

/** Close the peer connection and unhook its tracks (tiles stay). */
export function dropPeerConnection(s) {
  if (s.mediaRetryTimer) clearTimeout(s.mediaRetryTimer);
  s.mediaRetryTimer = null;
  for (const mid of Array.from(s.attached.keys())) detachMid(mid);
  conclave.tracks = {};
  s.views = {}; // a new connection's videos are reported afresh
  if (s.pc && s.pc.signalingState !== 'closed') s.pc.close();
  s.pc = conclave.pc = null;
}

/** The server has no media peer for us any more: offer again on a fresh connection. */
async function restartMedia(s) {
  if (session !== s || s.closed || conclave.state !== 'joined') return;
  conclave.mediaRestarts += 1;
  logLine('info', 'starting a new media connection');
  dropPeerConnection(s);
  await startMedia(s);
}

/**
 * Why our media connection failed, in words, from what the browser saw of it (the server
 * only says `failed`).
 */
export function describeMediaFailure(pc) {
  const ice = pc ? pc.iceConnectionState : 'new';
  if (ice === 'new' || ice === 'checking') {
    return 'no network path to the media server (this network may block UDP)';
  }
  if (ice === 'failed' || ice === 'disconnected') return 'the network path to the media server broke';
  return 'the media server dropped the connection';
}

/**
 * Media failed (`why`): offer again after `delayMs` (doubled at each attempt), unless
 * MAX_MEDIA_ATTEMPTS offers in a row never connected; then say why and wait for the user
 * ("Try media again"). The call itself (roster, events) goes on either way.
 */
export function retryMedia(s, why, delayMs) {
  if (session !== s || s.closed || conclave.state !== 'joined') return;
  const attempts = s.mediaAttempts || 0;
  if (attempts >= MAX_MEDIA_ATTEMPTS) {
    logLine('warn', `media failed ${attempts} times (${why}); waiting for the user`);
    dropPeerConnection(s);
    updateMediaPill();
    conclave.mediaGaveUp = why;
    reportError(`No audio or video: could not connect to the media server after ${attempts} attempts (${why}).`, 'media', 'media_failed');
    ui.statusRetryMedia.hidden = false;
    return;
  }
  showStatus('Reconnecting media…', 'warn', 'media');
  if (s.mediaRetryTimer) clearTimeout(s.mediaRetryTimer);
  s.mediaRetryTimer = null;
  const wait = delayMs * 2 ** Math.max(0, attempts - 1);
  if (wait <= 0) return restartMedia(s);
  s.mediaRetryTimer = setTimeout(() => restartMedia(s), wait);
}

/** The user asks for media again after we gave up: a new series of attempts. */
export function retryMediaNow() {
  const s = session;
  if (!s || s.closed || conclave.state !== 'joined' || !conclave.mediaGaveUp) return;
  s.mediaAttempts = 0;
  conclave.mediaGaveUp = null;
  showStatus('Reconnecting media…', 'warn', 'media');
  return restartMedia(s);
}

export async function onServerOffer(s, msg) {
  const pc = s.pc;
  if (!pc || pc.signalingState === 'closed') return;
  const tracks = {};
  for (const t of msg.tracks || []) tracks[t.mid] = t;
  conclave.tracks = tracks;
  await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ id: 'answer', sdp: pc.localDescription.sdp });
  reconcileTracks();
}

// ---------------------------------------------------------------------------------------
// Received tracks → tiles
// ---------------------------------------------------------------------------------------
/**
 * Dynacast (`publishLayers`): send only the simulcast layers someone takes; the server asks
 * for a paused one again as soon as a subscriber wants it.
 */
export async function applyPublishLayers(s, msg) {
  const tr = s.pc && s.pc.getTransceivers().find((t) => t.mid === msg.mid);
  if (!tr) return;
  const params = tr.sender.getParameters();
  if (!params.encodings || params.encodings.length < 2) return;
  const active = new Set(msg.active || []);
  let changed = false;
  for (const e of params.encodings) {
    const on = active.has(e.rid);
    if (e.active !== on) {
      e.active = on;
      changed = true;
    }
  }
  conclave.publishedLayers = Array.from(active);
  if (!changed) return;
  try {
    await tr.sender.setParameters(params);
  } catch (err) {
    logLine('warn', `could not change the layers sent: ${err.message || err}`);
  }
}

// ---------------------------------------------------------------------------------------
// Views: how big each remote video is drawn, so the server sends no more than that
// ---------------------------------------------------------------------------------------
/** How often the views are looked at (layout changes, tabs hidden); only changes are sent. */
const VIEW_CHECK_MS = 500;
/** A size change smaller than this share is not worth a message. */
const VIEW_CHANGE_SHARE = 0.15;

/** `{width, height}` in device pixels of a remote video element, or `{hidden: true}`. */
function viewOf(video) {
  if (document.hidden || !video || !video.isConnected) return { hidden: true };
  const r = video.getBoundingClientRect();
  const onScreen = r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth;
  if (!onScreen) return { hidden: true };
  const dpr = window.devicePixelRatio || 1;
  return { width: Math.round(r.width * dpr), height: Math.round(r.height * dpr) };
}

function viewChanged(before, now) {
  if (!before || !!before.hidden !== !!now.hidden) return true;
  if (now.hidden) return false;
  const off = (a, b) => Math.abs(a - b) > VIEW_CHANGE_SHARE * Math.max(a, b);
  return off(before.width, now.width) || off(before.height, now.height);
}

/** Send `setTrackViews` for the remote videos whose view changed since the last report. */
export function reportViews(s = session) {
  if (!s || s.closed || !s.pc || s.pc.signalingState === 'closed') return;
  s.views = s.views || {};
  const changed = {};
  for (const [mid, a] of s.attached) {
    if (a.track.kind !== 'video') continue;
    const tile = s.tiles.get(a.participantId);
    const now = viewOf(tile && tile.video);
    if (viewChanged(s.views[mid], now)) changed[mid] = s.views[mid] = now;
  }
  if (Object.keys(changed).length) send({ id: 'setTrackViews', views: changed });
}

/** Report views while the session lives: on a timer, and at once when the tab hides or shows. */
export function watchViews(s) {
  s.viewTimer = setInterval(() => reportViews(s), VIEW_CHECK_MS);
  const onVisibility = () => reportViews(s);
  document.addEventListener('visibilitychange', onVisibility);
  s.stopWatchingViews = () => {
    clearInterval(s.viewTimer);
    document.removeEventListener('visibilitychange', onVisibility);
  };
}

/** Put the receiver track of a transceiver on the tile of the participant it belongs to. */
function attachTransceiver(transceiver, track, streams) {
  if (!session || !transceiver) return;
  track = track || transceiver.receiver.track;
  const mid = transceiver.mid;
  const info = mid != null ? conclave.tracks[mid] : null;
  let participantId = info ? info.participantId : null;
  if (!participantId && streams && streams[0]) participantId = streams[0].id; // streamId == participantId
  if (!participantId || participantId === conclave.participantId) return;
  const prev = session.attached.get(mid);
  if (prev && prev.participantId === participantId && prev.track === track) return;
  if (prev) detachMid(mid);
  const tile = remoteTile(participantId);
  if (!tile) return;
  // One track of each kind per tile (the newest wins).
  for (const t of tile.stream.getTracks()) {
    if (t.kind === track.kind && t !== track) tile.stream.removeTrack(t);
  }
  for (const [m, a] of Array.from(session.attached)) {
    if (m !== mid && a.participantId === participantId && a.track.kind === track.kind) session.attached.delete(m);
  }
  if (!tile.stream.getTracks().includes(track)) tile.stream.addTrack(track);
  session.attached.set(mid, { participantId, track });
  refreshTileVideo(tile);
  playTile(tile);
}

export function detachMid(mid) {
  const a = session.attached.get(mid);
  if (!a) return;
  session.attached.delete(mid);
  const tile = session.tiles.get(a.participantId);
  if (tile && tile.stream.getTracks().includes(a.track)) {
    tile.stream.removeTrack(a.track);
    refreshTileVideo(tile);
  }
}

/** After a serverOffer: drop tracks that are gone, (re)attach every listed one. */
function reconcileTracks() {
  for (const mid of Array.from(session.attached.keys())) {
    const info = conclave.tracks[mid];
    const a = session.attached.get(mid);
    if (!info || info.participantId !== a.participantId) detachMid(mid);
  }
  for (const tr of session.pc.getTransceivers()) {
    if (tr.mid == null || !conclave.tracks[tr.mid]) continue;
    const dir = tr.currentDirection;
    if (dir === 'recvonly' || dir === 'sendrecv') attachTransceiver(tr, tr.receiver.track, null);
  }
}

// ---------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------
/**
 * The candidate pair media flows over (test hook and diagnostics): each end's candidate
 * type (`host`, `srflx`, `prflx`, `relay`), protocol and address; null before ICE selects one.
 */
export async function selectedCandidatePair() {
  const pc = session && session.pc;
  if (!pc || pc.signalingState === 'closed') return null;
  const report = await pc.getStats();
  let pairId = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  const pair = pairId && report.get(pairId);
  if (!pair) return null;
  const side = (id) => {
    const c = report.get(id);
    return c ? { candidateType: c.candidateType, protocol: c.protocol, address: c.address, port: c.port, relayProtocol: c.relayProtocol } : null;
  };
  return { state: pair.state, local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId) };
}

/** {participantId: {videoFramesDecoded, audioPacketsReceived, ...}} from inbound-rtp stats. */
export async function statsByParticipant() {
  const out = {};
  const pc = session && session.pc;
  if (!pc || pc.signalingState === 'closed') return out;
  // Fallback mapping when a report has no `mid`: receiver track id -> mid.
  const midByTrackId = {};
  for (const tr of pc.getTransceivers()) {
    if (tr.mid != null && tr.receiver && tr.receiver.track) midByTrackId[tr.receiver.track.id] = tr.mid;
  }
  const report = await pc.getStats();
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    const mid = r.mid != null ? r.mid : midByTrackId[r.trackIdentifier];
    const info = mid != null ? conclave.tracks[mid] : null;
    if (!info) return;
    const e = (out[info.participantId] = out[info.participantId] || {
      videoFramesDecoded: 0,
      videoPacketsReceived: 0,
      audioPacketsReceived: 0,
      videoBytesReceived: 0,
      audioBytesReceived: 0,
    });
    if (r.kind === 'video') {
      e.videoFramesDecoded += r.framesDecoded || 0;
      e.videoPacketsReceived += r.packetsReceived || 0;
      e.videoBytesReceived += r.bytesReceived || 0;
      if (r.frameWidth) e.videoWidth = r.frameWidth;
      if (r.frameHeight) e.videoHeight = r.frameHeight;
    } else if (r.kind === 'audio') {
      e.audioPacketsReceived += r.packetsReceived || 0;
      e.audioBytesReceived += r.bytesReceived || 0;
      // What was heard, not just received: a muted (disabled) microphone sends silence.
      e.audioEnergy = (e.audioEnergy || 0) + (r.totalAudioEnergy || 0);
    }
  });
  return out;
}
