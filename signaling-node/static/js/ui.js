// Conclave web client: the page. Status line, event log, connection pills, video tiles
// (with each one's volume), the roster, the call controls and the settings (devices, sounds,
// push-to-talk); the DOM ids and classes here are what users (and the browser tests) see.
// Reads the call from state.js; sends nothing.

import { conclave, session, localTrack, prefs } from './state.js';
import { applySink, canChooseSpeaker } from './devices.js';

const $ = (id) => document.getElementById(id);

export const ui = {
  joinView: $('join-view'),
  callView: $('call-view'),
  form: $('join-form'),
  roomInput: $('room-input'),
  nameInput: $('name-input'),
  startAudio: $('start-audio'),
  startVideo: $('start-video'),
  joinButton: $('join-button'),
  roomLabel: $('room-label'),
  wsState: $('ws-state'),
  mediaState: $('media-state'),
  status: $('status'),
  statusText: $('status-text'),
  statusClose: $('status-close'),
  statusRetryMedia: $('status-retry-media'),
  grid: $('grid'),
  soundButton: $('sound-button'),
  participantList: $('participant-list'),
  participantCount: $('participant-count'),
  eventLog: $('event-log'),
  heartbeatCount: $('heartbeat-count'),
  micButton: $('mic-button'),
  camButton: $('cam-button'),
  deafenButton: $('deafen-button'),
  leaveButton: $('leave-button'),
  tileTemplate: $('tile-template'),
  micSelect: $('mic-select'),
  camSelect: $('cam-select'),
  speakerSelect: $('speaker-select'),
  speakerRow: $('speaker-row'),
  leaveMicButton: $('leave-mic-button'),
  soundsToggle: $('sounds-toggle'),
  speakerViewToggle: $('speaker-view-toggle'),
  pttToggle: $('ptt-toggle'),
  pttKeyButton: $('ptt-key-button'),
};

const MAX_LOG_LINES = 200;

// ---------------------------------------------------------------------------------------
// Status line, event log, connection pills
// ---------------------------------------------------------------------------------------
function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const s = parts.slice(0, 2).map((p) => Array.from(p)[0]).join('');
  return (s || '?').toUpperCase();
}

/**
 * Show one line of status. `topic` names what the line is about (e.g. 'media'), so the event
 * that ends it can clear exactly that line and nothing shown since (`clearStatusTopic`).
 */
export function showStatus(text, kind, topic) {
  ui.statusText.textContent = text;
  ui.status.dataset.code = '';
  ui.status.dataset.kind = kind || 'info';
  ui.status.dataset.topic = topic || '';
  ui.status.hidden = false;
  ui.statusRetryMedia.hidden = true; // shown only by the line that gives up on media
}

export function clearStatus() {
  ui.status.hidden = true;
  ui.statusText.textContent = '';
  ui.status.dataset.topic = '';
  ui.statusRetryMedia.hidden = true;
}

export function clearStatusIfInfo() {
  if (ui.status.dataset.kind === 'info') clearStatus();
}

/** Clear the status line if it is still about `topic`. */
export function clearStatusTopic(topic) {
  if (!ui.status.hidden && ui.status.dataset.topic === topic) clearStatus();
}

export function reportError(text, topic, code) {
  conclave.errors.push(text);
  if (code) conclave.errorCodes.push(code);
  showStatus(text, 'error', topic);
  ui.status.dataset.code = code || '';
  logLine('error', text);
  console.warn('[conclave]', text);
}

export function logLine(kind, text) {
  const li = document.createElement('li');
  li.className = 'log-' + kind;
  const time = new Date().toLocaleTimeString();
  li.textContent = `${time} ${text}`;
  ui.eventLog.appendChild(li);
  while (ui.eventLog.childElementCount > MAX_LOG_LINES) ui.eventLog.firstElementChild.remove();
}

export function setPill(el, state, label) {
  el.dataset.state = state;
  el.querySelector('.pill-value').textContent = label || state;
}

export function setWsState(state) {
  conclave.wsState = state;
  setPill(ui.wsState, state);
}

export function updateMediaPill() {
  const pc = session && session.pc;
  const local = pc ? pc.connectionState : 'none';
  conclave.mediaState = local;
  // Show the browser's own view; the server's view (mediaState message) goes in the title.
  setPill(ui.mediaState, local);
  ui.mediaState.title = `Media connection: browser ${local}, server ${conclave.serverMediaState || 'unknown'}`;
}

