#!/usr/bin/env node
'use strict';
// Measurements for the report (a script, not a test):  node e2e/measure.js [options]
//
//   1. join -> first decoded remote frame: two-process topology (media-node +
//      signaling-node --dev --media-node ws://…/internal/link), N runs (default 5), each with a
//      fresh pair of servers and a fresh Chromium; 3 pages at 320x240 join one room at once.
//      Per page and remote sender: the in-page hook `window.conclave.timings.firstFrame`
//      (performance.now() from the start of conclave.join() to the first
//      requestVideoFrameCallback of the remote tile), and, as a cross-check, the time from the
//      join() call (Node clock) until statsByParticipant() shows videoFramesDecoded > 0
//      (polled every 50 ms, started together with the join, so it includes poll granularity).
//   2. CPU with 4 Chromium participants at 320x240: same topology, 4 pages join, wait until
//      everyone decodes everyone (and keeps decoding), warm up, then sample /proc over a window
//      (default 30 s): media-node utime+stime (% of one core), signaling-node likewise, the
//      Chromium processes' total (every pid whose cmdline contains "chromium"), media-node
//      VmRSS, the machine's overall busy %, and frames decoded per second per remote stream
//      on one page. M runs (default 3), median reported.
//
// Options (or env):
//   --only join|cpu            run one part only
//   --join-runs N              (MEASURE_JOIN_RUNS, default 5)
//   --cpu-runs N               (MEASURE_CPU_RUNS, default 3)
//   --window S                 CPU window in seconds (MEASURE_WINDOW_S, default 30)
//   --warmup S                 seconds between "everyone decodes everyone" and the window
//                              (MEASURE_WARMUP_S, default 5: lets bandwidth estimation settle)
//   --wait-for FILE            before measuring, poll for FILE every 30 s for up to 15 min
//                              (someone else benchmarking); measure anyway after that, and say so
//   --wait-max S               how long --wait-for waits (default 900)
//   --json FILE                write all results as JSON (default e2e/logs/measure-results.json)
// Binaries: CONCLAVE_SIGNALING_BIN / CONCLAVE_MEDIA_BIN; unlike the tests, this script
// defaults to target/release/. Logs: e2e/logs/measure-*.log (see the harness).

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

const REPO = path.resolve(__dirname, '..');
if (!process.env.CONCLAVE_SIGNALING_BIN) process.env.CONCLAVE_SIGNALING_BIN = path.join(REPO, 'target/release/signaling-node');
if (!process.env.CONCLAVE_MEDIA_BIN) process.env.CONCLAVE_MEDIA_BIN = path.join(REPO, 'target/release/media-node');

const { Harness, waitFor, sleep, stats, waitMediaFrom, assertMediaGrowing, SIGNALING_BIN, MEDIA_BIN } = require('./lib/harness');
const { roomName } = require('./lib/scenarios');

// ------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const o = {
    only: null,
    joinRuns: Number(process.env.MEASURE_JOIN_RUNS || 5),
    cpuRuns: Number(process.env.MEASURE_CPU_RUNS || 3),
    windowS: Number(process.env.MEASURE_WINDOW_S || 30),
    warmupS: Number(process.env.MEASURE_WARMUP_S || 5),
    waitFor: null,
    waitMaxS: 900,
    json: path.join(process.env.E2E_LOG_DIR || path.join(__dirname, 'logs'), 'measure-results.json'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--only') o.only = val();
    else if (a === '--join-runs') o.joinRuns = Number(val());
    else if (a === '--cpu-runs') o.cpuRuns = Number(val());
    else if (a === '--window') o.windowS = Number(val());
    else if (a === '--warmup') o.warmupS = Number(val());
    else if (a === '--wait-for') o.waitFor = val();
    else if (a === '--wait-max') o.waitMaxS = Number(val());
    else if (a === '--json') o.json = val();
    else if (a === '-h' || a === '--help') {
      console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(2, 32).join('\n'));
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (o.only && !['join', 'cpu'].includes(o.only)) throw new Error('--only takes join or cpu');
  return o;
}

