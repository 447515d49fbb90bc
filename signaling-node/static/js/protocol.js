// Conclave web client: the wire. One WebSocket to the signaling node carrying JSON text
// frames with an "id" field, camelCase (see common/src/protocol.rs and docs/protocol.md).
// Opens the socket, sends messages, and receives them: each server message is recorded in
// `conclave.events` and handed to the session's handler strictly in arrival order.
// What a message means, and what a dropped socket means, is session.js's business.

import { conclave, session } from './state.js';
import { logLine, reportError, setWsState, ui } from './ui.js';

const CONNECT_TIMEOUT_MS = 5000;

export function send(msg) {
  const ws = session && session.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(msg));
  return true;
}

/**
 * Open the call's WebSocket (resolves once open). Messages go to `handle` in order; once
 * open, a close of the current socket goes to `onClosed(s, ev)`.
 */
export function openSocket(s, room, handle, onClosed) {
  return new Promise((resolve, reject) => {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws?room=${encodeURIComponent(room)}`);
    s.ws = conclave.ws = ws;
    setWsState('connecting');
    let opened = false;
    // A server that accepts TCP but never answers (hung, overloaded) must not hang us.
    const connectTimer = setTimeout(() => {
      if (opened) return;
      reject(new Error('the server did not answer in time'));
      ws.close();
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      opened = true;
      clearTimeout(connectTimer);
      setWsState('open');
      resolve();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') receive(s, ev.data, handle);
    };
    ws.onerror = () => {
      if (!opened) reject(new Error('cannot connect to the server'));
    };
    ws.onclose = (ev) => {
      if (session !== s || s.closed || s.ws !== ws) return;
      setWsState('closed');
      if (!opened) {
        reject(new Error(`connection refused (code ${ev.code})`));
        return;
      }
      onClosed(s, ev);
    };
  });
}

// ---------------------------------------------------------------------------------------
// Server messages (handled strictly in order through session.queue)
// ---------------------------------------------------------------------------------------
/** One text frame from the server: record it, count heartbeats, queue the rest for `handle`. */
function receive(s, data, handle) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (_) {
    reportError('Server sent a frame that is not JSON');
    return;
  }
  conclave.events.push(msg);
  s.lastServerMessageAt = Date.now();
  if (msg.id === 'heartbeat') {
    conclave.heartbeats += 1;
    ui.heartbeatCount.textContent = `(${conclave.heartbeats} heartbeats)`;
    return;
  }
  logLine('recv', summarize(msg));
  s.queue = s.queue
    .then(() => (session === s ? handle(s, msg) : undefined))
    .catch((err) => reportError(`Failed to handle "${msg.id}": ${err && err.message ? err.message : err}`));
}

function summarize(msg) {
  const copy = Object.assign({}, msg);
  if (typeof copy.sdp === 'string') copy.sdp = `<${copy.sdp.length} bytes>`;
  if (copy.tracks) copy.tracks = copy.tracks.map((t) => `${t.mid}:${t.kind}:${t.participantId}`);
  if (copy.participants) copy.participants = copy.participants.map((p) => p.participantId);
  return JSON.stringify(copy);
}