// ---------------------------------------------------------------------------------------
// Tiles and roster
// ---------------------------------------------------------------------------------------
export function makeTile(participantId, name, isLocal) {
  const el = ui.tileTemplate.content.firstElementChild.cloneNode(true);
  el.dataset.participantId = participantId || '';
  if (isLocal) el.classList.add('local');
  const video = el.querySelector('video');
  const stream = new MediaStream();
  video.srcObject = stream;
  const tile = { el, video, stream, isLocal };
  setTileName(tile, name, isLocal);
  const volume = el.querySelector('.tile-volume');
  if (isLocal) {
    video.muted = true; // never play our own microphone back
    video.setAttribute('muted', ''); // iOS Safari autoplays inline video only when muted
    volume.remove();
  } else {
    applyTileAudio(tile);
    volume.setAttribute('aria-label', `Volume of ${name || 'Guest'}`);
    volume.addEventListener('input', () => {
      const uid = userIdOf(tile);
      const v = Math.max(0, Math.min(1, Number(volume.value) / 100));
      if (uid && onVolumeInput) onVolumeInput(uid, v);
    });
    watchFirstFrame(tile, participantId);
  }
  video.addEventListener('loadeddata', () => refreshTileVideo(tile));
  if (!isLocal) video.addEventListener('playing', () => applySink(video));
  ui.grid.appendChild(el);
  updateGridCount();
  return tile;
}

export function setTileName(tile, name, isLocal) {
  const label = isLocal ? `${name || 'You'} (you)` : name || 'Guest';
  tile.el.querySelector('.tile-name').textContent = label;
  tile.el.querySelector('.avatar').textContent = initials(name);
  tile.el.setAttribute('aria-label', label);
  const volume = tile.el.querySelector('.tile-volume');
  if (volume) volume.setAttribute('aria-label', `Volume of ${name || 'Guest'}`);
}

/** What a participant's media connection state (`media` of the roster) says on its tile. */
export const MEDIA_STATE_TEXT = {
  connecting: 'Connecting media…',
  disconnected: 'Media interrupted…',
  failed: 'Media failed',
};

/**
 * `media`: the participant's media connection as the server sees it ('connecting',
 * 'connected', 'disconnected', 'failed'), or undefined from a server that does not say.
 */
export function setTileMedia(tile, audio, video, deafened, media) {
  tile.el.dataset.audio = audio ? 'on' : 'off';
  tile.el.dataset.video = video ? 'on' : 'off';
  tile.el.dataset.deafened = deafened ? 'on' : 'off';
  if (!tile.isLocal) {
    tile.el.dataset.media = media || '';
    const label = tile.el.querySelector('.tile-media');
    if (label) label.textContent = MEDIA_STATE_TEXT[media] || '';
  }
  refreshTileVideo(tile);
}

function userIdOf(tile) {
  const info = conclave.participants[tile.el.dataset.participantId];
  return info ? info.userId : null;
}

/** Set by controls.js: the user moved a tile's volume slider (userId, 0..1). */
let onVolumeInput = null;
export function onTileVolume(fn) {
  onVolumeInput = fn;
}

/**
 * A remote tile's sound as the user wants it: muted while deafened (or while the browser
 * blocks sound), at that user's remembered volume, on the chosen speaker.
 */
export function applyTileAudio(tile) {
  if (tile.isLocal) return;
  const uid = userIdOf(tile);
  const v = uid && typeof prefs.volumes[uid] === 'number' ? prefs.volumes[uid] : 1;
  tile.video.muted = !!(conclave.deafened || (session && session.soundBlocked));
  tile.video.volume = v;
  const slider = tile.el.querySelector('.tile-volume');
  if (slider && document.activeElement !== slider) slider.value = String(Math.round(v * 100));
  applySink(tile.video);
}

/** Every remote tile's sound (after deafen, a volume or a speaker change). */
export function applyAudioEverywhere() {
  if (!session) return;
  for (const tile of session.tiles.values()) applyTileAudio(tile);
}

export function refreshTileVideo(tile) {
  const hasVideo = tile.stream.getVideoTracks().length > 0;
  tile.el.classList.toggle('no-video', !hasVideo || tile.el.dataset.video === 'off');
}

function watchFirstFrame(tile, participantId) {
  const t0 = conclave.timings.joinStart;
  const mark = () => {
    if (conclave.timings.firstFrame[participantId] == null && t0 != null) {
      conclave.timings.firstFrame[participantId] = Math.round(performance.now() - t0);
    }
  };
  if (typeof tile.video.requestVideoFrameCallback === 'function') {
    tile.video.requestVideoFrameCallback(mark);
  } else {
    tile.video.addEventListener('loadeddata', mark, { once: true });
  }
}

