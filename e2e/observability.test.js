'use strict';
// Metrics, Prometheus and Grafana against a live call: `deploy/local-cluster` (Redis, nginx, 2
// signaling and 2 media nodes) with simulated participants from the load generator
// (`conclave-load`: str0m peers that join through the real protocol and send audio and video).
// While the call runs:
//  (a) every node's /metrics passes `promtool check metrics`, and says what the call is;
//  (b) a real Prometheus server, configured from deploy/prometheus/prometheus.yml (its
//      Kubernetes pod discovery swapped for a file listing these processes the way Kubernetes
//      would describe their pods, so the relabeling under test is the real one), scrapes the
//      nodes every second until `sum(conclave_media_participants)` is the number of
//      participants in the call; its alert rules load and evaluate without error, none fires;
//  (c) promtool checks and unit-tests the alert rules and checks the configuration;
//  (d) the Grafana dashboard parses, every conclave_* metric its queries name exists in the
//      live output, and every query runs on the real Prometheus and returns data.
// Needs redis-server, nginx and prometheus (promtool) from Debian, and `cargo build --bins`.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { Harness, waitFor, httpGet, SIGNALING_BIN } = require('./lib/harness');

const REPO = path.resolve(__dirname, '..');
const PROM_DIR = path.join(REPO, 'deploy', 'prometheus');
const DASHBOARD = path.join(REPO, 'deploy', 'grafana', 'conclave-dashboard.json');
const LOAD_BIN = process.env.CONCLAVE_LOAD_BIN || path.join(path.dirname(SIGNALING_BIN), 'conclave-load');
const PROMETHEUS = process.env.PROMETHEUS_BIN || onPath('prometheus');
const PROMTOOL = process.env.PROMTOOL_BIN || onPath('promtool');

const ROOMS = 2;
const PER_ROOM = 3;
const PARTICIPANTS = ROOMS * PER_ROOM;

/** The absolute path of `name` on PATH, else `name` (spawning it then fails clearly). */
function onPath(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const p = path.join(dir, name);
    if (dir && fs.existsSync(p)) return p;
  }
  return name;
}

