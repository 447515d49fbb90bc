// Conclave web client: entry point (index.html loads it as a module). Exposes the test hook
// `window.conclave`, wires the page's buttons and form, and handles deep links.
//
// The client: one WebSocket to the signaling node (protocol.js), one RTCPeerConnection to the
// SFU (media.js), the page (ui.js), join/resume/heartbeat/leave (session.js), shared state
// (state.js).
//
// Test hooks live on `window.conclave` (state, participantId, participants, tracks, events,
// errors, errorCodes, cues, devices, deviceErrors, pc, ws, iceServers, join(), leave(),
// setAudio(), setVideo(), releaseMicrophone(), switchDevice(), setDeafened(), setVolume(),
// setPushToTalk(), setSounds(), statsByParticipant(), selectedCandidatePair()). Set
// `conclave.forceRelay = true` (or open the page with `?relay=1`) before joining to allow
// only TURN-relayed candidates.

import { conclave, params, session } from './state.js';
import { clearStatus, enableSound, renderDevices, renderRoster, reportError, ui } from './ui.js';
import { send } from './protocol.js';
import { onDeviceChange, releaseMicrophone, retryMediaNow, selectedCandidatePair, setAudio, setVideo, statsByParticipant, switchDevice } from './media.js';
import { refreshDevices } from './devices.js';
import { join, leave } from './session.js';
import { setDeafened, setPushToTalk, setSounds, setVolume, wireControls } from './controls.js';
import { unlockSounds } from './sounds.js';

Object.assign(conclave, {
  join,
  leave,
  setAudio,
  setVideo,
  releaseMicrophone,
  switchDevice,
  setDeafened,
  setVolume,
  setPushToTalk,
  setSounds,
  statsByParticipant,
  selectedCandidatePair,
});
window.conclave = conclave;

// ---------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------
ui.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  unlockSounds(); // a user gesture: the join/leave sounds may start
  ui.joinButton.disabled = true;
  const room = ui.roomInput.value;
  const name = ui.nameInput.value;
  try {
    localStorage.setItem('conclave.name', name.trim());
  } catch (_) {}
  join(room, name).catch(() => {
    ui.joinButton.disabled = false;
  });
});
ui.micButton.addEventListener('click', () => setAudio(!conclave.audio));
ui.camButton.addEventListener('click', () => setVideo(!conclave.video));
ui.leaveButton.addEventListener('click', () => {
  leave().catch((err) => reportError(`Leave failed: ${err.message}`));
});
ui.soundButton.addEventListener('click', () => {
  unlockSounds();
  enableSound();
});
// Phones start audio only inside a user gesture: the first touch or key unlocks the sounds.
window.addEventListener('pointerdown', unlockSounds, { once: true });
window.addEventListener('keydown', unlockSounds, { once: true });
wireControls();
if (navigator.mediaDevices && typeof navigator.mediaDevices.addEventListener === 'function') {
  navigator.mediaDevices.addEventListener('devicechange', () => onDeviceChange());
}
refreshDevices().then(renderDevices);
ui.statusClose.addEventListener('click', clearStatus);
ui.statusRetryMedia.addEventListener('click', () => retryMediaNow());
window.addEventListener('pagehide', () => {
  if (session && conclave.state === 'joined') send({ id: 'leave' });
});

/** The (unverified) claims of a JWT, to prefill the form from a ?token= link. */
function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part + '='.repeat((4 - (part.length % 4)) % 4)), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join('')
    );
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : {};
  } catch (_) {
    return {};
  }
}

// Deep links: ?room=...&name=...&autojoin=1 (and ?token=..., whose room and name prefill the form)
const claims = params.get('token') ? tokenClaims(params.get('token')) : {};
ui.roomInput.value = params.get('room') || (typeof claims.room === 'string' ? claims.room : '');
let savedName = '';
try {
  savedName = localStorage.getItem('conclave.name') || '';
} catch (_) {}
ui.nameInput.value = params.get('name') || (typeof claims.name === 'string' ? claims.name : '') || savedName;
if (params.get('audio') === '0') ui.startAudio.checked = false;
if (params.get('video') === '0') ui.startVideo.checked = false;
renderRoster();
if (params.get('autojoin') === '1' && ui.roomInput.value) {
  ui.joinButton.disabled = true;
  join(ui.roomInput.value, ui.nameInput.value || 'Guest').catch(() => {
    ui.joinButton.disabled = false;
  });
}