export function updateGridCount() {
  const n = ui.grid.childElementCount;
  ui.grid.dataset.count = String(n);
  ui.grid.style.setProperty('--tiles', String(n));
}

export function remoteTile(participantId) {
  if (!session || !participantId || participantId === conclave.participantId) return null;
  if (session.gone.has(participantId)) return null;
  let tile = session.tiles.get(participantId);
  if (!tile) {
    const info = conclave.participants[participantId];
    tile = makeTile(participantId, info ? info.name : '', false);
    if (info) setTileMedia(tile, info.audio, info.video, info.deafened, info.media);
    applyTileAudio(tile);
    session.tiles.set(participantId, tile);
    renderRoster();
  }
  return tile;
}

export function removeTile(participantId) {
  const tile = session && session.tiles.get(participantId);
  if (!tile) return;
  for (const t of tile.stream.getTracks()) tile.stream.removeTrack(t);
  tile.video.srcObject = null;
  tile.el.remove();
  session.tiles.delete(participantId);
  updateGridCount();
}

export function playTile(tile) {
  const p = tile.video.play();
  if (!p || typeof p.catch !== 'function') return;
  p.catch((err) => {
    if (err && err.name === 'NotAllowedError' && !tile.video.muted) {
      // Autoplay with sound blocked: play muted and offer a button.
      session && (session.soundBlocked = true);
      applyTileAudio(tile);
      ui.soundButton.hidden = false;
      tile.video.play().catch(() => {});
    }
  });
}

export function enableSound() {
  if (!session) return;
  session.soundBlocked = false;
  ui.soundButton.hidden = true;
  for (const tile of session.tiles.values()) {
    applyTileAudio(tile);
    playTile(tile);
  }
}

/**
 * Speaking rings from the server's `speaking` (who talks now, ours included) and the
 * dominant speaker, whose tile speaker view makes big.
 */
export function showSpeaking() {
  if (!session) return;
  const { participants, dominant } = conclave.speaking;
  const talking = new Set(participants);
  const tiles = Array.from(session.tiles.entries());
  if (session.localTile) tiles.push([conclave.participantId, session.localTile]);
  for (const [pid, tile] of tiles) {
    tile.el.classList.toggle('speaking', talking.has(pid));
    tile.el.classList.toggle('dominant', pid === dominant);
  }
  for (const li of ui.participantList.children) {
    li.classList.toggle('speaking', talking.has(li.dataset.participantId));
  }
}

export function renderRoster() {
  const list = ui.participantList;
  list.textContent = '';
  const entries = [];
  if (conclave.participantId && conclave.state === 'joined') {
    entries.push({
      participantId: conclave.participantId,
      name: session ? session.name : '',
      audio: conclave.audio,
      video: conclave.video,
      deafened: conclave.deafened,
      self: true,
    });
  }
  for (const info of Object.values(conclave.participants)) {
    if (info.participantId !== conclave.participantId) entries.push(info);
  }
  for (const p of entries) {
    const li = document.createElement('li');
    li.dataset.participantId = p.participantId;
    const name = document.createElement('span');
    name.className = 'roster-name';
    name.textContent = (p.name || 'Guest') + (p.self ? ' (you)' : '');
    const state = document.createElement('span');
    state.className = 'roster-state';
    const mic = document.createElement('span');
    mic.className = 'state ' + (p.audio ? 'on' : 'off');
    mic.textContent = p.audio ? 'mic on' : 'mic off';
    const cam = document.createElement('span');
    cam.className = 'state ' + (p.video ? 'on' : 'off');
    cam.textContent = p.video ? 'cam on' : 'cam off';
    state.append(mic, cam);
    if (!p.self && MEDIA_STATE_TEXT[p.media]) {
      // Its microphone and camera may be on, but nothing of them reaches anyone yet.
      mic.classList.add('pending');
      cam.classList.add('pending');
      const media = document.createElement('span');
      media.className = 'state media ' + (p.media === 'failed' ? 'off' : 'on');
      media.textContent = p.media === 'failed' ? 'no media' : 'connecting…';
      state.append(media);
    }
    li.dataset.media = p.media || '';
    if (p.deafened) {
      const deaf = document.createElement('span');
      deaf.className = 'state off deaf';
      deaf.textContent = 'deafened';
      state.append(deaf);
    }
    li.dataset.deafened = p.deafened ? 'on' : 'off';
    li.append(name, state);
    list.appendChild(li);
  }
  ui.participantCount.textContent = String(entries.length);
}