// ------------------------------------------------------------------------------------------
// Small helpers

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function fmt(x, digits = 1) {
  return x == null ? 'n/a' : Number(x).toFixed(digits);
}

function log(line = '') {
  console.log(line);
}

function sha256(file) {
  try {
    return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex').slice(0, 16);
  } catch (_) {
    return null;
  }
}

// /proc readers ----------------------------------------------------------------------------

const CLK_TCK = 100; // USER_HZ (getconf CLK_TCK) on Linux

/** utime+stime (clock ticks) of one pid, or null if it is gone. Fields 14 and 15 of
 *  /proc/<pid>/stat; parsed after the last ')' because comm may hold spaces. */
function procTicks(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' '); // rest[0] = field 3 (state)
    return Number(rest[11]) + Number(rest[12]); // fields 14 (utime) + 15 (stime)
  } catch (_) {
    return null;
  }
}

function procPpid(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
  } catch (_) {
    return null;
  }
}

function procStatusKiB(pid, key) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) : null;
  } catch (_) {
    return null;
  }
}

function allPids() {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
}

/** Pids whose cmdline contains "chromium" (the brief's definition), excluding this node process. */
function chromiumPids() {
  const out = [];
  for (const pid of allPids()) {
    if (pid === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('chromium')) out.push(pid);
    } catch (_) {}
  }
  return out;
}

function isDescendant(pid, ancestor) {
  for (let p = pid, i = 0; p && p > 1 && i < 64; i++) {
    if (p === ancestor) return true;
    p = procPpid(p);
  }
  return false;
}

/** Whole machine: [busy ticks, total ticks] from the aggregate "cpu" line of /proc/stat. */
function machineTicks() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = v[3] + (v[4] || 0); // idle + iowait
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal (guest is inside user)
  return [total - idle, total];
}

// ------------------------------------------------------------------------------------------
// Waiting for someone else's benchmark to finish

async function waitForFile(file, maxS) {
  const start = Date.now();
  const limitMs = maxS * 1000;
  for (;;) {
    if (fs.existsSync(file)) {
      const waited = Math.round((Date.now() - start) / 1000);
      log(`# ${file} exists (waited ${waited} s)`);
      return { file, appeared: true, waitedS: waited };
    }
    if (Date.now() - start >= limitMs) {
      log(`# WARNING: ${file} did not appear within ${maxS} s; measuring anyway (numbers may be disturbed by the other benchmark)`);
      return { file, appeared: false, waitedS: Math.round((Date.now() - start) / 1000) };
    }
    log(`# waiting for ${file} (${Math.round((Date.now() - start) / 1000)} s so far)`);
    await sleep(30000);
  }
}

// ------------------------------------------------------------------------------------------
// Part 1: join -> first decoded remote frame

/**
 * Starts polling `page`'s stats every 50 ms from `t0` (Node clock, taken just before the
 * join() call) and resolves with { [pid]: ms } once every other participant has decoded a
 * video frame. `expected()` returns the pids to wait for (known only after everyone joined).
 */
async function pollFirstDecoded(page, t0, expected, timeoutMs = 30000) {
  const seen = {};
  await waitFor(
    `${page.label}: videoFramesDecoded > 0 from every other participant`,
    async () => {
      const s = await stats(page);
      const now = Date.now();
      for (const [pid, e] of Object.entries(s)) {
        if (seen[pid] == null && e.videoFramesDecoded > 0) seen[pid] = now - t0;
      }
      const want = expected();
      return want && want.every((p) => seen[p] != null) ? seen : null;
    },
    { timeoutMs, intervalMs: 50 }
  );
  return seen;
}

