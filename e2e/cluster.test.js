'use strict';
// The cluster with real browsers: `deploy/local-cluster` (Redis, nginx with sticky rooms, two
// signaling nodes, media nodes), headless Chromium participants, and nodes killed with
// SIGKILL while calls run.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness, waitFor, waitMediaFrom, assertMediaGrowing, waitEvent, stats, httpGet, sleep } = require('./lib/harness');
const { roomName } = require('./lib/scenarios');

/** The room as the query API shows it (dev mode: the API is open). */
async function roomInfo(baseUrl, room) {
  const res = await httpGet(`${baseUrl}/api/communities/default/rooms`);
  const body = JSON.parse(res.body);
  return (body.rooms || []).find((r) => r.room === room) || null;
}

async function nodeParticipants(baseUrl) {
  const res = await httpGet(`${baseUrl}/api/nodes`);
  const out = {};
  for (const n of JSON.parse(res.body).mediaNodes) if (n.live) out[n.id] = n.participants;
  return out;
}

function killPid(pid) {
  process.kill(pid, 'SIGKILL');
}

/**
 * Sample `page`'s decoded frames from each pid every 100 ms for `ms`; returns the longest
 * stretch (ms) in which some pid's framesDecoded did not grow.
 */
async function longestStall(page, pids, ms) {
  const lastGrowth = {};
  const lastCount = {};
  let worst = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = await stats(page);
    const now = Date.now();
    for (const p of pids) {
      const n = s[p] ? s[p].videoFramesDecoded : 0;
      if (lastCount[p] === undefined || n > lastCount[p]) {
        lastCount[p] = n;
        lastGrowth[p] = now;
      }
      worst = Math.max(worst, now - lastGrowth[p]);
    }
    await sleep(100);
  }
  return worst;
}

test('a killed media node: its room moves and every browser is back in media within 10 s', { timeout: 240000 }, async (t) => {
  const h = new Harness('cluster-failover');
  t.after(() => h.close());
  const cluster = await h.startCluster({ signaling: 2, media: 3 });
  await h.launchBrowser();
  const room = roomName('failover');
  const pages = [];
  for (const name of ['Ann', 'Ben', 'Cat']) pages.push(await h.openPage(cluster.url, { room, name }));
  await Promise.all(pages.map((p) => h.join(p, room, p.label)));
  const others = (page) => pages.filter((p) => p !== page).map((p) => p.participantId);
  for (const p of pages) await waitMediaFrom(p, others(p));

  const before = await roomInfo(cluster.url, room);
  const victim = cluster.media.find((m) => m.id === before.mediaNode);
  assert.ok(victim, `room's node ${before.mediaNode} is one of ours`);
  h.note(`killing media node ${victim.id} pid=${victim.pid}`);
  const killedAt = Date.now();
  killPid(victim.pid);

  // Back in media: every page decodes every other participant again, from fresh counters.
  const recovered = await Promise.all(
    pages.map(async (p) => {
      await waitFor(`${p.label} restarted its media`, () => p.evaluate(() => window.conclave.mediaRestarts >= 1), { timeoutMs: 10000 });
      await waitMediaFrom(p, others(p), { timeoutMs: 15000 });
      return Date.now() - killedAt;
    })
  );
  const worst = Math.max(...recovered);
  t.diagnostic(`failover: media back after ${recovered.join(' / ')} ms (worst ${worst} ms)`);
  h.note(`failover times ${JSON.stringify(recovered)}`);
  assert.ok(worst < 10000, `media back within 10 s (took ${worst} ms)`);
  for (const p of pages) await assertMediaGrowing(p, others(p));
  // Media is back, so nothing on screen still says it is reconnecting, and the pill agrees.
  for (const p of pages) {
    const statusGone = () =>
      p.evaluate(() => {
        const el = document.getElementById('status');
        return el.hidden || !/reconnecting media|media connection failed/i.test(el.textContent);
      });
    await waitFor(`${p.label}: the "Reconnecting media" status to go`, statusGone, { timeoutMs: 5000 });
    assert.equal(await p.getAttribute('#media-state', 'data-state'), 'connected', `${p.label}: media pill`);
  }

  // Same participants, no page reload, on another live node.
  const after = await roomInfo(cluster.url, room);
  assert.notEqual(after.mediaNode, victim.id);
  assert.deepEqual(after.participants.map((x) => x.participantId).sort(), pages.map((p) => p.participantId).sort());
  for (const p of pages) {
    assert.equal(await p.evaluate(() => window.conclave.state), 'joined');
    const left = await p.evaluate(() => window.conclave.events.filter((e) => e.id === 'participantLeft').length);
    assert.equal(left, 0, `${p.label} saw nobody leave`);
  }
  // The live nodes' counts are the truth: 3 participants on the new node.
  await waitFor('counts follow the move', async () => {
    const counts = await nodeParticipants(cluster.url);
    return counts[after.mediaNode] === 3 && Object.values(counts).reduce((a, b) => a + b, 0) === 3 ? counts : null;
  }, { timeoutMs: 10000 });
});

