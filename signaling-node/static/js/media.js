// Conclave web client: media. The camera and microphone (getUserMedia, mute as
// `track.enabled`), the one RTCPeerConnection to the SFU (our single offer, answers to the
// server's offers, ICE candidates), putting received tracks on tiles, and inbound stats.
// The client offers once per peer connection; from then on only the server offers
// (`serverOffer`). Mute is `track.enabled` plus `setAudio` / `setVideo`, never renegotiation.

import { conclave, session, intParam, localTrack } from './state.js';
import {
  clearStatusTopic,
  logLine,
  playTile,
  refreshTileVideo,
  remoteTile,
  reportError,
  showStatus,
  updateControls,
  updateMediaPill,
} from './ui.js';
import { send } from './protocol.js';

// ---------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------
export async function getLocalMedia(wantAudio, wantVideo) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    reportError('Camera and microphone are unavailable here (the page must be served over https or from localhost). Joining to watch and listen only.');
    return new MediaStream();
  }
  const videoConstraints = {
    width: { ideal: intParam('width', 640) },
    height: { ideal: intParam('height', 480) },
  };
  // Always ask for both devices so they can be turned on later; "start off" is track.enabled.
  const attempts = [
    { audio: true, video: videoConstraints },
    { audio: true, video: false },
    { audio: false, video: videoConstraints },
  ];
  let lastError = null;
  for (const c of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(c);
      if (!c.audio || !c.video) {
        const missing = !c.audio ? 'microphone' : 'camera';
        showStatus(`No ${missing} available (${lastError ? lastError.name : 'unknown'}); joining without it.`, 'warn');
      }
      return stream;
    } catch (err) {
      lastError = err;
    }
  }
  reportError(`Could not use camera or microphone (${lastError ? lastError.name + ': ' + lastError.message : 'unknown'}). Joining to watch and listen only.`);
  return new MediaStream();
}

export function stopLocalMedia() {
  if (conclave.localStream) {
    for (const t of conclave.localStream.getTracks()) t.stop();
  }
  conclave.localStream = null;
}

export function setAudio(enabled) {
  enabled = !!enabled;
  const t = localTrack('audio');
  if (!t) return Promise.resolve(false);
  t.enabled = enabled;
  conclave.audio = enabled;
  if (conclave.state === 'joined') send({ id: 'setAudio', enabled });
  updateControls();
  return Promise.resolve(true);
}

export function setVideo(enabled) {
  enabled = !!enabled;
  const t = localTrack('video');
  if (!t) return Promise.resolve(false);
  t.enabled = enabled;
  conclave.video = enabled;
  if (conclave.state === 'joined') send({ id: 'setVideo', enabled });
  updateControls();
  return Promise.resolve(true);
}

// ---------------------------------------------------------------------------------------
// Peer connection
// ---------------------------------------------------------------------------------------
function createPeerConnection() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const s = session;
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

/** Our one offer on a new peer connection (after `joined`, or when the server lost our peer). */
export async function startMedia(s) {
  const pc = createPeerConnection();
  s.pc = conclave.pc = pc;
  s.offerSent = false;
  s.pendingCandidates = [];
  const local = conclave.localStream || new MediaStream();
  for (const kind of ['audio', 'video']) {
    const track = localTrack(kind);
    // Keep both m-lines even without a device, so the layout the server sees is fixed.
    pc.addTransceiver(track || kind, { direction: 'sendonly', streams: [local] });
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
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
  if (s.pc && s.pc.signalingState !== 'closed') s.pc.close();
  s.pc = conclave.pc = null;
}

/** The server has no media peer for us any more: offer again on a fresh connection. */
export async function restartMedia(s) {
  if (session !== s || s.closed || conclave.state !== 'joined') return;
  conclave.mediaRestarts += 1;
  logLine('info', 'starting a new media connection');
  dropPeerConnection(s);
  await startMedia(s);
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
    }
  });
  return out;
}