async function joinRun(run) {
  const h = new Harness(`measure-join-${run}`);
  try {
    const { url, media, signaling } = await h.startSplit();
    await h.launchBrowser();
    const room = roomName('measure-join');
    const names = ['Alice', 'Bob', 'Carol'];
    const pages = [];
    for (const name of names) pages.push(await h.openPage(url, { room, name, width: 320, height: 240 }));

    let allJoined = null; // set once every page has its participant id
    const expectedFor = (page) => () => (allJoined ? pages.filter((p) => p !== page).map((p) => p.participantId) : null);

    // All three join at once; each page's poller starts with its join() call.
    const results = await Promise.all(
      pages.map(async (page) => {
        const t0 = Date.now();
        const poll = pollFirstDecoded(page, t0, expectedFor(page));
        poll.catch(() => {}); // surfaced below
        await h.join(page, room, page.label);
        return { page, t0, poll };
      })
    );
    allJoined = true;
    const idName = {};
    for (const p of pages) idName[p.participantId] = p.label;

    const perPage = [];
    for (const { page, poll } of results) {
      const polled = await poll;
      const timings = await page.evaluate(() => window.conclave.timings);
      const senders = pages.filter((p) => p !== page);
      const row = { page: page.label, joinedMs: timings.joined, senders: {} };
      for (const s of senders) {
        const inPage = timings.firstFrame[s.participantId];
        row.senders[s.label] = { inPageMs: inPage == null ? null : inPage, polledMs: polled[s.participantId] };
      }
      perPage.push(row);
    }
    const videoSize = await stats(pages[0]).then((s) => Object.values(s).map((e) => `${e.videoWidth}x${e.videoHeight}`));
    return { run, mediaPid: media.pid, signalingPid: signaling.pid, perPage, videoSize, idName };
  } finally {
    await h.close();
  }
}

async function measureJoin(opts) {
  log(`\n== 1. join -> first decoded remote frame (two-process, 3 pages @320x240, ${opts.joinRuns} runs)`);
  const runs = [];
  for (let r = 1; r <= opts.joinRuns; r++) {
    let res;
    try {
      res = await joinRun(r);
    } catch (err) {
      log(`run ${r}: FAILED: ${err.message}`);
      runs.push({ run: r, error: err.message });
      continue;
    }
    runs.push(res);
    const parts = [];
    for (const row of res.perPage) {
      const s = Object.entries(row.senders)
        .map(([name, v]) => `${name} ${v.inPageMs}ms (polled ${v.polledMs}ms)`)
        .join(', ');
      parts.push(`  ${row.page} (joined after ${row.joinedMs} ms): ${s}`);
    }
    log(`run ${r} (received video ${res.videoSize.join(', ')}):\n${parts.join('\n')}`);
  }
  const inPage = [];
  const polled = [];
  const pageMax = []; // per page: when the last remote sender became visible
  for (const r of runs) {
    if (!r.perPage) continue;
    for (const row of r.perPage) {
      const v = Object.values(row.senders);
      for (const x of v) {
        if (x.inPageMs != null) inPage.push(x.inPageMs);
        if (x.polledMs != null) polled.push(x.polledMs);
      }
      const m = v.map((x) => x.inPageMs).filter((x) => x != null);
      if (m.length === v.length) pageMax.push(Math.max(...m));
    }
  }
  const summary = {
    inPageMs: { values: inPage, median: median(inPage), min: Math.min(...inPage), max: Math.max(...inPage), n: inPage.length },
    polledMs: { values: polled, median: median(polled), min: Math.min(...polled), max: Math.max(...polled), n: polled.length },
    perPageAllSendersInPageMs: { values: pageMax, median: median(pageMax) },
    failedRuns: runs.filter((r) => r.error).length,
  };
  log(`all in-page values (ms, n=${inPage.length}): ${inPage.join(' ')}`);
  log(`  median ${fmt(summary.inPageMs.median, 0)} ms, min ${summary.inPageMs.min}, max ${summary.inPageMs.max}`);
  log(`all polled values (ms, n=${polled.length}): ${polled.join(' ')}`);
  log(`  median ${fmt(summary.polledMs.median, 0)} ms, min ${summary.polledMs.min}, max ${summary.polledMs.max}`);
  log(`per page, until both remote senders decoded (in-page, ms): ${pageMax.join(' ')}; median ${fmt(summary.perPageAllSendersInPageMs.median, 0)}`);
  return { runs, summary };
}

