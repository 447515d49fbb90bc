'use strict';
// TURN through a real coturn (issue 13, item 7), in network namespaces this test makes:
//
//   ann (namespace "open")  ──10.201.1.0/24──┐
//                                            ├── "srv": media node UDP 10.201.1.1 (advertised),
//   ben (namespace "walled") ─10.201.2.0/24──┘          coturn 10.201.2.1, signaling HTTP 10.201.2.3
//
// Ben's namespace is a network that lets only HTTPS out: nft drops every packet to the media
// node's address, all UDP and TCP to 3478, so his only way to the media is TURN over TLS on
// coturn's 443, with the credentials the signaling node put in his `joined`. Ann reaches the
// media node directly; Cleo (in Ann's namespace) uses the client's test hook `forceRelay`
// (iceTransportPolicy 'relay') and relays over UDP. Everyone decodes everyone; the selected
// candidate pairs say relay (TLS for Ben) for Ben and Cleo, not for Ann. coturn itself
// accepts the credentials the node minted and refuses forged and expired ones, and refuses
// to relay to an address it is told is internal (`denied-peer-ip`).
//
// coturn's certificate is self-signed here, so Ben's Chromium runs with
// --ignore-certificate-errors: without it Chromium refuses the TURN server's certificate
// (checked by hand), as it should; a deployment needs a certificate for the TURN name.
//
// coturn refuses loopback peers, hence the veth addresses; the page is served over plain
// http from 10.201.2.3, which Chromium treats as a secure context only with
// --unsafely-treat-insecure-origin-as-secure.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { Harness, waitFor, sleep, waitMediaFrom, assertMediaGrowing, SIGNALING_BIN } = require('./lib/harness');
const { roomName, assertNoClientErrors } = require('./lib/scenarios');
const { Network, available } = require('./lib/netns');

const TURNSERVER = process.env.TURNSERVER_BIN || '/usr/bin/turnserver';
const UCLIENT = process.env.TURNUTILS_UCLIENT_BIN || '/usr/bin/turnutils_uclient';
const SECRET = crypto.randomBytes(24).toString('hex');
const REALM = 'conclave.test';
const MEDIA_IP = '10.201.1.1';
const TURN_IP = '10.201.2.1';
const SIGNALING_IP = '10.201.2.3';
const TURN_PORT = 3478;
const TURNS_PORT = 443; // TURN over TLS
// Internal services coturn must not reach: here the signaling node's address.
const DENIED_IP = SIGNALING_IP;

const missing = [TURNSERVER, UCLIENT].filter((f) => !fs.existsSync(f));
const skip = !available() ? 'needs root, iproute2 and nftables' : missing.length ? `needs coturn (${missing.join(', ')})` : false;

/** coturn's REST credentials, computed here independently of the server. */
function credentials(expiry, who, secret = SECRET) {
  const username = `${expiry}:${who}`;
  return { username, credential: crypto.createHmac('sha1', secret).update(username).digest('base64') };
}

/** Run turnutils_uclient in `ns` against coturn: allocate, permit the peer, send one message. */
function uclient(net, ns, { username, credential }, peer = null) {
  const args = [...net.exec(ns).slice(1), UCLIENT, '-u', username, '-w', credential, '-n', '1', '-m', '1', '-c'];
  // -y: two clients relay to each other's relayed addresses; -e/-r: to `peer` (any port).
  if (peer) args.push('-e', peer, '-r', '9');
  else args.push('-y');
  args.push('-p', String(TURN_PORT), TURN_IP);
  return new Promise((resolve) => {
    execFile(net.exec(ns)[0], args, { timeout: 15000 }, (err, stdout, stderr) => {
      resolve({ ok: !err, code: err ? err.code : 0, out: `${stdout}${stderr}` });
    });
  });
}

