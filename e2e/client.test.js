'use strict';
// Behaviours of the web client itself: tokens (dev endpoint off, ?token= links, refused
// tokens), autoplay with sound blocked ("click to enable sound"), leave and join again,
// heartbeats. The browser runs with Chromium's usual autoplay policy (user activation needed
// for sound).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Harness, waitFor, waitMediaFrom, assertMediaGrowing, waitEvent, quietEval } = require('./lib/harness');
const { roomName, tileCount, tileState } = require('./lib/scenarios');

const SECRET = crypto.randomBytes(24).toString('hex');

function b64url(v) {
  return Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
}

/** An HS256 JWT as the chat backend would mint it. */
function mintToken(claims, secret = SECRET) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(claims);
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const now = () => Math.floor(Date.now() / 1000);

async function visibleStatus(page) {
  return page.evaluate(() => {
    const el = document.getElementById('status');
    return el.hidden ? null : { kind: el.dataset.kind, code: el.dataset.code || '', text: document.getElementById('status-text').textContent };
  });
}

test('web client', { timeout: 240000 }, async (t) => {
  const h = new Harness('client');
  t.after(() => h.close());
  const prod = await h.startEmbedded({ dev: false, args: ['--token-secret', SECRET, '--heartbeat-interval-secs', '1'], label: 'signaling-prod' });
  const dev = await h.startEmbedded({ args: ['--heartbeat-interval-secs', '1', '--resume-grace-secs', '3'] });
  await h.launchBrowser({ autoplayPolicy: 'document-user-activation-required' });

  await t.test('without dev tokens the form says a token is needed', async () => {
    const p = await h.openPage(prod.url, { room: 'r1', name: 'NoToken' });
    await assert.rejects(p.evaluate(() => window.conclave.join('r1', 'NoToken')), /needs a token/);
    assert.equal(await p.evaluate(() => window.conclave.state), 'idle');
    const st = await visibleStatus(p);
    assert.equal(st.kind, 'error');
    assert.match(st.text, /this server needs a token/);
    assert.equal(await p.isVisible('#join-form'), true);
    assert.equal(await p.evaluate(() => window.conclave.ws), null);
    await p.context().close();
  });

  await t.test('a ?token= link with autojoin joins the room named in the token', async () => {
    const room = roomName('tok');
    const token = mintToken({ sub: 'u-link', room, community: 'acme', name: 'Linda', exp: now() + 600 });
    const p = await h.openPage(prod.url, { room: null, name: null, params: { token, autojoin: '1' } });
    await waitFor('the token link to join', () => p.evaluate(() => window.conclave.state === 'joined'));
    const joined = await p.evaluate(() => window.conclave.events.find((e) => e.id === 'joined'));
    assert.equal(joined.room, room);
    assert.equal(joined.community, 'acme');
    assert.equal(await p.inputValue('#room-input'), room, 'room prefilled from the token');
    const sentJoin = await p.evaluate(() => window.__sent.find((m) => m.id === 'join'));
    assert.equal(sentJoin.token, token);
    assert.equal(sentJoin.name, 'Linda');
    await p.evaluate(() => window.conclave.leave());
    await p.context().close();
  });

  await t.test('refused tokens are shown and the client goes back to the form', async () => {
    const cases = [
      ['garbage', 'not-a-jwt', 'invalid_token', /invitation link is not valid/],
      ['bad signature', mintToken({ sub: 'u', room: 'r', community: 'c', exp: now() + 600 }, 'other-secret'), 'invalid_token', /invitation link is not valid/],
      ['expired', mintToken({ sub: 'u', room: 'r', community: 'c', exp: now() - 3600 }), 'token_expired', /invitation link has expired/],
    ];
    for (const [what, token, code, readable] of cases) {
      const p = await h.openPage(prod.url, { room: 'r', name: 'Eve', params: { token } });
      // The hook's error keeps the stable code (for programs); the user reads a sentence.
      await assert.rejects(p.evaluate(() => window.conclave.join('r', 'Eve')), new RegExp(code), what);
      assert.deepEqual(await p.evaluate(() => window.conclave.errorCodes), [code], what);
      const errors = await p.evaluate(() => window.conclave.errors);
      assert.equal(errors.length, 1, `${what}: one error shown: ${JSON.stringify(errors)}`);
      assert.match(errors[0], readable, what);
      assert.ok(await p.evaluate((code) => window.conclave.events.some((e) => e.id === 'error' && e.code === code), code));
      assert.equal(await p.evaluate(() => window.conclave.state), 'idle');
      assert.equal(await p.isVisible('#join-form'), true);
      const st = await visibleStatus(p);
      assert.match(st.text, readable, what);
      assert.doesNotMatch(st.text, /_/, `${what}: words, not a code: ${st.text}`);
      assert.equal(st.code, code, 'the code stays on the status line for support');
      await p.context().close();
    }
  });

  await t.test('no devices: receive only; autoplay blocked: muted playback and a sound button', async () => {
    // Chromium lets a page that captures camera or microphone autoplay with sound, so the
    // blocked case is a listener without devices.
    const room = roomName('autoplay');
    const a = await h.openPage(dev.url, { room, name: 'Ava' });
    await h.join(a, room, 'Ava');
    // Bo joins through the deep link, and nothing is evaluated in his page (quietEval only)
    // until the click: a Playwright evaluation would count as a user gesture.
    const b = await h.openPage(dev.url, { room, name: 'Bo', noDevices: true, passive: true, params: { autojoin: '1' } });
    const q = (expr) => quietEval(b, expr);
    await waitFor('Bo to join through autojoin', () => q(`!!window.conclave && window.conclave.state === 'joined'`));
    b.participantId = await q('window.conclave.participantId');
    const sel = `.tile[data-participant-id="${a.participantId}"] video`;
    await waitFor('Bo: the sound button to show', () => q(`!document.getElementById('sound-button').hidden`));
    const before = await q(`(() => { const v = document.querySelector('${sel}'); return { muted: v.muted, paused: v.paused }; })()`);
    assert.deepEqual(before, { muted: true, paused: false }, 'remote video plays muted while sound is blocked');
    assert.equal(await q('navigator.userActivation.hasBeenActive'), false, 'no user gesture happened yet');

    await b.click('#sound-button'); // a user gesture
    await waitFor('Bo: the sound button to go', async () => !(await b.isVisible('#sound-button')));
    const after = await b.$eval(sel, (v) => ({ muted: v.muted, paused: v.paused }));
    assert.deepEqual(after, { muted: false, paused: false });

    const joinMsg = await b.evaluate(() => window.__sent.find((m) => m.id === 'join'));
    assert.deepEqual([joinMsg.audio, joinMsg.video], [false, false], 'joined with mic and camera off');
    assert.match((await b.evaluate(() => window.conclave.errors)).join(' '), /Could not use camera or microphone/);
    assert.equal(await b.isDisabled('#mic-button'), true);
    assert.equal(await b.isDisabled('#cam-button'), true);
    await waitFor('Ava: Bo in the roster with mic and camera off', async () => {
      const r = await a.evaluate((id) => window.conclave.participants[id], b.participantId);
      return r && r.audio === false && r.video === false;
    });
    await waitFor('Ava: Bo\'s tile to show mic off and cam off', async () => {
      const s = await tileState(a, b.participantId);
      return s && s.micBadgeVisible && s.camBadgeVisible;
    });
    await waitMediaFrom(b, [a.participantId]);
    await assertMediaGrowing(b, [a.participantId]);

    // Heartbeats both ways (the server runs with --heartbeat-interval-secs 1).
    await waitFor('heartbeats both ways', () =>
      b.evaluate(() => window.conclave.heartbeats >= 2 && window.__sent.filter((m) => m.id === 'heartbeat').length >= 2)
    );

    // Leave, then join again from the same page: a new participant, media flows again.
    const oldId = a.participantId;
    await a.evaluate(() => window.conclave.leave());
    assert.equal(await a.isVisible('#join-form'), true);
    assert.equal(await a.$$eval('#grid .tile', (l) => l.length), 0);
    assert.equal(await a.evaluate(() => window.conclave.localStream), null);
    await waitEvent(b, 'participantLeft', { participantId: oldId });
    await waitFor('Bo: Ava\'s old tile to go', async () => (await tileCount(b, oldId)) === 0);
    await h.join(a, room, 'Ava');
    assert.notEqual(a.participantId, oldId);
    await waitFor('Bo: participantJoined for Ava\'s new session', () =>
      b.evaluate((id) => window.conclave.events.some((e) => e.id === 'participantJoined' && e.participant.participantId === id), a.participantId)
    );
    await waitMediaFrom(b, [a.participantId]);
    await assertMediaGrowing(b, [a.participantId]);
    const newSel = `.tile[data-participant-id="${a.participantId}"] video`;
    await waitFor('Bo: Ava\'s new tile to play with sound', () => b.$eval(newSel, (v) => !v.muted && !v.paused));
    assert.equal(await b.isVisible('#sound-button'), false);
    assert.equal(await a.evaluate(() => window.__sent.filter((m) => m.id === 'offer').length), 2, 'one offer per join');
  });

  await t.test('a silent server is detected; once it answers again the client resumes as the same participant', async () => {
    const room = roomName('silent');
    const token = mintToken({ sub: 'u-silent', room, community: 'acme', name: 'Sid', exp: now() + 600 });
    const p = await h.openPage(prod.url, { room, name: 'Sid', params: { token } });
    await h.join(p, room, 'Sid');
    const pid = prod.signaling.pid; // the no-dev server started above (heartbeat every 1 s)
    process.kill(pid, 'SIGSTOP');
    try {
      await waitFor('Sid to notice the silent server', () => p.evaluate(() => window.conclave.state === 'reconnecting'), { timeoutMs: 15000 });
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitFor('Sid to resume', () => p.evaluate(() => window.conclave.state === 'joined' && window.conclave.resumes === 1), { timeoutMs: 15000 });
    assert.equal(await p.evaluate(() => window.conclave.participantId), p.participantId, 'same participant');
    // Nobody else is in the room, so no roster event follows the resume: the list must show
    // our own entry straight from it (it used to drop "(you)" until the next roster event).
    const roster = await p.$$eval('#participant-list li', (l) => l.map((li) => ({ pid: li.dataset.participantId, text: li.textContent })));
    assert.equal(roster.length, 1, `roster after resume: ${JSON.stringify(roster)}`);
    assert.equal(roster[0].pid, p.participantId);
    assert.match(roster[0].text, /Sid \(you\)/);
    assert.equal(await p.textContent('#participant-count'), '1');
    const sent = await p.evaluate(() => window.__sent.filter((m) => m.id === 'resume' || m.id === 'join').map((m) => m.id));
    assert.equal(sent[0], 'join');
    assert.ok(sent.slice(1).every((id) => id === 'resume'), `only resumes after the join: ${sent}`);
    assert.equal(await p.evaluate(() => window.__sent.filter((m) => m.id === 'offer').length), 1, 'the same peer connection');
    assert.match(await p.evaluate(() => window.conclave.lastDisconnect), /the server has been silent/);
  });

  await t.test('losing the server for good: the client retries, then gives up and returns to the form', async () => {
    const room = roomName('lost');
    const p = await h.openPage(dev.url, { room, name: 'Lou' });
    await h.join(p, room, 'Lou');
    process.kill(dev.signaling.pid, 'SIGKILL'); // the dev server started above
    await waitFor('Lou to try to reconnect', () => p.evaluate(() => window.conclave.state === 'reconnecting'));
    // The server's resume grace is 3 s: after it the client stops trying.
    await waitFor('Lou to give up', () => p.evaluate(() => window.conclave.state === 'left'), { timeoutMs: 15000 });
    assert.match((await p.evaluate(() => window.conclave.errors)).join(' '), /Lost the connection to the server \(could not reconnect/);
    assert.equal(await p.isVisible('#join-form'), true);
    assert.equal(await p.evaluate(() => window.conclave.pc), null);
    assert.equal(await p.getAttribute('#ws-state', 'data-state'), 'closed');
  });
});
