'use strict';
// Embedded topology: one signaling-node process with the media node in-process.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Harness } = require('./lib/harness');
const { threeParticipantCall } = require('./lib/scenarios');

test('embedded: three join, camera off, one leaves, a fourth joins late', { timeout: 240000 }, async (t) => {
  const h = new Harness('call-embedded');
  t.after(() => h.close());
  const { url, signaling } = await h.startEmbedded();
  await h.launchBrowser();
  await threeParticipantCall(t, h, url, 'embedded');
  assert.equal(signaling.exitCode, null, 'signaling-node still running');
});