// ------------------------------------------------------------------------------------------
// Part 2: media-node CPU with 4 Chromium participants

async function cpuRun(run, opts) {
  const h = new Harness(`measure-cpu-${run}`);
  try {
    const { url, media, signaling } = await h.startSplit();
    await h.launchBrowser();
    const browserPid = h.browserServer.process().pid;
    const room = roomName('measure-cpu');
    const names = ['Alice', 'Bob', 'Carol', 'Dave'];
    const pages = [];
    for (const name of names) pages.push(await h.openPage(url, { room, name, width: 320, height: 240 }));
    await Promise.all(pages.map((p) => h.join(p, room, p.label)));
    const others = (page) => pages.filter((p) => p !== page).map((p) => p.participantId);
    const idName = {};
    for (const p of pages) idName[p.participantId] = p.label;

    // Everyone decodes everyone (video and audio), and keeps doing so.
    for (const p of pages) await waitMediaFrom(p, others(p), { timeoutMs: 30000 });
    await Promise.all(pages.map((p) => assertMediaGrowing(p, others(p))));
    h.note(`everyone decodes everyone; warming up ${opts.warmupS} s`);
    if (opts.warmupS > 0) await sleep(opts.warmupS * 1000);

    // Window. Only /proc is read during it, plus one stats() call on one page at each end.
    const probe = pages[0];
    const chromeAtStart = chromiumPids();
    const ticks0 = { media: procTicks(media.pid), signaling: procTicks(signaling.pid), chrome: new Map(chromeAtStart.map((p) => [p, procTicks(p)])) };
    const mach0 = machineTicks();
    const st0 = await stats(probe);
    const w0 = process.hrtime.bigint();
    let rssMax = 0;
    let rssMin = Infinity;
    const perSecondMediaTicks = [];
    let lastTicks = ticks0.media;
    const endAt = Date.now() + opts.windowS * 1000;
    while (Date.now() < endAt) {
      await sleep(Math.min(1000, Math.max(0, endAt - Date.now())));
      const rss = procStatusKiB(media.pid, 'VmRSS');
      if (rss != null) {
        rssMax = Math.max(rssMax, rss);
        rssMin = Math.min(rssMin, rss);
      }
      const t = procTicks(media.pid);
      if (t != null) {
        perSecondMediaTicks.push(t - lastTicks);
        lastTicks = t;
      }
    }
    const st1 = await stats(probe);
    const w1 = process.hrtime.bigint();
    const mach1 = machineTicks();
    const chromeAtEnd = chromiumPids();
    const ticks1 = { media: procTicks(media.pid), signaling: procTicks(signaling.pid), chrome: new Map(chromeAtEnd.map((p) => [p, procTicks(p)])) };
    const wallS = Number(w1 - w0) / 1e9;

    // Chromium: pids present at both ends count their delta; ones that appeared during the
    // window count all their ticks; ones that vanished are lost (reported).
    let chromeTicks = 0;
    const vanished = [];
    const appeared = [];
    for (const [pid, t1] of ticks1.chrome) {
      if (t1 == null) continue;
      if (ticks0.chrome.has(pid) && ticks0.chrome.get(pid) != null) chromeTicks += t1 - ticks0.chrome.get(pid);
      else {
        chromeTicks += t1;
        appeared.push(pid);
      }
    }
    for (const pid of ticks0.chrome.keys()) if (!ticks1.chrome.has(pid)) vanished.push(pid);
    // Not below our browser process: e.g. chrome_crashpad_handler, which re-parents itself
    // to init. Counted anyway (the definition is "cmdline contains chromium"); listed here.
    const notOurs = chromeAtEnd
      .filter((p) => !isDescendant(p, browserPid))
      .map((p) => {
        let cmd = '';
        try {
          cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ').slice(0, 100);
        } catch (_) {}
        return { pid: p, cmd, cpuPct: ticks1.chrome.get(p) != null && ticks0.chrome.get(p) != null ? ((ticks1.chrome.get(p) - ticks0.chrome.get(p)) / CLK_TCK / wallS) * 100 : null };
      });

    const cpu = (dTicks) => (dTicks / CLK_TCK / wallS) * 100;
    const fps = {};
    for (const pid of others(probe)) {
      const a = st0[pid];
      const b = st1[pid];
      fps[idName[pid]] = a && b ? {
        fps: (b.videoFramesDecoded - a.videoFramesDecoded) / wallS,
        videoKbps: ((b.videoBytesReceived - a.videoBytesReceived) * 8) / 1000 / wallS,
        audioPps: (b.audioPacketsReceived - a.audioPacketsReceived) / wallS,
        size: `${b.videoWidth}x${b.videoHeight}`,
      } : null;
    }
    const perSecPct = perSecondMediaTicks.map((t) => t); // ticks per ~1 s = % of one core at 100 Hz
    const res = {
      run,
      windowS: wallS,
      mediaCpuPct: cpu(ticks1.media - ticks0.media),
      mediaCpuPerSecondPct: perSecPct,
      signalingCpuPct: cpu(ticks1.signaling - ticks0.signaling),
      chromiumCpuPct: cpu(chromeTicks),
      chromiumPids: chromeAtEnd.length,
      chromiumPidsNotOurs: notOurs,
      chromiumPidsAppeared: appeared.length,
      chromiumPidsVanished: vanished.length,
      machineBusyPct: ((mach1[0] - mach0[0]) / (mach1[1] - mach0[1])) * 100,
      machineCores: require('node:os').cpus().length,
      mediaRssKiB: procStatusKiB(media.pid, 'VmRSS'),
      mediaRssMinKiB: rssMin === Infinity ? null : rssMin,
      mediaRssMaxKiB: rssMax || null,
      mediaHwmKiB: procStatusKiB(media.pid, 'VmHWM'),
      probePage: probe.label,
      perStream: fps,
    };
    return res;
  } finally {
    await h.close();
  }
}

