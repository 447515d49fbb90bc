// Conclave web client: what went wrong, in words a user can act on. The server's stable
// error codes (docs/protocol.md, "Error codes"), WebSocket close codes and getUserMedia
// failures become sentences; the codes stay in `conclave.errorCodes` and the status line's
// `data-code` for support and tests. Imports nothing.

const SERVER_ERRORS = {
  invalid_token: 'Your invitation link is not valid (it may be incomplete, or for another server). Open the link you were given again.',
  token_expired: 'Your invitation link has expired. Ask for a new one.',
  room_full: 'This voice channel is full. Try again when someone leaves.',
  no_capacity: 'The server has no room for another call right now. Try again in a minute.',
  unavailable: 'The server is busy or partly unavailable. Try again in a moment.',
  internal: 'The server ran into a problem. Try again.',
  resume_failed: 'Your earlier session had expired; you joined again.',
  already_joined: 'This page is already in the call.',
  not_joined: 'This page is not in the call any more. Join again.',
  invalid_sdp: 'Your browser and the server could not agree on how to send media.',
  invalid_state: 'This page and the server got out of step. Leave and join again if media does not work.',
  bad_message: 'This page sent the server something it did not understand.',
  unknown_message: 'This page is newer than the server; some features may not work.',
  sdp_too_large: 'Your browser sent more media than this server accepts.',
  too_many_m_lines: 'Your browser sent more media than this server accepts.',
  too_many_tracks: 'Your browser sent more media than this server accepts.',
  too_many_candidates: 'Your browser sent more network addresses than this server accepts.',
};

/** A sentence for a server `error` message (falls back to the server's own message). */
export function describeServerError(code, message) {
  return SERVER_ERRORS[code] || message || 'The server refused a request.';
}

/** A sentence for why the WebSocket closed (code and reason from the close event). */
export function describeClose(code, reason) {
  switch (code) {
    case 4001:
      return 'this call was taken over by another tab or window';
    case 4002:
      return 'you joined this channel again from another tab or device';
    case 1008:
      return /join deadline/.test(reason || '')
        ? 'the server closed an idle connection'
        : 'the server closed the connection because this page sent too many requests';
    case 1009:
      return 'this page sent the server a message that was too large';
    case 1013:
      return 'the connection was too slow to keep up';
    case 1006:
      return 'the connection dropped';
    default:
      return reason ? `the server closed the connection: ${reason}` : 'the connection closed';
  }
}

const DEVICE_NAMES = { audio: 'microphone', video: 'camera' };

/** A sentence for a getUserMedia failure; `kinds` is ['audio'], ['video'] or both. */
export function describeDeviceError(err, kinds) {
  const what = kinds.map((k) => DEVICE_NAMES[k] || k).join(' and ');
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `This site is not allowed to use your ${what}. Allow it in the browser's address bar, then try again.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} found. Plug one in, or pick another in Settings.`;
    case 'NotReadableError':
    case 'AbortError':
      return `Your ${what} could not be started: another application may be using it.`;
    default:
      return `Your ${what} could not be started (${err && err.name ? err.name : 'unknown error'}).`;
  }
}
