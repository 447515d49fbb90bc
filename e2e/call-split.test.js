'use strict';
// Two-process topology: media-node and signaling-node linked over the internal WebSocket.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness } = require('./lib/harness');
const { threeParticipantCall } = require('./lib/scenarios');

test('two processes: three join, camera off, one leaves, a fourth joins late', { timeout: 240000 }, async (t) => {
  const h = new Harness('call-split');
  t.after(() => h.close());
  const { url, signaling, media } = await h.startSplit();
  await h.launchBrowser();
  await threeParticipantCall(t, h, url, 'two-process');
  assert.equal(signaling.exitCode, null, 'signaling-node still running');
  assert.equal(media.exitCode, null, 'media-node still running');
});