test('a killed signaling node: media never stalls, browsers resume through nginx, a lost one is cleaned up', { timeout: 240000 }, async (t) => {
  const h = new Harness('cluster-signaling-kill');
  t.after(() => h.close());
  const grace = 4;
  const cluster = await h.startCluster({ signaling: 2, media: 1, env: { CONCLAVE_RESUME_GRACE: String(grace), CONCLAVE_ORPHAN_GRACE: '8' } });
  await h.launchBrowser();
  const room = roomName('resume');
  const ann = await h.openPage(cluster.url, { room, name: 'Ann' });
  const ben = await h.openPage(cluster.url, { room, name: 'Ben' });
  await h.join(ann, room, 'Ann');
  await h.join(ben, room, 'Ben');
  // nginx sent the room to one signaling node: find it (it has the room open).
  let home = null;
  for (const s of cluster.signaling) {
    const health = JSON.parse((await httpGet(`${s.url}/healthz`)).body);
    if (health.rooms > 0) home = s;
  }
  assert.ok(home, 'one signaling node holds the room');
  // Cat joins the same room on that node directly, not through nginx: when it dies she has
  // nowhere to come back to.
  const cat = await h.openPage(home.url, { room, name: 'Cat' });
  await h.join(cat, room, 'Cat');
  const ids = [ann.participantId, ben.participantId, cat.participantId];
  for (const p of [ann, ben]) await waitMediaFrom(p, ids.filter((id) => id !== p.participantId));
  const eventsBefore = {};
  for (const p of [ann, ben]) eventsBefore[p.label] = await p.evaluate(() => window.conclave.events.length);

  h.note(`killing signaling node ${home.id} pid=${home.pid}`);
  killPid(home.pid);
  const [stallAnn, stallBen] = await Promise.all([
    longestStall(ann, [ben.participantId], 6000),
    longestStall(ben, [ann.participantId], 6000),
  ]);
  t.diagnostic(`signaling kill: longest video stall ${stallAnn} ms (Ann), ${stallBen} ms (Ben)`);
  assert.ok(stallAnn <= 1000 && stallBen <= 1000, `media never stalled > 1 s (${stallAnn}, ${stallBen})`);
  for (const p of [ann, ben]) {
    await waitFor(`${p.label} resumed`, () => p.evaluate(() => window.conclave.resumes >= 1 && window.conclave.state === 'joined'), { timeoutMs: 15000 });
    const after = await p.evaluate((n) => window.conclave.events.slice(n), eventsBefore[p.label]);
    const churn = after.filter((e) => (e.id === 'participantLeft' || e.id === 'participantJoined') && e.participantId !== cat.participantId);
    assert.deepEqual(churn, [], `${p.label}: no leave/join for resumed members`);
    assert.equal(p.participantId, await p.evaluate(() => window.conclave.participantId), 'same participant');
    // Its own entry stays in the participant list through the resume.
    const own = await p.$$eval('#participant-list li', (l, pid) => l.filter((li) => li.dataset.participantId === pid).map((li) => li.textContent), p.participantId);
    assert.equal(own.length, 1, `${p.label}: own roster entry after the resume`);
    assert.match(own[0], /\(you\)/);
  }
  // Cat is removed once the dead node is stale (5 s) and her grace is over.
  for (const p of [ann, ben]) {
    const ev = await waitEvent(p, 'participantLeft', { participantId: cat.participantId }, { timeoutMs: 20000 });
    assert.equal(ev.reason, 'disconnected');
  }
  // Ann and Ben still exchange media, and every count is the truth.
  await assertMediaGrowing(ann, [ben.participantId]);
  await assertMediaGrowing(ben, [ann.participantId]);
  const info = await roomInfo(cluster.url, room);
  assert.deepEqual(info.participants.map((x) => x.participantId).sort(), [ann.participantId, ben.participantId].sort());
  await waitFor('media node count back to 2', async () => (await nodeParticipants(cluster.url))[info.mediaNode] === 2, { timeoutMs: 15000 });
});

