// Conclave web client: voice-channel controls. Deafen (all incoming audio muted, the
// microphone with it, and the room told with `setDeafened`), each user's volume (remembered
// per user id), push-to-talk on a key, keyboard shortcuts, and the settings panel (devices,
// join/leave sounds, push-to-talk).

import { conclave, prefs, savePrefs } from './state.js';
import { applyAudioEverywhere, keyName, logLine, onTileVolume, renderRoster, ui, updateControls } from './ui.js';
import { send } from './protocol.js';
import { applyMicEnabled, releaseMicrophone, setAudio, setVideo, switchDevice } from './media.js';

/** The microphone's state before deafening, restored by undeafening (as chat apps do). */
let micBeforeDeafen = null;

/** Deafen: mute every participant's audio here, mute the microphone, and tell the room. */
export async function setDeafened(on) {
  on = !!on;
  if (on === conclave.deafened) return true;
  conclave.deafened = on;
  applyAudioEverywhere();
  if (on) {
    micBeforeDeafen = conclave.audio;
    if (conclave.audio) await setAudio(false);
  } else if (micBeforeDeafen) {
    micBeforeDeafen = null;
    await setAudio(true);
  }
  if (conclave.state === 'joined') send({ id: 'setDeafened', enabled: on });
  updateControls();
  return true;
}

/** Play `userId`'s audio at `volume` (0..1), remembered for that user's next calls too. */
export function setVolume(userId, volume) {
  const v = Math.max(0, Math.min(1, Number(volume)));
  if (!userId || !Number.isFinite(v)) return false;
  savePrefs({ volumes: Object.assign({}, prefs.volumes, { [userId]: v }) });
  applyAudioEverywhere();
  return true;
}

/** Turn push-to-talk on or off, and optionally choose its key (a KeyboardEvent.code). */
export function setPushToTalk(on, key) {
  const changes = { ptt: !!on };
  if (key) changes.pttKey = String(key);
  savePrefs(changes);
  conclave.pttHeld = false;
  applyMicEnabled();
  logLine('info', prefs.ptt ? `push-to-talk on (${keyName(prefs.pttKey)})` : 'push-to-talk off');
  return true;
}

export function setSounds(on) {
  savePrefs({ sounds: !!on });
  updateControls();
  return true;
}

// ---------------------------------------------------------------------------------------
// Keyboard: push-to-talk and shortcuts
// ---------------------------------------------------------------------------------------
/** Keys (KeyboardEvent.code) of the shortcuts; shown on the buttons (aria-keyshortcuts, title). */
export const SHORTCUTS = {
  KeyM: { what: 'mute or unmute the microphone', run: () => setAudio(!conclave.audio) },
  KeyV: { what: 'start or stop the camera', run: () => setVideo(!conclave.video) },
  KeyD: { what: 'deafen or undeafen', run: () => setDeafened(!conclave.deafened) },
};

function typingInto(target) {
  if (!target || !(target instanceof Element)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  if (tag !== 'INPUT') return false;
  return !['checkbox', 'radio', 'range', 'button', 'submit'].includes(target.type);
}

function inCall() {
  return conclave.state === 'joined' || conclave.state === 'reconnecting';
}

function setPttHeld(held) {
  if (conclave.pttHeld === held) return;
  conclave.pttHeld = held;
  applyMicEnabled();
}

let capturingKey = false;

function onKeyDown(ev) {
  if (capturingKey) {
    ev.preventDefault();
    capturingKey = false;
    delete ui.pttKeyButton.dataset.capturing;
    if (ev.code !== 'Escape') setPushToTalk(true, ev.code);
    updateControls();
    return;
  }
  if (!inCall() || ev.ctrlKey || ev.metaKey || ev.altKey || typingInto(ev.target)) return;
  if (prefs.ptt && ev.code === prefs.pttKey) {
    ev.preventDefault(); // Space would press the focused button, scroll the page
    if (!ev.repeat) setPttHeld(true);
    return;
  }
  const sc = SHORTCUTS[ev.code];
  if (sc && !ev.repeat && !ev.shiftKey) {
    ev.preventDefault();
    sc.run();
  }
}

function onKeyUp(ev) {
  if (prefs.ptt && ev.code === prefs.pttKey && conclave.pttHeld) {
    ev.preventDefault();
    setPttHeld(false);
  }
}

// ---------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------
export function wireControls() {
  ui.deafenButton.addEventListener('click', () => setDeafened(!conclave.deafened));
  ui.micSelect.addEventListener('change', () => switchDevice('audioinput', ui.micSelect.value));
  ui.camSelect.addEventListener('change', () => switchDevice('videoinput', ui.camSelect.value));
  ui.speakerSelect.addEventListener('change', () => switchDevice('audiooutput', ui.speakerSelect.value));
  ui.leaveMicButton.addEventListener('click', () => releaseMicrophone());
  ui.soundsToggle.addEventListener('change', () => setSounds(ui.soundsToggle.checked));
  ui.speakerViewToggle.addEventListener('change', () => {
    savePrefs({ speakerView: ui.speakerViewToggle.checked });
    updateControls();
  });
  ui.pttToggle.addEventListener('change', () => setPushToTalk(ui.pttToggle.checked));
  ui.pttKeyButton.addEventListener('click', () => {
    capturingKey = true;
    ui.pttKeyButton.dataset.capturing = '1';
    ui.pttKeyButton.textContent = 'Press a key…';
  });
  onTileVolume((userId, v) => setVolume(userId, v));
  window.addEventListener('keydown', onKeyDown);
  window.addEventListener('keyup', onKeyUp);
  // A key released while another window had focus never sends keyup here.
  window.addEventListener('blur', () => setPttHeld(false));
  for (const [code, sc] of Object.entries(SHORTCUTS)) {
    const button = { KeyM: ui.micButton, KeyV: ui.camButton, KeyD: ui.deafenButton }[code];
    button.setAttribute('aria-keyshortcuts', keyName(code));
    button.title = `${sc.what[0].toUpperCase()}${sc.what.slice(1)} (${keyName(code)})`;
  }
  updateControls();
  renderRoster();
}
