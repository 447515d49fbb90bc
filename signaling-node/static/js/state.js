// Conclave web client: shared state. The `window.conclave` object (the call as tests and
// the UI observe it), the current call's private session, the page's URL parameters and the
// user's remembered choices (`prefs`, in localStorage).
// It imports nothing: every other module reads and writes state here, so the modules form
// one-way layers (state ← sounds ← devices ← ui ← protocol ← media ← session ← controls ←
// main; errors.js imports nothing) with no import circle.

export const params = new URLSearchParams(location.search);

export const conclave = {
  /** 'idle' | 'joining' | 'joined' | 'reconnecting' | 'left' */
  state: 'idle',
  participantId: null,
  room: null,
  community: null,
  /** participantId -> ParticipantInfo (the others; own entry under participantId too) */
  participants: {},
  /** mid -> TrackInfo (the full list from the last serverOffer) */
  tracks: {},
  /** every server message, in arrival order */
  events: [],
  /** every error shown to the user (strings) */
  errors: [],
  heartbeats: 0,
  /** WebSocket reconnections, successful resumes, and peer connections rebuilt */
  reconnects: 0,
  resumes: 0,
  /** why the last reconnection started */
  lastDisconnect: null,
  mediaRestarts: 0,
  /** why the client stopped trying to connect media (until the user asks again), or null */
  mediaGaveUp: null,
  pc: null,
  ws: null,
  localStream: null,
  /** microphone live in the call (track enabled unless push-to-talk waits for its key) */
  audio: false,
  /** camera on: a live camera track is being sent (off = no track, the device is closed) */
  video: false,
  /** all incoming audio muted, and the room told (`setDeafened`) */
  deafened: false,
  /** the server's last `speaking`: who talks now (ours included), and the dominant speaker */
  speaking: { participants: [], dominant: null },
  /** push-to-talk key held right now */
  pttHeld: false,
  /** 'audio' / 'video' -> why the device could not be opened ('NotFoundError', ...), or absent */
  deviceErrors: {},
  /** the devices the browser lists, by kind ('audioinput', 'videoinput', 'audiooutput') */
  devices: { audioinput: [], videoinput: [], audiooutput: [] },
  /** join/leave sounds played: [{ kind: 'join' | 'leave', participantId, contextState }] */
  cues: [],
  /** stable codes of the errors in `errors` that came from the server ('room_full', ...) */
  errorCodes: [],
  /** the ICE servers (TURN, STUN) of the last `joined`, as the peer connection uses them */
  iceServers: [],
  /** test hook: only relayed (TURN) candidates, as on a network that blocks the direct path */
  forceRelay: params.get('relay') === '1',
  wsState: 'closed',
  mediaState: 'none',
  /** performance.now() based timings (ms) */
  timings: { joinStart: null, joined: null, firstFrame: {} },
  // The actions (join, leave, setAudio, setVideo, statsByParticipant, ...) are added by main.js.
};

// ---------------------------------------------------------------------------------------
// Remembered choices (localStorage 'conclave.prefs'): devices, sounds, push-to-talk, volumes
// ---------------------------------------------------------------------------------------
const PREFS_KEY = 'conclave.prefs';
const DEFAULT_PREFS = {
  /** chosen device ids ('' = the browser's default) */
  audioInput: '',
  videoInput: '',
  audioOutput: '',
  /** join/leave sounds */
  sounds: true,
  speakerView: false,
  /** push-to-talk: the microphone sends only while `pttKey` (a KeyboardEvent.code) is held */
  ptt: false,
  pttKey: 'Space',
  /** userId -> playback volume 0..1 of that user's audio */
  volumes: {},
};

function loadPrefs() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(PREFS_KEY) || '{}') || {};
  } catch (_) {}
  const out = Object.assign({}, DEFAULT_PREFS);
  for (const k of Object.keys(DEFAULT_PREFS)) {
    if (k in saved && typeof saved[k] === typeof DEFAULT_PREFS[k]) out[k] = saved[k];
  }
  out.volumes = Object.assign({}, out.volumes);
  return out;
}

export const prefs = loadPrefs();

/** Change remembered choices and store them (a page without storage keeps them in memory). */
export function savePrefs(changes) {
  Object.assign(prefs, changes);
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch (_) {}
}

// Per-call private state (see session.js `newSession`). An exported `let` is a live binding:
// every importer sees the current call, and only `setSession` replaces it.
export let session = null;

export function setSession(s) {
  session = s;
}

export function intParam(name, fallback) {
  const v = parseInt(params.get(name) || '', 10);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

export function localTrack(kind) {
  const s = conclave.localStream;
  if (!s) return null;
  return (kind === 'audio' ? s.getAudioTracks() : s.getVideoTracks())[0] || null;
}
