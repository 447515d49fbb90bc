'use strict';
// Graceful drain of a media node: SIGTERM with a live call. The node turns not-ready, new rooms
// go elsewhere even where it would have won, the live call keeps its media until it empties,
// then the process exits 0.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { Harness, waitFor, waitMediaFrom, assertMediaGrowing, httpGet, sleep } = require('./lib/harness');
const { roomName } = require('./lib/scenarios');

const REPO = require('node:path').resolve(__dirname, '..');
const bin = (name) => {
  const fromEnv = name === 'signaling-node' ? process.env.CONCLAVE_SIGNALING_BIN : process.env.CONCLAVE_MEDIA_BIN;
  return fromEnv || `${REPO}/target/debug/${name}`;
};

function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function roomNode(url, room) {
  const body = JSON.parse((await httpGet(`${url}/api/communities/default/rooms`)).body);
  const r = body.rooms.find((x) => x.room === room);
  return r ? r.mediaNode : null;
}

test('SIGTERM on a media node with a live call: drain, no new rooms, exit 0 when empty', { timeout: 180000 }, async (t) => {
  const h = new Harness('drain');
  t.after(() => h.close());
  const redisPort = await freePort();
  await h.startProcess('redis', require('node:child_process').execSync('command -v redis-server', { shell: '/bin/bash' }).toString().trim(), ['--bind', '127.0.0.1', '--port', String(redisPort), '--save', '', '--appendonly', 'no'], /Ready to accept connections/);
  const redisUrl = `redis://127.0.0.1:${redisPort}/`;
  // Capacities 10 and 4: with 2 participants on media-1 (0.2) and 1 on media-2 (0.25),
  // media-1 would win the next room if it were not draining.
  const media = {};
  for (const [id, capacity] of [['media-1', 10], ['media-2', 4]]) {
    const m = await h.startProcess(
      id,
      bin('media-node'),
      ['--listen', '127.0.0.1:0', '--udp-listen', '127.0.0.1:0', '--advertise-ip', '127.0.0.1', '--node-id', id, '--redis-url', redisUrl, '--capacity', String(capacity)],
      /listening\b.*?\binternal=(http:\/\/[^\s"]+)/
    );
    media[id] = { child: m.child, internal: m.match[1] };
  }
  const sig = await h.startProcess(
    'signaling',
    bin('signaling-node'),
    ['--listen', '127.0.0.1:0', '--internal-listen', '127.0.0.1:0', '--dev', '--dev-with-real-services', '--redis-url', redisUrl],
    /listening\b.*?\burl=(http:\/\/[^\s"]+)/
  );
  const url = sig.match[1];
  await waitFor('both media nodes registered', async () => {
    const nodes = JSON.parse((await httpGet(`${url}/api/nodes`)).body).mediaNodes;
    return nodes.filter((n) => n.live).length === 2;
  });
  await h.launchBrowser();

  const live = roomName('live');
  const [ann, ben] = [await h.openPage(url, { room: live, name: 'Ann' }), await h.openPage(url, { room: live, name: 'Ben' })];
  await h.join(ann, live, 'Ann');
  await h.join(ben, live, 'Ben');
  assert.equal(await roomNode(url, live), 'media-1');
  await waitMediaFrom(ann, [ben.participantId]);
  await waitMediaFrom(ben, [ann.participantId]);
  // Placement reads the heartbeats' true counts: wait until media-1's says 2 (a heartbeat
  // sent before the peers existed would say 0 and win the next room on the id tie).
  await waitFor('media-1 reports its 2 participants', async () => {
    const nodes = JSON.parse((await httpGet(`${url}/api/nodes`)).body).mediaNodes;
    return nodes.some((n) => n.id === 'media-1' && n.participants === 2);
  });
  const other = roomName('other');
  const cat = await h.openPage(url, { room: other, name: 'Cat' });
  await h.join(cat, other, 'Cat');
  assert.equal(await roomNode(url, other), 'media-2');

  const drained = media['media-1'];
  assert.equal((await httpGet(`${drained.internal}/readyz`)).status, 200);
  h.note(`SIGTERM media-1 pid=${drained.child.pid}`);
  process.kill(drained.child.pid, 'SIGTERM');
  await waitFor('media-1 not ready', async () => (await httpGet(`${drained.internal}/readyz`)).status === 503, { timeoutMs: 5000 });
  await waitFor('placement sees media-1 draining', async () => {
    const nodes = JSON.parse((await httpGet(`${url}/api/nodes`)).body).mediaNodes;
    const m1 = nodes.find((n) => n.id === 'media-1');
    return m1 && m1.draining;
  }, { timeoutMs: 5000 });

  // A new room goes to media-2 although media-1 is less loaded.
  const fresh = roomName('fresh');
  const dan = await h.openPage(url, { room: fresh, name: 'Dan' });
  await h.join(dan, fresh, 'Dan');
  assert.equal(await roomNode(url, fresh), 'media-2');

  // The live call on media-1 keeps flowing while it drains.
  await sleep(1000);
  await assertMediaGrowing(ann, [ben.participantId]);
  await assertMediaGrowing(ben, [ann.participantId]);
  assert.equal(drained.child.exitCode, null, 'still serving its live room');

  // The call ends: the node exits 0.
  await ann.evaluate(() => window.conclave.leave());
  await ben.evaluate(() => window.conclave.leave());
  const exited = await Promise.race([drained.child.exited, sleep(15000).then(() => null)]);
  assert.ok(exited, 'media-1 exited after its last room emptied');
  assert.equal(exited.code, 0, `exit code ${exited.code} signal ${exited.sig}`);
});
