// Conclave web client: join and leave sounds, generated with WebAudio (no sound files, nothing
// for the CSP to allow). Off when the user turns them off (prefs.sounds) or is deafened. Each
// sound played is recorded in `conclave.cues` (the test hook).

import { conclave, prefs } from './state.js';

/** Rising two-note chime for a join, falling for a leave: [frequency Hz, start s]. */
const NOTES = {
  join: [
    [660, 0],
    [880, 0.09],
  ],
  leave: [
    [660, 0],
    [440, 0.09],
  ],
};
const NOTE_SECONDS = 0.12;
const VOLUME = 0.15;

let ctx = null;

/** The page's AudioContext (made on first use; a user gesture lets it start: `unlockSounds`). */
function audioContext() {
  if (!ctx) {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return null;
    ctx = new AC();
    if (prefs.audioOutput) setSoundsSink(prefs.audioOutput);
  }
  return ctx;
}

/** Call from a user gesture (the join button, the sound button): browsers start audio then. */
export function unlockSounds() {
  const c = audioContext();
  if (c && c.state === 'suspended') c.resume().catch(() => {});
}

/** Play the output device choice for the sounds too, where the browser can (AudioContext.setSinkId). */
export function setSoundsSink(deviceId) {
  if (ctx && typeof ctx.setSinkId === 'function') ctx.setSinkId(deviceId || '').catch(() => {});
}

/** Play the sound for `kind` ('join' | 'leave') about `participantId`, unless sounds are off. */
export function playCue(kind, participantId) {
  if (!prefs.sounds || conclave.deafened || !NOTES[kind]) return;
  const c = audioContext();
  if (!c) return;
  if (c.state === 'suspended') c.resume().catch(() => {});
  const t0 = c.currentTime + 0.01;
  for (const [freq, at] of NOTES[kind]) {
    const osc = c.createOscillator();
    const gain = c.createGain();
    osc.type = 'sine';
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0, t0 + at);
    gain.gain.linearRampToValueAtTime(VOLUME, t0 + at + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.001, t0 + at + NOTE_SECONDS);
    osc.connect(gain).connect(c.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + NOTE_SECONDS + 0.02);
  }
  conclave.cues.push({ kind, participantId, contextState: c.state });
}