test('a participant whose network lets only TURN over TLS out connects through coturn', { skip, timeout: 240000 }, async (t) => {
  const h = new Harness('turn');
  const net = new Network('turn');
  t.after(async () => {
    await h.close(); // processes inside the namespaces first
    net.close();
  });
  const srv = net.host('srv');
  const open = net.host('open');
  const walled = net.host('walled');
  net.link(srv, `${MEDIA_IP}/24`, open, '10.201.1.2/24', { bGateway: true });
  const [srvFront] = net.link(srv, `${TURN_IP}/24`, walled, '10.201.2.2/24', { bGateway: true });
  net.addr(srv, srvFront, `${SIGNALING_IP}/24`);
  const rules = net.nft(
    walled,
    `table inet conclave_turn_test {
       chain out {
         type filter hook output priority 0; policy accept;
         ip daddr ${MEDIA_IP} counter drop
         meta l4proto udp drop
         tcp dport ${TURN_PORT} drop
       }
     }`
  );
  h.note(`walled namespace rules:\n${rules}`);

  // coturn: its own config in a temp dir, its own ports, no CLI; logs to stdout.
  const conf = path.join(net.dir, 'turnserver.conf');
  fs.writeFileSync(
    conf,
    [
      `listening-ip=${TURN_IP}`,
      `listening-port=${TURN_PORT}`,
      `relay-ip=${TURN_IP}`,
      'min-port=49160',
      'max-port=49400',
      'use-auth-secret',
      `static-auth-secret=${SECRET}`,
      `realm=${REALM}`,
      'fingerprint',
      'no-cli',
      `tls-listening-port=${TURNS_PORT}`,
      `cert=${path.join(net.dir, 'turn.crt')}`,
      `pkey=${path.join(net.dir, 'turn.key')}`,
      'no-dtls',
      'no-multicast-peers',
      `denied-peer-ip=${DENIED_IP}`,
      `pidfile=${path.join(net.dir, 'turnserver.pid')}`,
      `userdb=${path.join(net.dir, 'turndb')}`,
      'log-file=stdout',
      'simple-log',
      '',
    ].join('\n')
  );
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(net.dir, 'turn.key'), '-out', path.join(net.dir, 'turn.crt'), '-days', '1', '-subj', '/CN=turn.test'], { stdio: 'ignore' });
  await h.startProcess('turnserver', net.exec(srv)[0], [...net.exec(srv).slice(1), TURNSERVER, '-c', conf], /Total General servers/);

  const turnUris = [`turn:${TURN_IP}:${TURN_PORT}?transport=udp`, `turn:${TURN_IP}:${TURN_PORT}?transport=tcp`, `turns:${TURN_IP}:${TURNS_PORT}?transport=tcp`];
  const { match, logPath: signalingLog } = await h.startProcess(
    'signaling',
    net.exec(srv)[0],
    [
      ...net.exec(srv).slice(1),
      SIGNALING_BIN,
      '--dev',
      '--listen', `${SIGNALING_IP}:0`,
      '--internal-listen', '127.0.0.1:0',
      '--udp-listen', `${MEDIA_IP}:0`,
      '--advertise-ip', MEDIA_IP,
      '--media-threads', '1',
      '--turn-uri', turnUris.join(','),
      '--turn-ttl', '600',
    ],
    /listening\b.*?\burl=(http:\/\/[^\s"]+)/,
    30000,
    // The secret through the environment, as deployments give it (never in argv or logs).
    { CONCLAVE_TURN_SECRET: SECRET }
  );
  const url = match[1].replace(/\/$/, '');
  const secureFlag = `--unsafely-treat-insecure-origin-as-secure=${url}`;
  const openBrowser = await h.launchBrowser({ executablePath: net.chromiumIn(open), extraArgs: [secureFlag] });
  const walledBrowser = await h.launchBrowser({ executablePath: net.chromiumIn(walled), extraArgs: [secureFlag, '--ignore-certificate-errors'] });

  const room = roomName('turn');
  const ann = await h.openPage(url, { room, name: 'Ann', browser: openBrowser });
  const cleo = await h.openPage(url, { room, name: 'Cleo', browser: openBrowser });
  const ben = await h.openPage(url, { room, name: 'Ben', browser: walledBrowser });
  await cleo.evaluate(() => {
    window.conclave.forceRelay = true;
  });
  for (const [p, name] of [[ann, 'Ann'], [ben, 'Ben'], [cleo, 'Cleo']]) await h.join(p, room, name);
  const pages = [ann, ben, cleo];
  const pids = pages.map((p) => p.participantId);

  // Everyone decodes everyone: Ben only through coturn.
  for (const p of pages) {
    const others = pids.filter((x) => x !== p.participantId);
    await waitMediaFrom(p, others, { timeoutMs: 45000 });
    await assertMediaGrowing(p, others);
  }

  const pairs = {};
  for (const p of pages) {
    pairs[p.label] = await waitFor(`${p.label}'s selected candidate pair`, () => p.evaluate(() => window.conclave.selectedCandidatePair()), { timeoutMs: 10000 });
    h.note(`${p.label} selected pair: ${JSON.stringify(pairs[p.label])}`);
  }
  t.diagnostic(`selected local candidates: ${pages.map((p) => `${p.label} ${pairs[p.label].local.candidateType}/${pairs[p.label].local.relayProtocol || pairs[p.label].local.protocol}`).join(', ')}`);
  assert.equal(pairs.Ben.local.candidateType, 'relay', 'Ben (media node blocked) goes through coturn');
  assert.equal(pairs.Ben.local.relayProtocol, 'tls', 'Ben (only HTTPS out) reaches coturn over TLS on 443');
  assert.equal(pairs.Cleo.local.relayProtocol, 'udp', 'Cleo relays over UDP');
  assert.equal(pairs.Cleo.local.candidateType, 'relay', 'Cleo (forceRelay) goes through coturn');
  assert.notEqual(pairs.Ann.local.candidateType, 'relay', 'Ann (open network) connects directly');
  for (const who of ['Ben', 'Cleo']) assert.equal(pairs[who].remote.address, MEDIA_IP, `${who}'s remote candidate is the media node`);
  // The path really was blocked: the nft counter of Ben's namespace saw packets to the node.
  const counted = net.nft(walled, '');
  const dropped = Number((counted.match(/counter packets (\d+)/) || [])[1] || 0);
  h.note(`walled namespace dropped ${dropped} packets to ${MEDIA_IP}`);
  assert.ok(dropped > 0, `Ben's browser never tried the direct path (nft counter 0): ${counted}`);

  // The credentials Ben got: coturn's REST scheme, checked against an HMAC computed here.
  const joined = await ben.evaluate(() => window.conclave.events.find((e) => e.id === 'joined'));
  assert.equal(joined.iceServers.length, 1, JSON.stringify(joined.iceServers));
  const ice = joined.iceServers[0];
  assert.deepEqual(ice.urls, turnUris);
  const [expiry, who] = ice.username.split(':');
  assert.equal(who, ben.participantId);
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Number(expiry) > now && Number(expiry) <= now + 600, `expiry ${expiry}, now ${now}`);
  assert.equal(ice.credential, credentials(expiry, who).credential, 'credential = base64(HMAC-SHA1(secret, username))');
  const clientIce = await ben.evaluate(() => window.conclave.iceServers);
  assert.deepEqual(clientIce, joined.iceServers, 'the client uses the servers of its joined');

  // coturn itself (from the open namespace, over UDP): accepts what the node minted, refuses
  // a forged and an expired credential, and refuses to relay to a denied (internal) address
  // even with valid credentials.
  const minted = await uclient(net, open, ice);
  assert.ok(minted.ok, `coturn refused the minted credentials:\n${minted.out.slice(-2000)}`);
  const forged = await uclient(net, open, { username: ice.username, credential: credentials(expiry, who, 'not-the-secret').credential });
  assert.ok(!forged.ok, `coturn accepted a forged credential:\n${forged.out.slice(-2000)}`);
  const expired = await uclient(net, open, credentials(now - 60, who));
  assert.ok(!expired.ok, `coturn accepted an expired credential:\n${expired.out.slice(-2000)}`);
  const internal = await uclient(net, open, credentials(now + 600, who), DENIED_IP);
  assert.ok(!internal.ok && /403|Forbidden/i.test(internal.out), `coturn relayed to the denied ${DENIED_IP}:\n${internal.out.slice(-2000)}`);
  h.note(`uclient: minted ok, forged exit ${forged.code}, expired exit ${expired.code}, denied peer exit ${internal.code}`);

  // A resume brings fresh credentials, and the live peer connection takes them (for a later
  // ICE restart) while its media keeps flowing through coturn.
  await sleep(1100); // a new second: a new expiry
  const resumesBefore = await ben.evaluate(() => window.conclave.resumes);
  await ben.evaluate(() => window.conclave.ws.close(4000, 'test: reconnect'));
  await waitFor('Ben to resume', () => ben.evaluate((n) => window.conclave.resumes > n && window.conclave.state === 'joined', resumesBefore), { timeoutMs: 15000 });
  const resumed = await ben.evaluate(() => window.conclave.events.filter((e) => e.id === 'joined').pop());
  assert.equal(resumed.resumed, true);
  const fresh = resumed.iceServers[0];
  assert.ok(Number(fresh.username.split(':')[0]) > Number(expiry), `fresh credentials on resume: ${ice.username} then ${fresh.username}`);
  assert.equal(fresh.credential, credentials(fresh.username.split(':')[0], who).credential);
  const inUse = await ben.evaluate(() => window.conclave.pc.getConfiguration().iceServers);
  assert.equal(inUse[0].username, fresh.username, 'the peer connection has the resumed credentials');
  await assertMediaGrowing(ben, pids.filter((x) => x !== ben.participantId));
  await assertMediaGrowing(ann, [ben.participantId]);

  // The secret never leaves the node: not in any page, not in its log.
  for (const p of pages) {
    const seen = await p.evaluate(() => JSON.stringify(window.conclave.events));
    assert.ok(!seen.includes(SECRET), `${p.label} received the TURN secret`);
  }
  assert.ok(!fs.readFileSync(signalingLog, 'utf8').includes(SECRET), 'the signaling log shows the TURN secret');
  await assertNoClientErrors(pages);
});