/** Run a command to completion (killed after `timeoutMs`); resolves { code, out } (stdout+stderr). */
function run(cmd, args, { input, timeoutMs = 30000, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ code: sig ? `signal ${sig}` : code, out });
    });
    child.stdin.end(input || '');
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Prometheus text format → [{ name, labels, value }] (comments skipped). */
function parseExposition(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels = {};
    for (const l of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function sum(samples, name, where = () => true) {
  return samples.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);
}

/** The conclave_* metric names a PromQL expression uses. */
function metricNames(expr) {
  return [...new Set(expr.match(/\bconclave_[a-z0-9_]+/g) || [])];
}

async function promQuery(base, query) {
  const res = await httpGet(`${base}/api/v1/query?query=${encodeURIComponent(query)}`);
  const body = JSON.parse(res.body);
  if (body.status !== 'success') throw new Error(`${query}: ${body.errorType}: ${body.error}`);
  return body.data.result;
}

/**
 * deploy/prometheus/prometheus.yml for this test: every `kubernetes_sd_configs` block becomes a
 * `file_sd_configs` on `sdFile` (the relabeling stays as written), everything every second.
 */
function localPrometheusConfig(original, sdFile) {
  let n = 0;
  let conf = original.replace(/^( *)kubernetes_sd_configs:\n(?:\1 +\S.*\n)+/gm, (_m, indent) => {
    n++;
    return `${indent}file_sd_configs:\n${indent}  - files: [${JSON.stringify(sdFile)}]\n${indent}    refresh_interval: 1s\n`;
  });
  for (const key of ['scrape_interval', 'scrape_timeout', 'evaluation_interval']) {
    const re = new RegExp(`^(  ${key}:) .*$`, 'm');
    assert.match(conf, re, `prometheus.yml has a global ${key}`);
    conf = conf.replace(re, '$1 1s');
  }
  return { conf, replaced: n };
}

/** The pods Kubernetes would show for the local nodes: one target per container port. */
function podTargets(cluster) {
  const pod = (name, component, ports, metricsPort, extra = {}) => ({
    targets: ports.map((p) => `127.0.0.1:${p}`),
    labels: Object.assign(
      {
        __meta_kubernetes_namespace: 'conclave',
        __meta_kubernetes_pod_name: name,
        __meta_kubernetes_pod_node_name: 'local',
        __meta_kubernetes_pod_phase: 'Running',
        __meta_kubernetes_pod_label_app_kubernetes_io_name: 'conclave',
        __meta_kubernetes_pod_label_app_kubernetes_io_component: component,
        __meta_kubernetes_pod_annotation_prometheus_io_scrape: 'true',
        __meta_kubernetes_pod_annotation_prometheus_io_port: String(metricsPort),
        __meta_kubernetes_pod_annotation_prometheus_io_path: '/metrics',
      },
      extra
    ),
  });
  const port = (url) => Number(new URL(url).port);
  const groups = [];
  for (const s of cluster.signaling) groups.push(pod(s.id, 'signaling', [port(s.url), port(s.internal)], port(s.internal)));
  for (const m of cluster.media) groups.push(pod(m.id, 'media', [port(m.internal), Number(m.udp.split(':')[1])], port(m.internal)));
  // Pods the configuration must not scrape (nothing listens on their ports).
  groups.push(pod('redis-0', 'redis', [1], 1));
  groups.push(pod('media-unscraped', 'media', [2], 2, { __meta_kubernetes_pod_annotation_prometheus_io_scrape: 'false' }));
  groups.push(pod('media-failed', 'media', [3], 3, { __meta_kubernetes_pod_phase: 'Failed' }));
  groups.push(pod('other-app', 'media', [4], 4, { __meta_kubernetes_pod_label_app_kubernetes_io_name: 'other' }));
  groups.push(pod('no-such-component', 'signalling', [5], 5));
  return groups;
}

test('metrics of a live call: promtool-clean, scraped by a real Prometheus, alerts and dashboard match', { timeout: 180000 }, async (t) => {
  const h = new Harness('observability');
  let load = null;
  t.after(async () => {
    if (load && load.exitCode === null && load.signalCode === null) {
      process.kill(load.pid, 'SIGTERM');
      const done = await Promise.race([new Promise((r) => load.once('exit', () => r(true))), new Promise((r) => setTimeout(() => r(false), 5000).unref())]);
      if (!done) process.kill(load.pid, 'SIGKILL');
    }
    await h.close();
  });
  const started = Date.now();
  for (const [bin, pkg] of [[PROMETHEUS, 'prometheus'], [PROMTOOL, 'prometheus']]) {
    const r = await run(bin, ['--version']).catch((e) => ({ code: -1, out: e.message }));
    assert.equal(r.code, 0, `${bin} is needed (apt-get install -y --no-install-recommends ${pkg}): ${r.out}`);
  }
  assert.ok(fs.existsSync(LOAD_BIN), `${LOAD_BIN} missing: cargo build --bins`);

  const cluster = await h.startCluster({ signaling: 2, media: 2 });
  for (const s of cluster.signaling) assert.ok(s.internal, `cluster.json gives ${s.id} an internal (metrics) address: ${JSON.stringify(s)}`);

  // The call: 2 rooms of 3 simulated participants, everyone sending audio and video, through nginx.
  const prefix = `obs${process.pid}x${Date.now() % 100000}`;
  const loadArgs = ['--url', cluster.url, '--rooms', String(ROOMS), '--participants', String(PER_ROOM), '--video-kbps', '150', '--fps', '15', '--warmup', '1', '--duration', '150', '--room-prefix', prefix];
  const loadLog = fs.createWriteStream(h.logPath('load'), { flags: 'w' });
  loadLog.write(`# ${LOAD_BIN} ${loadArgs.join(' ')}\n`);
  load = spawn(LOAD_BIN, loadArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let loadOut = '';
  for (const s of [load.stdout, load.stderr]) {
    s.on('data', (d) => {
      loadOut += d;
      loadLog.write(d);
    });
  }
  load.on('exit', (code, sig) => h.note(`conclave-load pid=${load.pid} exited (code ${code}, signal ${sig})`));
  h.note(`conclave-load pid=${load.pid} ${loadArgs.join(' ')}`);

  // Truth 1: the generator says every participant joined. Truth 2: the cluster's own record
  // (query API, from Redis) lists them in our rooms.
  await waitFor('every simulated participant joined', () => {
    if (load.exitCode !== null) throw new Error(`conclave-load exited early (${load.exitCode}): ${loadOut.slice(-500)}`);
    const m = [...loadOut.matchAll(/joined (\d+)\/(\d+)/g)].pop();
    return m && Number(m[1]) === PARTICIPANTS;
  }, { timeoutMs: 30000, intervalMs: 200 });
  const inRooms = await waitFor(`${PARTICIPANTS} members in the query API`, async () => {
    const body = JSON.parse((await httpGet(`${cluster.url}/api/communities/load/rooms`)).body);
    const ours = (body.rooms || []).filter((r) => r.room.startsWith(`${prefix}-`));
    const n = ours.reduce((a, r) => a + r.participants.length, 0);
    return ours.length === ROOMS && n === PARTICIPANTS ? n : null;
  }, { timeoutMs: 15000 });
  assert.equal(inRooms, PARTICIPANTS);

  const scrape = async (url) => {
    const res = await httpGet(`${url}/metrics`);
    assert.equal(res.status, 200, `${url}/metrics`);
    assert.match(res.headers['content-type'] || '', /^text\/plain/, `${url}/metrics content type`);
    return res.body;
  };
  const nodes = [
    ...cluster.signaling.map((s) => ({ id: s.id, kind: 'signaling', url: s.internal })),
    ...cluster.media.map((m) => ({ id: m.id, kind: 'media', url: m.internal })),
  ];
  // Media flows: the media nodes forward packets, more at each look.
  const forwarded = async () => {
    let n = 0;
    for (const node of nodes.filter((x) => x.kind === 'media')) n += sum(parseExposition(await scrape(node.url)), 'conclave_media_forwarded_packets_total');
    return n;
  };
  const f0 = await waitFor('media forwarded', async () => (await forwarded()) > 0 && (await forwarded()), { timeoutMs: 15000 });
  await waitFor('forwarding goes on', async () => (await forwarded()) > f0, { timeoutMs: 10000 });

  // (a) Every node's /metrics during the call: promtool-clean and telling the truth.
  const exposition = {};
  await waitFor(`every node's gauges show the ${PARTICIPANTS} participants`, async () => {
    for (const node of nodes) exposition[node.id] = await scrape(node.url);
    const all = Object.entries(exposition).map(([id, text]) => ({ id, s: parseExposition(text) }));
    const media = all.filter((x) => x.id.startsWith('media')).reduce((a, x) => a + sum(x.s, 'conclave_media_participants'), 0);
    const sig = all.filter((x) => x.id.startsWith('sig')).reduce((a, x) => a + sum(x.s, 'conclave_signaling_participants'), 0);
    return media === PARTICIPANTS && sig === PARTICIPANTS;
  }, { timeoutMs: 15000 });
  const live = {};
  for (const node of nodes) {
    const text = exposition[node.id];
    const r = await run(PROMTOOL, ['check', 'metrics'], { input: text });
    assert.equal(r.code, 0, `promtool check metrics on ${node.id} (${node.url}/metrics) exit ${r.code}:\n${r.out}`);
    const s = (live[node.id] = parseExposition(text));
    assert.equal(sum(s, 'conclave_build_info', (l) => l.component === node.kind), 1, `${node.id}: conclave_build_info{component="${node.kind}"} 1`);
    assert.equal(sum(s, 'conclave_draining'), 0, `${node.id} is not draining`);
    for (const p of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_open_fds', 'process_start_time_seconds']) {
      assert.ok(s.some((x) => x.name === p), `${node.id} exports ${p}`);
    }
  }
  const media = cluster.media.map((m) => live[m.id]);
  const sig = cluster.signaling.map((x) => live[x.id]);
  const total = (list, name, where) => list.reduce((a, s) => a + sum(s, name, where), 0);
  assert.equal(total(media, 'conclave_media_rooms'), ROOMS, 'media rooms');
  assert.ok(total(media, 'conclave_media_tracks') >= PARTICIPANTS * 2, 'audio and video published by each');
  assert.ok(total(media, 'conclave_media_udp_received_packets_total') > 0 && total(media, 'conclave_media_udp_sent_packets_total') > 0, 'UDP in and out');
  assert.equal(total(media, 'conclave_media_capacity'), 500 * cluster.media.length, 'capacity');
  assert.ok(total(sig, 'conclave_signaling_joins_total', (l) => l.outcome === 'ok') >= PARTICIPANTS, 'ok joins counted');
  assert.ok(total(sig, 'conclave_signaling_join_duration_seconds_count') >= PARTICIPANTS, 'join latency observed');
  assert.ok(total(sig, 'conclave_signaling_placement_duration_seconds_count') >= ROOMS, 'placements observed');
  assert.equal(total(sig, 'conclave_signaling_sessions'), PARTICIPANTS, 'one WebSocket per participant');
  assert.equal(total(sig, 'conclave_signaling_redis_up'), cluster.signaling.length, 'Redis up on every signaling node');
  assert.equal(total(sig, 'conclave_signaling_joins_total', (l) => l.outcome !== 'ok'), 0, 'no failed join');

  // (c) promtool on the alert rules and the configuration.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'conclave-prom-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  let r = await run(PROMTOOL, ['check', 'rules', path.join(PROM_DIR, 'alerts.yml')]);
  assert.equal(r.code, 0, `promtool check rules:\n${r.out}`);
  r = await run(PROMTOOL, ['test', 'rules', 'alerts.test.yml'], { cwd: PROM_DIR });
  assert.equal(r.code, 0, `promtool test rules alerts.test.yml:\n${r.out}`);
  // Debian's promtool is built without Kubernetes discovery: the original then fails on that
  // field alone; the copy with file discovery must pass whole.
  r = await run(PROMTOOL, ['check', 'config', path.join(PROM_DIR, 'prometheus.yml')]);
  if (r.code !== 0) {
    const problems = r.out.split('\n').filter((l) => /^\s+line \d+:/.test(l) && !/field kubernetes_sd_configs not found/.test(l));
    assert.ok(/field kubernetes_sd_configs not found/.test(r.out) && problems.length === 0, `promtool check config prometheus.yml:\n${r.out}`);
    t.diagnostic('this promtool has no Kubernetes discovery: checked the configuration with file discovery instead');
  }
  const sdFile = path.join(tmp, 'pods.json');
  fs.writeFileSync(sdFile, JSON.stringify(podTargets(cluster), null, 1));
  const { conf, replaced } = localPrometheusConfig(fs.readFileSync(path.join(PROM_DIR, 'prometheus.yml'), 'utf8'), sdFile);
  assert.equal(replaced, 2, 'both jobs discover Kubernetes pods');
  fs.writeFileSync(path.join(tmp, 'prometheus.yml'), conf);
  fs.copyFileSync(path.join(PROM_DIR, 'alerts.yml'), path.join(tmp, 'alerts.yml'));
  r = await run(PROMTOOL, ['check', 'config', path.join(tmp, 'prometheus.yml')]);
  assert.equal(r.code, 0, `promtool check config (copy with file discovery):\n${r.out}`);
  const ruleCount = (fs.readFileSync(path.join(PROM_DIR, 'alerts.yml'), 'utf8').match(/^\s*- alert:/gm) || []).length;
  assert.ok(ruleCount >= 10, `alerts.yml has its rules (${ruleCount})`);
  assert.match(r.out, new RegExp(`SUCCESS: ${ruleCount} rules found`), 'the configuration loads every alert rule');

  // (b) A real Prometheus scraping the nodes through that configuration.
  const promPort = await freePort();
  const prom = `http://127.0.0.1:${promPort}`;
  await h.startProcess(
    'prometheus',
    PROMETHEUS,
    [`--config.file=${path.join(tmp, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(tmp, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`],
    /Server is ready to receive web requests/
  );
  const expected = [...cluster.signaling.map((s) => `conclave-signaling/${s.id}`), ...cluster.media.map((m) => `conclave-media/${m.id}`)].sort();
  const targets = await waitFor('Prometheus scrapes exactly the conclave pods, all up', async () => {
    const body = JSON.parse((await httpGet(`${prom}/api/v1/targets`)).body).data;
    const active = body.activeTargets.map((x) => ({ key: `${x.labels.job}/${x.labels.instance}`, health: x.health, labels: x.labels, url: x.scrapeUrl }));
    const keys = active.map((a) => a.key).sort();
    if (JSON.stringify(keys) !== JSON.stringify(expected)) throw new Error(`active targets ${JSON.stringify(active)}`);
    return active.every((a) => a.health === 'up') ? { active, dropped: body.droppedTargets.length } : null;
  }, { timeoutMs: 20000, intervalMs: 250 });
  for (const a of targets.active) {
    assert.equal(a.labels.namespace, 'conclave');
    assert.equal(a.labels.pod, a.labels.instance);
    assert.match(a.url, /\/metrics$/);
  }
  const promSum = await waitFor(`Prometheus: sum(conclave_media_participants) == ${PARTICIPANTS}`, async () => {
    const res = await promQuery(prom, 'sum(conclave_media_participants)');
    return res.length === 1 && Number(res[0].value[1]) === PARTICIPANTS ? Number(res[0].value[1]) : null;
  }, { timeoutMs: 20000, intervalMs: 250 });
  assert.equal(promSum, PARTICIPANTS);
  // Per node, Prometheus agrees with each node's own /metrics.
  const perNode = await promQuery(prom, 'sum by (instance) (conclave_media_participants)');
  for (const m of cluster.media) {
    const direct = sum(parseExposition(await scrape(m.internal)), 'conclave_media_participants');
    const seen = perNode.find((x) => x.metric.instance === m.id);
    assert.ok(seen, `Prometheus has ${m.id}`);
    assert.equal(Number(seen.value[1]), direct, `${m.id}: Prometheus ${seen.value[1]}, /metrics ${direct}`);
  }
  const fwdRate = await waitFor('Prometheus sees packets forwarded', async () => {
    const res = await promQuery(prom, 'sum(rate(conclave_media_forwarded_packets_total[5s]))');
    return res.length === 1 && Number(res[0].value[1]) > 0 ? Number(res[0].value[1]) : null;
  }, { timeoutMs: 15000, intervalMs: 250 });

  // The alert rules are loaded and evaluate cleanly against the real series; none fires.
  const groups = await waitFor('every alert rule evaluated without error', async () => {
    const g = JSON.parse((await httpGet(`${prom}/api/v1/rules`)).body).data.groups;
    const rules = g.flatMap((x) => x.rules);
    const bad = rules.filter((x) => x.health !== 'ok');
    if (bad.some((x) => x.health === 'err')) throw new Error(`rule errors: ${JSON.stringify(bad.map((x) => [x.name, x.lastError]))}`);
    return rules.length === ruleCount && bad.length === 0 ? g : null;
  }, { timeoutMs: 15000, intervalMs: 250 });
  const firing = groups.flatMap((g) => g.rules).filter((x) => x.state === 'firing').map((x) => x.name);
  assert.deepEqual(firing, [], 'no alert fires in a healthy cluster');

  // (d) The dashboard.
  const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8'));
  assert.equal(dash.title, 'Conclave cluster');
  assert.equal(typeof dash.uid, 'string');
  assert.ok(dash.uid.length > 0 && dash.uid.length <= 40, 'uid of at most 40 characters');
  const dsVar = dash.templating.list.find((v) => v.name === 'datasource');
  assert.ok(dsVar && dsVar.type === 'datasource' && dsVar.query === 'prometheus', 'a Prometheus data source variable');
  const panels = dash.panels.flatMap((p) => [p, ...(p.panels || [])]);
  assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, 'panel ids are unique');
  const queries = [];
  for (const p of panels.filter((x) => x.type !== 'row')) {
    assert.equal(p.datasource && p.datasource.uid, '${datasource}', `panel "${p.title}" uses the data source variable`);
    assert.ok(p.gridPos.x + p.gridPos.w <= 24, `panel "${p.title}" fits the grid`);
    assert.ok(p.targets && p.targets.length > 0, `panel "${p.title}" has queries`);
    for (const q of p.targets) {
      assert.equal(q.datasource && q.datasource.uid, '${datasource}', `a query of "${p.title}" uses the data source variable`);
      queries.push({ panel: p.title, expr: q.expr });
    }
  }
  // No two panels overlap.
  const cells = new Map();
  for (const p of dash.panels) {
    for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        const k = `${x},${y}`;
        assert.ok(!cells.has(k), `panels "${cells.get(k)}" and "${p.title}" overlap`);
        cells.set(k, p.title);
      }
    }
  }
  const liveNames = new Set(Object.values(live).flatMap((s) => s.map((x) => x.name)));
  const used = new Set(queries.flatMap((q) => metricNames(q.expr)));
  for (const name of used) {
    const ok = liveNames.has(name) || ['_bucket', '_sum', '_count'].some((suf) => liveNames.has(name + suf));
    assert.ok(ok, `the dashboard's ${name} is not in any node's /metrics`);
  }
  const families = new Set([...liveNames].filter((n) => n.startsWith('conclave_')).map((n) => n.replace(/_(bucket|sum|count)$/, '')));
  const unused = [...families].filter((n) => !used.has(n) && !used.has(`${n}_bucket`));
  if (unused.length) t.diagnostic(`metrics not on the dashboard: ${unused.join(', ')}`);
  // Every query runs on the real Prometheus and returns series ($__rate_interval: 5 s here).
  const empty = await waitFor('every dashboard query returns data', async () => {
    const missing = [];
    for (const q of queries) {
      const res = await promQuery(prom, q.expr.replace(/\$__rate_interval/g, '5s'));
      if (res.length === 0) missing.push(`${q.panel}: ${q.expr}`);
    }
    if (missing.length) throw new Error(`no data: ${missing.join(' | ')}`);
    return [];
  }, { timeoutMs: 15000, intervalMs: 1000 });
  assert.deepEqual(empty, []);

  // The call was live the whole time.
  assert.equal(load.exitCode, null, 'conclave-load still running');
  t.diagnostic(`${PARTICIPANTS} participants in ${ROOMS} rooms; Prometheus: ${promSum} participants, ${fwdRate.toFixed(0)} forwarded packets/s; ${queries.length} dashboard queries, ${used.size} metric names; ${targets.dropped} pods dropped by relabeling; ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