async function measureCpu(opts) {
  log(`\n== 2. CPU, 4 Chromium participants @320x240, two-process; window ${opts.windowS} s after ${opts.warmupS} s warm-up; ${opts.cpuRuns} runs`);
  const runs = [];
  for (let r = 1; r <= opts.cpuRuns; r++) {
    let res;
    try {
      res = await cpuRun(r, opts);
    } catch (err) {
      log(`run ${r}: FAILED: ${err.message}`);
      runs.push({ run: r, error: err.message });
      continue;
    }
    runs.push(res);
    const streams = Object.entries(res.perStream)
      .map(([n, v]) => (v ? `${n} ${fmt(v.fps)} fps ${v.size} ${fmt(v.videoKbps, 0)} kbit/s, audio ${fmt(v.audioPps, 0)} pkt/s` : `${n} no stats`))
      .join('; ');
    log(
      `run ${r}: window ${fmt(res.windowS, 2)} s | media-node ${fmt(res.mediaCpuPct, 2)}% of one core ` +
        `(per-second ${Math.min(...res.mediaCpuPerSecondPct)}-${Math.max(...res.mediaCpuPerSecondPct)}%), RSS ${fmt(res.mediaRssKiB / 1024)} MiB ` +
        `(window ${fmt(res.mediaRssMinKiB / 1024)}-${fmt(res.mediaRssMaxKiB / 1024)}, HWM ${fmt(res.mediaHwmKiB / 1024)}) | ` +
        `signaling-node ${fmt(res.signalingCpuPct, 2)}% | chromium ${fmt(res.chromiumCpuPct)}% over ${res.chromiumPids} pids` +
        `${res.chromiumPidsNotOurs.length ? ` (${res.chromiumPidsNotOurs.length} not below our browser pid: ${res.chromiumPidsNotOurs.map((x) => `${x.cmd.split(' ')[0].split('/').pop()} ${fmt(x.cpuPct, 2)}%`).join(', ')})` : ''} | machine ${fmt(res.machineBusyPct)}% busy of ${res.machineCores} cores`
    );
    log(`  ${res.probePage} decodes: ${streams}`);
  }
  const ok = runs.filter((r) => !r.error);
  const col = (k) => ok.map((r) => r[k]);
  const allFps = ok.flatMap((r) => Object.values(r.perStream).filter(Boolean).map((v) => v.fps));
  const summary = {
    mediaCpuPct: { values: col('mediaCpuPct'), median: median(col('mediaCpuPct')) },
    signalingCpuPct: { values: col('signalingCpuPct'), median: median(col('signalingCpuPct')) },
    chromiumCpuPct: { values: col('chromiumCpuPct'), median: median(col('chromiumCpuPct')) },
    machineBusyPct: { values: col('machineBusyPct'), median: median(col('machineBusyPct')) },
    mediaRssMiB: { values: col('mediaRssKiB').map((k) => k / 1024), median: median(col('mediaRssKiB').map((k) => k / 1024)) },
    fpsPerStream: { values: allFps, median: median(allFps) },
    failedRuns: runs.length - ok.length,
  };
  const show = (label, s, unit, d = 1) => log(`${label}: ${s.values.map((v) => fmt(v, d)).join(' ')} -> median ${fmt(s.median, d)}${unit}`);
  show('media-node CPU (% of one core)', summary.mediaCpuPct, '%', 2);
  show('media-node VmRSS (MiB, end of window)', summary.mediaRssMiB, ' MiB');
  show('chromium total CPU (% of one core)', summary.chromiumCpuPct, '%');
  show('signaling-node CPU (% of one core)', summary.signalingCpuPct, '%', 2);
  show('machine busy (% of all cores)', summary.machineBusyPct, '%');
  show('decoded fps per remote stream (probe page)', summary.fpsPerStream, ' fps');
  return { runs, summary };
}

