// Conclave web client: shared state. The `window.conclave` object (the call as tests and
// the UI observe it), the current call's private session, and the page's URL parameters.
// It imports nothing: every other module reads and writes state here, so the modules form
// one-way layers (state ← ui ← protocol ← media ← session ← main) with no import circle.

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
  pc: null,
  ws: null,
  localStream: null,
  audio: false,
  video: false,
  wsState: 'closed',
  mediaState: 'none',
  /** performance.now() based timings (ms) */
  timings: { joinStart: null, joined: null, firstFrame: {} },
  // The actions (join, leave, setAudio, setVideo, statsByParticipant) are added by main.js.
};

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