test('two signaling nodes, one room: media and events cross; a killed tab and Redis loss are survived', { timeout: 240000 }, async (t) => {
  const h = new Harness('cluster-cross');
  t.after(() => h.close());
  const cluster = await h.startCluster({ signaling: 2, media: 2, env: { CONCLAVE_RESUME_GRACE: '2', CONCLAVE_ORPHAN_GRACE: '4' } });
  await h.launchBrowser();
  const room = roomName('cross');
  const [s1, s2] = cluster.signaling;
  const ann = await h.openPage(s1.url, { room, name: 'Ann' });
  const ben = await h.openPage(s2.url, { room, name: 'Ben' });
  const cat = await h.openPage(s2.url, { room, name: 'Cat' });
  for (const p of [ann, ben, cat]) await h.join(p, room, p.label);
  const all = [ann, ben, cat];
  for (const p of all) await waitMediaFrom(p, all.filter((o) => o !== p).map((o) => o.participantId));
  await ben.evaluate(() => window.conclave.setAudio(false));
  await waitEvent(ann, 'participantState', { participantId: ben.participantId, audio: false });

  // Cat's tab crashes (no pagehide, no `leave`): after her grace period she is gone
  // everywhere, and counts follow.
  h.note('crashing Cat\'s tab');
  const cdp = await cat.context().newCDPSession(cat);
  // The call never returns: the renderer dies under it.
  await Promise.race([cdp.send('Page.crash').catch(() => {}), sleep(1000)]);
  h.pages = h.pages.filter((p) => p !== cat);
  const ev = await waitEvent(ann, 'participantLeft', { participantId: cat.participantId }, { timeoutMs: 15000 });
  assert.equal(ev.reason, 'disconnected');
  const info = await roomInfo(cluster.url, room);
  assert.equal(info.participants.length, 2);
  await waitFor('media node count 2', async () => (await nodeParticipants(cluster.url))[info.mediaNode] === 2, { timeoutMs: 15000 });

  // Redis dies: the call goes on; a new join is refused clearly.
  h.note(`killing redis pid=${cluster.redisPid}`);
  killPid(cluster.redisPid);
  await sleep(500);
  await assertMediaGrowing(ann, [ben.participantId], { audio: false });
  await assertMediaGrowing(ben, [ann.participantId]);
  const dan = await h.openPage(s1.url, { room, name: 'Dan' });
  await assert.rejects(h.join(dan, room, 'Dan'), /unavailable/);
  const stall = await longestStall(ann, [ben.participantId], 3000);
  assert.ok(stall <= 1000, `no stall while Redis is down (${stall} ms)`);
});