// ------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const out = {
    startedAt: new Date().toISOString(),
    options: opts,
    cores: require('node:os').cpus().length,
    loadavgAtStart: null,
  };
  if (opts.waitFor) out.waitedFor = await waitForFile(opts.waitFor, opts.waitMaxS);
  const binInfo = (p) => ({ path: p, sha256_16: sha256(p), mtime: fs.existsSync(p) ? fs.statSync(p).mtime.toISOString() : null });
  out.binaries = { signaling: binInfo(SIGNALING_BIN), media: binInfo(MEDIA_BIN) };
  log(`# signaling ${SIGNALING_BIN} (sha256 ${out.binaries.signaling.sha256_16}…, ${out.binaries.signaling.mtime})`);
  log(`# media     ${MEDIA_BIN} (sha256 ${out.binaries.media.sha256_16}…, ${out.binaries.media.mtime})`);
  out.loadavgAtStart = require('node:os').loadavg();
  log(`# load average at start: ${out.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')} (${out.cores} cores)`);
  if (!opts.only || opts.only === 'join') out.join = await measureJoin(opts);
  if (!opts.only || opts.only === 'cpu') out.cpu = await measureCpu(opts);
  out.finishedAt = new Date().toISOString();
  fs.mkdirSync(path.dirname(opts.json), { recursive: true });
  fs.writeFileSync(opts.json, JSON.stringify(out, null, 2));
  log(`\n# results: ${opts.json}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  }
);