// deploy/local-cluster up --turn: its coturn relays to the media nodes (127.0.0.2) and to
// nothing else on loopback. A page forced to relay connects through it; one on the direct
// path does not use it.
test('deploy/local-cluster --turn: a participant forced to relay connects through the cluster\'s coturn', { skip, timeout: 180000 }, async (t) => {
  const h = new Harness('turn-cluster');
  t.after(() => h.close());
  const cluster = await h.startCluster({ signaling: 1, media: 1, turn: true });
  assert.ok(cluster.turn, `cluster.json names no coturn: ${JSON.stringify(cluster)}`);
  await h.launchBrowser();
  const room = roomName('turn-cluster');
  const direct = await h.openPage(cluster.url, { room, name: 'Dora' });
  const relayed = await h.openPage(cluster.url, { room, name: 'Rolf', params: { relay: '1' } });
  await h.join(direct, room, 'Dora');
  await h.join(relayed, room, 'Rolf');
  await waitMediaFrom(direct, [relayed.participantId]);
  await waitMediaFrom(relayed, [direct.participantId]);
  const pair = await waitFor('Rolf\'s selected pair', () => relayed.evaluate(() => window.conclave.selectedCandidatePair()), { timeoutMs: 10000 });
  const directPair = await waitFor('Dora\'s selected pair', () => direct.evaluate(() => window.conclave.selectedCandidatePair()), { timeoutMs: 10000 });
  h.note(`Rolf ${JSON.stringify(pair)}; Dora ${JSON.stringify(directPair)}`);
  assert.equal(pair.local.candidateType, 'relay');
  assert.equal(pair.remote.address, '127.0.0.2', 'the media node advertises 127.0.0.2 with --turn');
  assert.notEqual(directPair.local.candidateType, 'relay');
  // The cluster's coturn refuses loopback peers other than the media nodes' (Redis, nginx, ...).
  const secret = fs.readFileSync(path.join(cluster.dir, 'turn-secret'), 'utf8').trim();
  const [host, port] = cluster.turn.split(':');
  const creds = credentials(Math.floor(Date.now() / 1000) + 600, 'probe', secret);
  const probe = (peer) =>
    new Promise((resolve) =>
      execFile(UCLIENT, ['-u', creds.username, '-w', creds.credential, '-n', '1', '-m', '1', '-c', '-e', peer, '-r', '9', '-p', port, host], { timeout: 15000 }, (err, stdout, stderr) =>
        resolve(`${stdout}${stderr}`)
      )
    );
  const [toMedia, toRedis] = [await probe('127.0.0.2'), await probe('127.0.0.1')];
  assert.ok(!/403/.test(toMedia), `coturn refused the media nodes' address:\n${toMedia.slice(-1000)}`);
  assert.ok(/403 \(Forbidden IP\)/.test(toRedis), `coturn let a client reach 127.0.0.1:\n${toRedis.slice(-1000)}`);
  await assertNoClientErrors([direct, relayed]);
});