/** No device of this kind could be found (or the page has no device access at all). */
function noDevice(kind) {
  const e = conclave.deviceErrors[kind];
  return e === 'NotFoundError' || e === 'NotSupportedError' || e === 'OverconstrainedError';
}

export function updateControls() {
  const a = conclave.audio;
  const v = conclave.video;
  const d = conclave.deafened;
  const micOpen = !!localTrack('audio');
  const noMic = !micOpen && noDevice('audio');
  const noCam = !v && noDevice('video');
  ui.micButton.setAttribute('aria-pressed', String(!a));
  ui.micButton.classList.toggle('off', !a);
  ui.micButton.disabled = noMic;
  ui.micButton.dataset.ptt = prefs.ptt && a ? (conclave.pttHeld ? 'talking' : 'waiting') : 'off';
  ui.micButton.querySelector('.control-label').textContent = noMic
    ? 'No mic'
    : !a
      ? 'Unmute mic'
      : prefs.ptt
        ? conclave.pttHeld
          ? 'Talking'
          : 'Push to talk'
        : 'Mute mic';
  ui.camButton.setAttribute('aria-pressed', String(!v));
  ui.camButton.classList.toggle('off', !v);
  ui.camButton.disabled = noCam;
  ui.camButton.querySelector('.control-label').textContent = noCam ? 'No camera' : v ? 'Stop camera' : 'Start camera';
  ui.deafenButton.setAttribute('aria-pressed', String(d));
  ui.deafenButton.classList.toggle('off', d);
  ui.deafenButton.querySelector('.control-label').textContent = d ? 'Undeafen' : 'Deafen';
  ui.leaveMicButton.disabled = !micOpen;
  ui.soundsToggle.checked = prefs.sounds;
  ui.speakerViewToggle.checked = prefs.speakerView;
  ui.grid.classList.toggle('speaker-view', !!prefs.speakerView);
  ui.pttToggle.checked = prefs.ptt;
  if (!ui.pttKeyButton.dataset.capturing) ui.pttKeyButton.textContent = keyName(prefs.pttKey);
  if (session && session.localTile) setTileMedia(session.localTile, a, v, d);
  renderRoster();
}

/** A KeyboardEvent.code as people name the key ('Space', 'T', 'F1', ...). */
export function keyName(code) {
  return String(code || '')
    .replace(/^Key/, '')
    .replace(/^Digit/, '')
    .replace(/^Numpad/, 'Numpad ');
}

// ---------------------------------------------------------------------------------------
// Settings: device pickers
// ---------------------------------------------------------------------------------------
/** Fill the device pickers from `conclave.devices`; the selection is the device in use. */
export function renderDevices() {
  fillSelect(ui.micSelect, conclave.devices.audioinput, trackDevice('audio') || prefs.audioInput);
  fillSelect(ui.camSelect, conclave.devices.videoinput, trackDevice('video') || prefs.videoInput);
  ui.speakerRow.hidden = !canChooseSpeaker;
  if (canChooseSpeaker) fillSelect(ui.speakerSelect, conclave.devices.audiooutput, prefs.audioOutput);
}

function trackDevice(kind) {
  const t = localTrack(kind);
  const s = t && typeof t.getSettings === 'function' ? t.getSettings() : null;
  return (s && s.deviceId) || '';
}

function fillSelect(select, devices, selected) {
  select.textContent = '';
  const def = document.createElement('option');
  def.value = '';
  def.textContent = 'Browser default';
  select.appendChild(def);
  for (const d of devices) {
    if (d.deviceId === 'default') continue; // the browser default, above
    const o = document.createElement('option');
    o.value = d.deviceId;
    o.textContent = d.label;
    select.appendChild(o);
  }
  const ids = Array.from(select.options, (o) => o.value);
  select.value = ids.includes(selected) ? selected : '';
  select.disabled = devices.length === 0;
}

// ---------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------
export function showCallView(room) {
  ui.joinView.hidden = true;
  ui.callView.hidden = false;
  ui.roomLabel.textContent = room;
  ui.roomLabel.hidden = false;
  document.title = `${room} – Conclave`;
}

export function showJoinView() {
  ui.callView.hidden = true;
  ui.joinView.hidden = false;
  ui.roomLabel.hidden = true;
  ui.joinButton.disabled = false;
  document.title = 'Conclave';
}
