// Conclave web client: one WebSocket to the signaling node, one RTCPeerConnection to the SFU.
//
// Protocol (see common/src/protocol.rs): JSON text frames with an "id" field, camelCase.
// The client sends one `offer` (its microphone and camera, sendonly) after `joined`; from then
// on only the server offers (`serverOffer`) and the client answers. Mute is `track.enabled`
// plus `setAudio` / `setVideo`, never renegotiation.
//
// Failures: when the WebSocket drops, the client reconnects (backing off) and sends `resume`
// with the `resumeToken` from `joined` — same participant, same peer connection, media never
// stops. If the server says `mediaState: failed` (its media node died; the room moved), the
// client builds a fresh peer connection and offers again, without leaving the room.
//
// Test hooks live on `window.conclave` (state, participantId, participants, tracks, events,
// errors, pc, ws, join(), leave(), setAudio(), setVideo(), statsByParticipant()).
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);

  const ui = {
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
    grid: $('grid'),
    soundButton: $('sound-button'),
    participantList: $('participant-list'),
    participantCount: $('participant-count'),
    eventLog: $('event-log'),
    heartbeatCount: $('heartbeat-count'),
    micButton: $('mic-button'),
    camButton: $('cam-button'),
    leaveButton: $('leave-button'),
    tileTemplate: $('tile-template'),
  };

  const MAX_LOG_LINES = 200;
  const LEAVE_TIMEOUT_MS = 2000;
  const HEARTBEAT_DEAD_INTERVALS = 3;
  const CONNECT_TIMEOUT_MS = 5000;

  // ---------------------------------------------------------------------------------------
  // State (exposed for tests as window.conclave)
  // ---------------------------------------------------------------------------------------
  const conclave = {
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
    join,
    leave,
    setAudio,
    setVideo,
    statsByParticipant,
  };
  window.conclave = conclave;

  // Per-call private state.
  let session = null;

  function newSession(room, name) {
    return {
      room,
      name,
      ws: null,
      pc: null,
      queue: Promise.resolve(), // server messages are handled strictly in order
      heartbeatTimer: null,
      lastServerMessageAt: 0,
      offerSent: false,
      pendingCandidates: [],
      /** access token, and `resume` credentials from `joined` */
      token: null,
      resumeToken: null,
      resumeGraceMs: 15000,
      reconnecting: false,
      mediaRetryTimer: null,
      joinedResolve: null,
      joinedReject: null,
      leftResolve: null,
      leaving: false,
      closed: false,
      /** mid -> { participantId, track } currently attached to a tile */
      attached: new Map(),
      /** participants that left; their tiles must not come back from a late track */
      gone: new Set(),
      /** participantId -> { el, video, stream } */
      tiles: new Map(),
      localTile: null,
      soundBlocked: false,
    };
  }

  // ---------------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------------
  function randomId(prefix) {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function userId() {
    let id = null;
    try {
      id = sessionStorage.getItem('conclave.userId');
      if (!id) {
        id = randomId('u-');
        sessionStorage.setItem('conclave.userId', id);
      }
    } catch (_) {
      id = id || randomId('u-');
    }
    return id;
  }

  function intParam(name, fallback) {
    const v = parseInt(params.get(name) || '', 10);
    return Number.isFinite(v) && v > 0 ? v : fallback;
  }

  function initials(name) {
    const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
    const s = parts.slice(0, 2).map((p) => Array.from(p)[0]).join('');
    return (s || '?').toUpperCase();
  }

  function showStatus(text, kind) {
    ui.statusText.textContent = text;
    ui.status.dataset.kind = kind || 'info';
    ui.status.hidden = false;
  }

  function clearStatus() {
    ui.status.hidden = true;
    ui.statusText.textContent = '';
  }

  function reportError(text) {
    conclave.errors.push(text);
    showStatus(text, 'error');
    logLine('error', text);
    console.warn('[conclave]', text);
  }

  function logLine(kind, text) {
    const li = document.createElement('li');
    li.className = 'log-' + kind;
    const time = new Date().toLocaleTimeString();
    li.textContent = `${time} ${text}`;
    ui.eventLog.appendChild(li);
    while (ui.eventLog.childElementCount > MAX_LOG_LINES) ui.eventLog.firstElementChild.remove();
  }

  function setPill(el, state, label) {
    el.dataset.state = state;
    el.querySelector('.pill-value').textContent = label || state;
  }

  function setWsState(state) {
    conclave.wsState = state;
    setPill(ui.wsState, state);
  }

  function updateMediaPill() {
    const pc = session && session.pc;
    const local = pc ? pc.connectionState : 'none';
    conclave.mediaState = local;
    // Show the browser's own view; the server's view (mediaState message) goes in the title.
    setPill(ui.mediaState, local);
    ui.mediaState.title = `Media connection: browser ${local}, server ${conclave.serverMediaState || 'unknown'}`;
  }

  function send(msg) {
    const ws = session && session.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Tiles and roster
  // ---------------------------------------------------------------------------------------
  function makeTile(participantId, name, isLocal) {
    const el = ui.tileTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.participantId = participantId || '';
    if (isLocal) el.classList.add('local');
    const video = el.querySelector('video');
    const stream = new MediaStream();
    video.srcObject = stream;
    const tile = { el, video, stream, isLocal };
    setTileName(tile, name, isLocal);
    if (isLocal) {
      video.muted = true; // never play our own microphone back
    } else {
      video.muted = session ? session.soundBlocked : false;
      watchFirstFrame(tile, participantId);
    }
    video.addEventListener('loadeddata', () => refreshTileVideo(tile));
    ui.grid.appendChild(el);
    updateGridCount();
    return tile;
  }

  function setTileName(tile, name, isLocal) {
    const label = isLocal ? `${name || 'You'} (you)` : name || 'Guest';
    tile.el.querySelector('.tile-name').textContent = label;
    tile.el.querySelector('.avatar').textContent = initials(name);
    tile.el.setAttribute('aria-label', label);
  }

  function setTileMedia(tile, audio, video) {
    tile.el.dataset.audio = audio ? 'on' : 'off';
    tile.el.dataset.video = video ? 'on' : 'off';
    refreshTileVideo(tile);
  }

  function refreshTileVideo(tile) {
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

  function updateGridCount() {
    const n = ui.grid.childElementCount;
    ui.grid.dataset.count = String(n);
    ui.grid.style.setProperty('--tiles', String(n));
  }

  function remoteTile(participantId) {
    if (!session || !participantId || participantId === conclave.participantId) return null;
    if (session.gone.has(participantId)) return null;
    let tile = session.tiles.get(participantId);
    if (!tile) {
      const info = conclave.participants[participantId];
      tile = makeTile(participantId, info ? info.name : '', false);
      if (info) setTileMedia(tile, info.audio, info.video);
      session.tiles.set(participantId, tile);
      renderRoster();
    }
    return tile;
  }

  function removeTile(participantId) {
    const tile = session && session.tiles.get(participantId);
    if (!tile) return;
    for (const t of tile.stream.getTracks()) tile.stream.removeTrack(t);
    tile.video.srcObject = null;
    tile.el.remove();
    session.tiles.delete(participantId);
    updateGridCount();
  }

  function playTile(tile) {
    const p = tile.video.play();
    if (!p || typeof p.catch !== 'function') return;
    p.catch((err) => {
      if (err && err.name === 'NotAllowedError' && !tile.video.muted) {
        // Autoplay with sound blocked: play muted and offer a button.
        session && (session.soundBlocked = true);
        tile.video.muted = true;
        ui.soundButton.hidden = false;
        tile.video.play().catch(() => {});
      }
    });
  }

  function enableSound() {
    if (!session) return;
    session.soundBlocked = false;
    ui.soundButton.hidden = true;
    for (const tile of session.tiles.values()) {
      tile.video.muted = false;
      playTile(tile);
    }
  }

  function renderRoster() {
    const list = ui.participantList;
    list.textContent = '';
    const entries = [];
    if (conclave.participantId && conclave.state === 'joined') {
      entries.push({
        participantId: conclave.participantId,
        name: session ? session.name : '',
        audio: conclave.audio,
        video: conclave.video,
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
      li.append(name, state);
      list.appendChild(li);
    }
    ui.participantCount.textContent = String(entries.length);
  }

  function updateControls() {
    const a = conclave.audio;
    const v = conclave.video;
    const hasAudio = !!localTrack('audio');
    const hasVideo = !!localTrack('video');
    ui.micButton.setAttribute('aria-pressed', String(!a));
    ui.micButton.classList.toggle('off', !a);
    ui.micButton.disabled = !hasAudio;
    ui.micButton.querySelector('.control-label').textContent = !hasAudio ? 'No mic' : a ? 'Mute mic' : 'Unmute mic';
    ui.camButton.setAttribute('aria-pressed', String(!v));
    ui.camButton.classList.toggle('off', !v);
    ui.camButton.disabled = !hasVideo;
    ui.camButton.querySelector('.control-label').textContent = !hasVideo ? 'No camera' : v ? 'Stop camera' : 'Start camera';
    if (session && session.localTile) setTileMedia(session.localTile, a, v);
    renderRoster();
  }

  function localTrack(kind) {
    const s = conclave.localStream;
    if (!s) return null;
    return (kind === 'audio' ? s.getAudioTracks() : s.getVideoTracks())[0] || null;
  }

  // ---------------------------------------------------------------------------------------
  // Media
  // ---------------------------------------------------------------------------------------
  async function getLocalMedia(wantAudio, wantVideo) {
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
        reportError('Media connection failed (no route to the media server?)');
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (session === s) logLine('info', `ice ${pc.iceConnectionState}`);
    };
    return pc;
  }

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

  function detachMid(mid) {
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
  // Server messages (handled strictly in order through session.queue)
  // ---------------------------------------------------------------------------------------
  function onServerMessage(s, data) {
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

  async function handle(s, msg) {
    switch (msg.id) {
      case 'joined':
        return msg.resumed ? onResumed(s, msg) : onJoined(s, msg);
      case 'answer':
        if (!s.pc || s.pc.signalingState !== 'have-local-offer') {
          throw new Error(`unexpected answer in signaling state ${s.pc ? s.pc.signalingState : 'none'}`);
        }
        await s.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        return;
      case 'serverOffer':
        return onServerOffer(s, msg);
      case 'participantJoined': {
        const p = msg.participant;
        conclave.participants[p.participantId] = p;
        const tile = session.tiles.get(p.participantId) || remoteTile(p.participantId);
        if (tile) {
          setTileName(tile, p.name, false);
          setTileMedia(tile, p.audio, p.video);
        }
        renderRoster();
        return;
      }
      case 'participantLeft':
        removeParticipant(s, msg.participantId);
        renderRoster();
        return;
      case 'participantState': {
        const p = conclave.participants[msg.participantId];
        if (p) {
          p.audio = msg.audio;
          p.video = msg.video;
        }
        const tile = s.tiles.get(msg.participantId);
        if (tile) setTileMedia(tile, msg.audio, msg.video);
        renderRoster();
        return;
      }
      case 'mediaState':
        conclave.serverMediaState = msg.state;
        updateMediaPill();
        if (msg.state === 'failed') {
          // The media node lost our peer (it died, or the connection timed out).
          showStatus('Reconnecting media…', 'warn');
          return restartMedia(s);
        }
        if (msg.state === 'connected') clearStatusIfInfo();
        return;
      case 'left':
        if (s.leftResolve) s.leftResolve();
        return;
      case 'error': {
        if (msg.code === 'resume_failed' && s.reconnecting) {
          // Gone from the room (the grace period passed): join again as a new participant.
          logLine('warn', 'resume refused; joining again');
          for (const pid of Array.from(s.tiles.keys())) removeParticipant(s, pid);
          s.gone.clear(); // they may well still be there: the new roster says
          send({ id: 'join', token: s.token, name: s.name, audio: conclave.audio, video: conclave.video });
          return;
        }
        if (msg.code === 'unavailable' && conclave.state === 'joined' && s.pc && s.pc.signalingState === 'have-local-offer') {
          // Our new offer came while the room was moving to another media node: try again.
          s.mediaRetryTimer = setTimeout(() => restartMedia(s), 1000);
          return;
        }
        reportError(`Server error ${msg.code}: ${msg.message}`);
        if ((conclave.state === 'joining' || s.reconnecting) && s.joinedReject) {
          s.joinedReject(new Error(`${msg.code}: ${msg.message}`));
        }
        return;
      }
      default:
        logLine('warn', `ignored unknown message ${msg.id}`);
    }
  }

  async function onJoined(s, msg) {
    conclave.participantId = msg.participantId;
    conclave.room = msg.room;
    conclave.community = msg.community;
    conclave.timings.joined = Math.round(performance.now() - conclave.timings.joinStart);
    conclave.participants = {};
    for (const p of msg.participants || []) conclave.participants[p.participantId] = p;
    if (s.localTile) s.localTile.el.dataset.participantId = msg.participantId;
    for (const p of msg.participants || []) remoteTile(p.participantId);
    ui.roomLabel.textContent = msg.room;
    ui.roomLabel.hidden = false;

    s.resumeToken = msg.resumeToken;
    if (Number(msg.resumeGraceMs) > 0) s.resumeGraceMs = Number(msg.resumeGraceMs);
    startHeartbeat(s, msg.heartbeatIntervalMs);
    dropPeerConnection(s); // a rejoin after a failed resume starts over
    await startMedia(s);

    conclave.state = 'joined';
    updateMediaPill();
    updateControls();
    clearStatusIfInfo();
    if (s.joinedResolve) s.joinedResolve();
    s.joinedResolve = s.joinedReject = null;
  }

  /** Our one offer on a new peer connection (after `joined`, or when the server lost our peer). */
  async function startMedia(s) {
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
  function dropPeerConnection(s) {
    if (s.mediaRetryTimer) clearTimeout(s.mediaRetryTimer);
    s.mediaRetryTimer = null;
    for (const mid of Array.from(s.attached.keys())) detachMid(mid);
    conclave.tracks = {};
    if (s.pc && s.pc.signalingState !== 'closed') s.pc.close();
    s.pc = conclave.pc = null;
  }

  /** The server has no media peer for us any more: offer again on a fresh connection. */
  async function restartMedia(s) {
    if (session !== s || s.closed || conclave.state !== 'joined') return;
    conclave.mediaRestarts += 1;
    logLine('info', 'starting a new media connection');
    dropPeerConnection(s);
    await startMedia(s);
  }

  /** `joined` answering our `resume`: same participant and media; catch up on the roster. */
  function onResumed(s, msg) {
    conclave.resumes += 1;
    s.resumeToken = msg.resumeToken;
    const now = new Set((msg.participants || []).map((p) => p.participantId));
    for (const pid of Object.keys(conclave.participants)) {
      if (pid !== conclave.participantId && !now.has(pid)) removeParticipant(s, pid);
    }
    for (const p of msg.participants || []) {
      conclave.participants[p.participantId] = p;
      const tile = s.tiles.get(p.participantId) || remoteTile(p.participantId);
      if (tile) {
        setTileName(tile, p.name, false);
        setTileMedia(tile, p.audio, p.video);
      }
    }
    renderRoster();
    startHeartbeat(s, msg.heartbeatIntervalMs);
    conclave.state = 'joined';
    setWsState('open');
    clearStatus();
    logLine('info', 'session resumed');
    if (s.joinedResolve) s.joinedResolve();
    s.joinedResolve = s.joinedReject = null;
  }

  function removeParticipant(s, pid) {
    s.gone.add(pid);
    delete conclave.participants[pid];
    for (const [mid, a] of Array.from(s.attached)) if (a.participantId === pid) detachMid(mid);
    removeTile(pid);
  }

  function clearStatusIfInfo() {
    if (ui.status.dataset.kind === 'info') clearStatus();
  }

  async function onServerOffer(s, msg) {
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
  // Public actions
  // ---------------------------------------------------------------------------------------
  async function fetchToken(room, name) {
    const fromUrl = params.get('token');
    if (fromUrl) return fromUrl;
    const q = new URLSearchParams({ room, user: userId(), name, community: 'default' });
    let res;
    try {
      res = await fetch(`/dev/token?${q}`, { cache: 'no-store' });
    } catch (err) {
      throw new Error(`cannot reach the server (${err.message})`);
    }
    if (res.status === 404) throw new Error('this server needs a token (open the link you were given, with ?token=...)');
    if (!res.ok) throw new Error(`token request failed: HTTP ${res.status}`);
    const body = await res.json();
    if (!body || typeof body.token !== 'string') throw new Error('token request returned no token');
    return body.token;
  }

  async function join(room, name, opts) {
    room = String(room || '').trim();
    name = String(name || '').trim();
    if (!room) throw new Error('room is required');
    if (!name) name = 'Guest';
    if (conclave.state === 'joining' || conclave.state === 'joined') throw new Error(`already ${conclave.state}`);
    const wantAudio = opts && 'audio' in opts ? !!opts.audio : ui.startAudio.checked;
    const wantVideo = opts && 'video' in opts ? !!opts.video : ui.startVideo.checked;

    const s = newSession(room, name);
    session = s;
    resetCallState();
    conclave.state = 'joining';
    conclave.timings = { joinStart: performance.now(), joined: null, firstFrame: {} };
    showCallView(room);
    showStatus('Joining…', 'info');

    try {
      const [token, stream] = await Promise.all([fetchToken(room, name), getLocalMedia(wantAudio, wantVideo)]);
      if (session !== s) throw new Error('join cancelled');
      conclave.localStream = stream;
      const a = localTrack('audio');
      const v = localTrack('video');
      if (a) a.enabled = wantAudio;
      if (v) v.enabled = wantVideo;
      conclave.audio = !!a && wantAudio;
      conclave.video = !!v && wantVideo;
      s.localTile = makeTile('', name, true);
      for (const t of stream.getTracks()) s.localTile.stream.addTrack(t);
      s.localTile.video.play().catch(() => {});
      updateControls();

      await openSocket(s, room);
      const joined = new Promise((resolve, reject) => {
        s.joinedResolve = resolve;
        s.joinedReject = reject;
      });
      s.token = token;
      send({ id: 'join', token, name, audio: conclave.audio, video: conclave.video });
      await joined;
    } catch (err) {
      if (session === s && !s.closed) {
        reportError(`Could not join: ${err.message}`);
        teardown(s);
        conclave.state = 'idle';
        showJoinView();
      }
      throw err;
    }
  }

  function openSocket(s, room) {
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
        if (typeof ev.data === 'string') onServerMessage(s, ev.data);
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
        if (s.leftResolve) {
          s.leftResolve();
          return;
        }
        const why = `code ${ev.code}${ev.reason ? ', ' + ev.reason : ''}`;
        if ((conclave.state === 'joining' || s.reconnecting) && s.joinedReject) {
          s.joinedReject(new Error(`server closed the connection (${why})`));
          return;
        }
        // 4001: this participant was resumed on another connection (another tab?): stop here.
        if (conclave.state === 'joined' && ev.code === 4001) connectionLost(s, why);
        else if (conclave.state === 'joined') reconnect(s, why);
      };
    });
  }

  /** The WebSocket dropped: reconnect and `resume` within the grace period, media untouched. */
  async function reconnect(s, why) {
    if (session !== s || s.closed || s.reconnecting) return;
    s.reconnecting = true;
    conclave.state = 'reconnecting';
    conclave.reconnects += 1;
    conclave.lastDisconnect = why;
    showStatus(`Connection lost (${why}); reconnecting…`, 'warn');
    logLine('warn', `connection lost (${why}); reconnecting`);
    if (s.heartbeatTimer) clearInterval(s.heartbeatTimer);
    s.heartbeatTimer = null;
    const old = s.ws;
    s.ws = null;
    if (old && old.readyState === WebSocket.OPEN) old.close(4000, 'reconnecting');
    const deadline = Date.now() + s.resumeGraceMs;
    let delay = 200;
    while (session === s && !s.closed && Date.now() < deadline) {
      try {
        await openSocket(s, s.room);
        const back = new Promise((resolve, reject) => {
          s.joinedResolve = resolve;
          s.joinedReject = reject;
        });
        send({ id: 'resume', token: s.token, resumeToken: s.resumeToken });
        await back;
        s.reconnecting = false;
        return;
      } catch (err) {
        logLine('warn', `reconnect failed: ${err.message}`);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
    }
    s.reconnecting = false;
    connectionLost(s, 'could not reconnect in time');
  }

  function startHeartbeat(s, intervalMs) {
    const interval = Number(intervalMs) > 0 ? Number(intervalMs) : 10000;
    if (s.heartbeatTimer) clearInterval(s.heartbeatTimer);
    s.lastServerMessageAt = Date.now();
    s.heartbeatTimer = setInterval(() => {
      send({ id: 'heartbeat' });
      // The server sends something at least every interval: a long silence means a dead link.
      const silentMs = Date.now() - s.lastServerMessageAt;
      if (silentMs > HEARTBEAT_DEAD_INTERVALS * interval && s.ws) {
        reconnect(s, `the server has been silent for ${Math.round(silentMs / 1000)} s`);
      } else if (silentMs > 1.5 * interval) {
        setPill(ui.wsState, 'stale', 'no reply');
      } else if (conclave.wsState === 'open') {
        setPill(ui.wsState, 'open');
      }
    }, interval);
  }

  function connectionLost(s, why) {
    if (session !== s || s.closed) return;
    reportError(`Lost the connection to the server (${why})`);
    teardown(s);
    conclave.state = 'left';
    showJoinView();
  }

  async function leave() {
    const s = session;
    if (!s || (conclave.state !== 'joined' && conclave.state !== 'joining')) return;
    s.leaving = true;
    const left = new Promise((resolve) => {
      s.leftResolve = resolve;
    });
    const sent = send({ id: 'leave' });
    if (s.pc) s.pc.close();
    stopLocalMedia();
    if (sent) await Promise.race([left, new Promise((r) => setTimeout(r, LEAVE_TIMEOUT_MS))]);
    teardown(s);
    conclave.state = 'left';
    showJoinView();
    showStatus('You left the room.', 'info');
  }

  function setAudio(enabled) {
    enabled = !!enabled;
    const t = localTrack('audio');
    if (!t) return Promise.resolve(false);
    t.enabled = enabled;
    conclave.audio = enabled;
    if (conclave.state === 'joined') send({ id: 'setAudio', enabled });
    updateControls();
    return Promise.resolve(true);
  }

  function setVideo(enabled) {
    enabled = !!enabled;
    const t = localTrack('video');
    if (!t) return Promise.resolve(false);
    t.enabled = enabled;
    conclave.video = enabled;
    if (conclave.state === 'joined') send({ id: 'setVideo', enabled });
    updateControls();
    return Promise.resolve(true);
  }

  /** {participantId: {videoFramesDecoded, audioPacketsReceived, ...}} from inbound-rtp stats. */
  async function statsByParticipant() {
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

  // ---------------------------------------------------------------------------------------
  // Teardown and views
  // ---------------------------------------------------------------------------------------
  function stopLocalMedia() {
    if (conclave.localStream) {
      for (const t of conclave.localStream.getTracks()) t.stop();
    }
    conclave.localStream = null;
  }

  function teardown(s) {
    s.closed = true;
    if (s.joinedReject) s.joinedReject(new Error('left before the join completed'));
    s.joinedResolve = s.joinedReject = null;
    if (s.heartbeatTimer) clearInterval(s.heartbeatTimer);
    s.heartbeatTimer = null;
    if (s.pc && s.pc.signalingState !== 'closed') s.pc.close();
    if (s.ws && (s.ws.readyState === WebSocket.OPEN || s.ws.readyState === WebSocket.CONNECTING)) {
      s.ws.close(1000, 'leave');
    }
    stopLocalMedia();
    for (const pid of Array.from(s.tiles.keys())) removeTile(pid);
    if (s.localTile) {
      s.localTile.video.srcObject = null;
      s.localTile.el.remove();
      s.localTile = null;
    }
    ui.grid.textContent = '';
    updateGridCount();
    s.attached.clear();
    ui.soundButton.hidden = true;
    setWsState('closed');
    conclave.pc = null;
    conclave.ws = null;
    conclave.participants = {};
    conclave.tracks = {};
    conclave.audio = false;
    conclave.video = false;
    conclave.serverMediaState = null;
    setPill(ui.mediaState, 'none');
    renderRoster();
  }

  function resetCallState() {
    conclave.participantId = null;
    conclave.participants = {};
    conclave.tracks = {};
    conclave.pc = null;
    conclave.ws = null;
    conclave.serverMediaState = null;
    ui.grid.textContent = '';
    ui.eventLog.textContent = '';
  }

  function showCallView(room) {
    ui.joinView.hidden = true;
    ui.callView.hidden = false;
    ui.roomLabel.textContent = room;
    ui.roomLabel.hidden = false;
    document.title = `${room} – Conclave`;
  }

  function showJoinView() {
    ui.callView.hidden = true;
    ui.joinView.hidden = false;
    ui.roomLabel.hidden = true;
    ui.joinButton.disabled = false;
    document.title = 'Conclave';
  }

  // ---------------------------------------------------------------------------------------
  // Wiring
  // ---------------------------------------------------------------------------------------
  ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
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
  ui.soundButton.addEventListener('click', enableSound);
  ui.statusClose.addEventListener('click', clearStatus);
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
})();
