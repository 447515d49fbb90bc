// Conclave web client: the user's devices. Lists microphones, cameras and speakers
// (enumerateDevices, again on every `devicechange`), opens one device at a time with the
// remembered choice (prefs: audioInput, videoInput, audioOutput), and plays remote audio on
// the chosen speaker (HTMLMediaElement.setSinkId, where the browser has it).
// What to do with an opened track (send it, stop it) is media.js's business; showing the
// lists is ui.js's.

import { conclave, intParam, prefs, session } from './state.js';
import { setSoundsSink } from './sounds.js';

const PREF_BY_KIND = { audio: 'audioInput', video: 'videoInput' };

/** Whether this browser can choose where audio plays. */
export const canChooseSpeaker = typeof HTMLMediaElement !== 'undefined' && typeof HTMLMediaElement.prototype.setSinkId === 'function';

/** Refresh `conclave.devices` from the browser (labels appear once a device was allowed). */
export async function refreshDevices() {
  const md = navigator.mediaDevices;
  if (!md || typeof md.enumerateDevices !== 'function') return conclave.devices;
  let list = [];
  try {
    list = await md.enumerateDevices();
  } catch (_) {
    return conclave.devices;
  }
  const out = { audioinput: [], videoinput: [], audiooutput: [] };
  for (const d of list) {
    if (!out[d.kind] || !d.deviceId) continue;
    out[d.kind].push({ deviceId: d.deviceId, label: d.label || `${d.kind} ${out[d.kind].length + 1}`, groupId: d.groupId });
  }
  conclave.devices = out;
  return out;
}

/**
 * getUserMedia constraints for `kinds` (['audio'], ['video'] or both): `deviceId` (the user
 * just picked it), else the remembered device unless `anyDevice`; either as `exact` (an
 * `ideal` device loses to another that fits the size better).
 */
export function constraints(kinds, deviceId, anyDevice) {
  const c = { audio: false, video: false };
  for (const kind of kinds) {
    const id = deviceId || (anyDevice ? '' : prefs[PREF_BY_KIND[kind]]);
    // 960x540: the smallest capture from which the browser sends all three simulcast layers.
    const base = kind === 'video' ? { width: { ideal: intParam('width', 960) }, height: { ideal: intParam('height', 540) } } : {};
    if (id) base.deviceId = { exact: id };
    c[kind] = Object.keys(base).length ? base : true;
  }
  return c;
}

/** Whether `kinds` would ask for a remembered device (so a failure may be retried without). */
function usesPrefs(kinds) {
  return kinds.some((k) => prefs[PREF_BY_KIND[k]]);
}

/**
 * getUserMedia for `kinds` with the remembered devices; one that is gone (unplugged, another
 * machine) falls back to the browser's default.
 */
export async function getMedia(kinds) {
  const md = navigator.mediaDevices;
  try {
    return await md.getUserMedia(constraints(kinds));
  } catch (err) {
    if (!usesPrefs(kinds) || !['OverconstrainedError', 'NotFoundError'].includes(err && err.name)) throw err;
    return md.getUserMedia(constraints(kinds, '', true));
  }
}

/** Open one device of `kind` (the remembered one, or `deviceId`): a live track, or throws. */
export async function openDevice(kind, deviceId) {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) throw new DOMException('no media devices here (the page needs https)', 'NotSupportedError');
  const stream = deviceId ? await md.getUserMedia(constraints([kind], deviceId)) : await getMedia([kind]);
  const track = (kind === 'audio' ? stream.getAudioTracks() : stream.getVideoTracks())[0];
  if (!track) throw new DOMException(`no ${kind} track`, 'NotFoundError');
  delete conclave.deviceErrors[kind];
  return track;
}

/** The device id a live track uses (for the pickers). */
export function trackDeviceId(track) {
  const s = track && typeof track.getSettings === 'function' ? track.getSettings() : {};
  return s.deviceId || '';
}

/**
 * Play one media element's audio on the chosen speaker (no-op where unsupported). One change
 * at a time per element; a change the element aborts (it was loading its stream) is made
 * again when it starts playing (ui.js calls this on `playing`).
 */
export function applySink(el) {
  if (!canChooseSpeaker || !el) return;
  const id = prefs.audioOutput || '';
  if (el.sinkId === id || el.conclaveSinkPending) return;
  el.conclaveSinkPending = true;
  el.setSinkId(id)
    .catch((err) => console.warn('[conclave] setSinkId', err && err.name))
    .finally(() => {
      el.conclaveSinkPending = false;
      // The choice changed meanwhile: follow it.
      if (el.sinkId !== (prefs.audioOutput || '') && el.isConnected && !el.paused) applySink(el);
    });
}

/** Play every tile's audio, and the sounds, on the chosen speaker. */
export function applySinkEverywhere() {
  if (session) for (const tile of session.tiles.values()) applySink(tile.video);
  setSoundsSink(prefs.audioOutput);
}
