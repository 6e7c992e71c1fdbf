// Rackplane operator UI: the dashboard, the screen after sign-in. Machines
// by state, racks online, what needs attention and a chart of the boot
// traffic of the last hour, all following the event log.
import {
  STATUSES, TELEMETRY, RACK_EVENTS, ago, api, append, current, el, fmtBytes, fmtTime, generation, onStop,
  rackLink, registerView, reloadOn, short, statusBadge, table, timeCell,
} from './core.js';

registerView('dashboard', dashboardView);

const SVG = 'http://www.w3.org/2000/svg';
// BOOT_TYPES are the events the chart counts (the region's stats read
// the same ones).
const BOOT_TYPES = TELEMETRY.slice(0, 4);
// Messages the region refused are kept aside (GET /api/v1/rejected-events),
// not in the log, so no event announces one: the count is read again
// with every other load and at least this often.
const REJECTED_POLL_MS = 60000;
// Statuses that need an operator.
const ATTENTION = ['failed', 'broken'];

function dashboardView(view) {
  const gen = generation;
  const states = el('div', { id: 'dash-states', class: 'cards' }, el('p', { class: 'muted' }, 'Loading…'));
  const racks = el('div', { id: 'dash-racks' }, el('p', { class: 'muted' }, 'Loading…'));
  const attention = el('div', { id: 'dash-attention' }, el('p', { class: 'muted' }, 'Loading…'));
  const chart = el('div', { id: 'dash-chart' }, el('p', { class: 'muted' }, 'Loading…'));
  append(view, [el('h1', {}, 'Dashboard'),
    el('div', { class: 'dash-grid' },
      el('section', { class: 'panel' }, el('h2', {}, 'Machines'), states),
      el('section', { class: 'panel' }, el('h2', {}, 'Racks'), racks)),
    el('section', { class: 'panel' }, el('h2', {}, 'Needs attention'), attention),
    el('section', { class: 'panel' }, el('h2', {}, 'Boot traffic, last hour'), chart)]);

  let machines = null; // every machine, from the API
  let rackList = null;
  let rejected = null; // {count, more, newest}

  async function loadMachines() {
    let all = [];
    let after = '';
    for (;;) {
      const q = new URLSearchParams({ limit: '1000' });
      if (after) q.set('after', after);
      const d = await api('GET', '/api/v1/machines?' + q);
      if (!current(gen)) return;
      all = all.concat(d.machines || []);
      if (!d.next) break;
      after = d.next;
    }
    machines = all;
    drawStates();
    drawAttention();
  }

  async function loadRacks() {
    const d = await api('GET', '/api/v1/racks');
    if (!current(gen)) return;
    rackList = d.racks || [];
    drawRacks();
    drawAttention();
  }

  async function loadRejected() {
    const d = await api('GET', '/api/v1/rejected-events?limit=1000');
    if (!current(gen)) return;
    const list = d.rejected_events || [];
    let newest = null;
    for (const r of list) if (!newest || r.received_at > newest.received_at) newest = r;
    rejected = { count: list.length, more: list.length === 1000, newest };
    drawAttention();
  }

  function drawStates() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const m of machines) counts[m.status] = (counts[m.status] || 0) + 1;
    const cards = Object.entries(counts).map(([s, n]) => el('a', {
      href: '#/machines?status=' + encodeURIComponent(s), class: 'card' + (n === 0 ? ' empty' : ''),
      id: 'state-' + s, 'data-count': String(n), title: n + ' ' + s,
    }, el('span', { class: 'count' }, String(n)), ' ', statusBadge(s)));
    states.replaceChildren(el('p', { class: 'muted' }, machines.length + (machines.length === 1 ? ' machine' : ' machines') + ' in all. ',
      el('a', { href: '#/machines' }, 'All machines')), el('div', { class: 'cards' }, cards));
  }

  function drawRacks() {
    const online = rackList.filter((r) => r.online);
    const offline = rackList.filter((r) => !r.online);
    racks.replaceChildren(
      el('p', { id: 'dash-racks-online', 'data-online': String(online.length), 'data-total': String(rackList.length) },
        el('span', { class: 'count' }, online.length + '/' + rackList.length), ' online. ', el('a', { href: '#/racks' }, 'All racks')),
      ...(offline.length === 0 ? [] : [el('ul', { id: 'dash-racks-offline' }, offline.map((r) => el('li', {},
        rackLink(r.id, r.name), ' ', statusBadge('offline'), ' ',
        el('span', { class: 'muted small' }, 'last heartbeat ' + (r.last_heartbeat ? ago(r.last_heartbeat) : 'never')))))]),
      // The online ones too, while they are few enough to read.
      ...(online.length === 0 || online.length > 12 ? [] : [el('ul', { id: 'dash-racks-up', class: 'plain' }, online.map((r) => el('li', {},
        rackLink(r.id, r.name), ' ', statusBadge('online'), ' ', el('span', { class: 'muted small mono' }, r.version || ''))))]));
  }

  function drawAttention() {
    if (!machines || !rackList) return;
    const rows = [];
    const row = (kind, what, why, at) => el('tr', { 'data-kind': kind }, el('td', {}, what), el('td', {}, why), timeCell(at));
    for (const m of machines.filter((x) => ATTENTION.includes(x.status))) {
      rows.push(row('machine', [el('a', { href: '#/machines/' + encodeURIComponent(m.id) }, m.hostname), ' ', statusBadge(m.status)],
        m.status_reason || el('span', { class: 'muted' }, 'no reason given'), m.updated_at));
    }
    for (const r of rackList.filter((x) => !x.online)) {
      rows.push(row('rack', [rackLink(r.id, r.name), ' ', statusBadge('offline')], 'no heartbeat', r.last_heartbeat));
    }
    for (const m of machines.filter((x) => x.power_outcome && x.power_outcome !== 'ok')) {
      rows.push(row('power', [el('a', { href: '#/machines/' + encodeURIComponent(m.id) }, m.hostname), ' power ', statusBadge(m.power_outcome)],
        el('span', { class: 'power-error', title: m.power_error || '' }, short(m.power_error || m.power_outcome, 200)), m.power_checked_at));
    }
    if (rejected && rejected.count > 0) {
      const n = rejected.newest;
      rows.push(row('rejected', [el('a', { href: '#/rejected', id: 'dash-rejected', 'data-count': String(rejected.count) },
        (rejected.more ? 'more than ' : '') + rejected.count + (rejected.count === 1 ? ' message' : ' messages') + ' refused')],
      n ? 'newest: ' + n.reason + (n.type ? ' (' + n.type + ')' : '') + (n.detail ? ': ' + short(n.detail, 160) : '') : '',
      n ? n.received_at : null));
    }
    attention.replaceChildren(table(['What', 'Why', 'Since'], rows, 'Nothing needs attention: no failed or broken machine, ' +
      'no offline rack, no failed power action, no refused message.'));
  }

  // The chart: GET /api/v1/stats/boots, again when boot traffic is
  // logged; between those, the window slides by a bucket each step on
  // its own, as a bucket that passes without an event is an empty one.
  let stats = null;
  let slide = null;
  onStop(() => clearTimeout(slide));
  async function loadStats() {
    const d = await api('GET', '/api/v1/stats/boots?window=1h&step=1m');
    if (!current(gen)) return;
    stats = d;
    drawChart();
  }
  function scheduleSlide() {
    clearTimeout(slide);
    if (!stats || !current(gen)) return;
    const ms = new Date(stats.until).getTime() - Date.now();
    slide = setTimeout(() => {
      if (!current(gen) || !stats) return;
      const step = stats.buckets.length > 1
        ? new Date(stats.buckets[1].start).getTime() - new Date(stats.buckets[0].start).getTime() : 60000;
      const until = new Date(stats.until).getTime();
      stats.buckets = stats.buckets.slice(1).concat([{ start: new Date(until).toISOString(), boots: 0, requests: 0, transfers: 0, transfer_errors: 0, bytes: 0 }]);
      stats.since = stats.buckets[0].start;
      stats.until = new Date(until + step).toISOString();
      drawChart();
    }, Math.max(1000, ms + 500));
  }
  function drawChart() {
    chart.replaceChildren(bootChart(stats));
    scheduleSlide();
  }

  reloadOn({ subject: 'machine/', not: [...TELEMETRY, 'rackplane.rack.agent_step_reported.'] }, loadMachinesAndRejected, 500);
  reloadOn({ type: RACK_EVENTS }, loadRacks);
  reloadOn({ type: BOOT_TYPES }, loadStats, 1000);
  const slow = setInterval(() => loadRejected().catch(() => {}), REJECTED_POLL_MS);
  onStop(() => clearInterval(slow));

  async function loadMachinesAndRejected() {
    await Promise.all([loadMachines(), loadRejected()]);
  }
}

// ---- the chart ----------------------------------------------------------

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}

// niceStep is a round step for TICKS steps up to v: 1, 2 or 5 times a
// power of ten, at least min.
const TICKS = 4;
function niceStep(v, min) {
  const raw = Math.max(v / TICKS, min);
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw - 1e-12) return m * p;
  return 10 * p;
}

// rateUnit is the unit a throughput of at most max bytes a second reads
// best in.
function rateUnit(max) {
  if (max >= 1e6) return { name: 'MB/s', div: 1e6 };
  if (max >= 1e3) return { name: 'kB/s', div: 1e3 };
  return { name: 'B/s', div: 1 };
}

function hhmm(t) {
  const d = new Date(t);
  return String(d.getUTCHours()).padStart(2, '0') + ':' + String(d.getUTCMinutes()).padStart(2, '0');
}

function fmtRate(v) {
  if (v === 0) return '0';
  if (v >= 100 || Number.isInteger(v)) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return String(Number(v.toPrecision(2)));
}

// bootChart draws boots per bucket as bars (left axis) and the transfer
// throughput as a line (right axis, in B/s, kB/s or MB/s as it fits), with the last bucket's
// values as text. Everything is built as SVG elements, and the figures
// are on the element too (data-*) for whoever reads the page by script.
function bootChart(d) {
  const b = d.buckets || [];
  const stepS = b.length > 1 ? (new Date(b[1].start) - new Date(b[0].start)) / 1000 : 60;
  const boots = b.map((x) => x.boots);
  const rates = b.map((x) => x.bytes / stepS);
  const unit = rateUnit(Math.max(0, ...rates));
  const mbs = rates.map((v) => v / unit.div);
  const totals = b.reduce((t, x) => ({ boots: t.boots + x.boots, bytes: t.bytes + x.bytes, transfers: t.transfers + x.transfers,
    requests: t.requests + x.requests }), { boots: 0, bytes: 0, transfers: 0, requests: 0 });
  const W = 760, H = 260, L = 48, R = 58, T = 28, B = 34;
  const pw = W - L - R, ph = H - T - B;
  const yStep = niceStep(Math.max(0, ...boots), 1);
  const rStep = niceStep(Math.max(0, ...mbs), 0.25);
  const yMax = yStep * TICKS;
  const rMax = rStep * TICKS;
  const n = Math.max(1, b.length);
  const bw = pw / n;
  const last = b[b.length - 1] || { boots: 0, bytes: 0, start: d.until };
  const lastMBs = mbs.length ? mbs[mbs.length - 1] : 0;
  const plural = (n, one, many) => n + ' ' + (n === 1 ? one : many);
  const label = 'Boot traffic from ' + fmtTime(d.since) + ' to ' + fmtTime(d.until) + ', per ' + (stepS === 60 ? 'minute' : stepS + ' s') +
    ': ' + plural(totals.boots, 'boot', 'boots') + ', ' + plural(totals.transfers, 'transfer', 'transfers') + ', ' +
    fmtBytes(totals.bytes) + ' sent';

  const grid = [];
  for (let i = 0; i <= TICKS; i++) {
    const y = T + ph - (ph * i) / TICKS;
    grid.push(svg('line', { x1: L, x2: L + pw, y1: y, y2: y, class: 'grid' }),
      svg('text', { x: L - 6, y: y + 4, class: 'axis left' }, String(yStep * i)),
      svg('text', { x: L + pw + 6, y: y + 4, class: 'axis right' }, fmtRate(rStep * i)));
  }
  const xLabels = [];
  b.forEach((x, i) => {
    const t = new Date(x.start);
    if (t.getUTCMinutes() % 10 === 0 && t.getUTCSeconds() === 0) {
      const xx = L + i * bw;
      xLabels.push(svg('line', { x1: xx, x2: xx, y1: T + ph, y2: T + ph + 4, class: 'tick' }),
        svg('text', { x: xx, y: T + ph + 18, class: 'axis bottom' }, hhmm(x.start)));
    }
  });
  const bars = b.map((x, i) => x.boots === 0 ? null : svg('rect', {
    x: L + i * bw + bw * 0.15, width: Math.max(1, bw * 0.7), y: T + ph - (ph * x.boots) / yMax, height: (ph * x.boots) / yMax,
    class: 'bar', 'data-start': x.start, 'data-boots': x.boots,
  }, svg('title', {}, hhmm(x.start) + ': ' + x.boots + ' boots, ' + x.requests + ' requests')));
  const points = mbs.map((v, i) => (L + i * bw + bw / 2).toFixed(1) + ',' + (T + ph - (ph * v) / rMax).toFixed(1)).join(' ');
  const s = svg('svg', {
    id: 'boot-chart', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': label, class: 'chart',
    'data-total-boots': totals.boots, 'data-total-bytes': totals.bytes, 'data-total-transfers': totals.transfers,
    'data-total-requests': totals.requests, 'data-buckets': b.length,
  },
  svg('title', {}, label),
  grid, xLabels, bars,
  svg('polyline', { points, class: 'line' }),
  svg('line', { x1: L, x2: L, y1: T, y2: T + ph, class: 'axis-line' }),
  svg('line', { x1: L, x2: L + pw, y1: T + ph, y2: T + ph, class: 'axis-line' }),
  svg('text', { x: L - 6, y: T - 12, class: 'axis left legend-bar' }, 'boots'),
  svg('text', { x: L + pw + 6, y: T - 12, class: 'axis right legend-line' }, unit.name),
  svg('text', { x: L + pw / 2, y: H - 2, class: 'axis bottom' }, 'UTC'),
  svg('text', { x: L + pw - 4, y: T - 12, class: 'last', id: 'boot-chart-last' },
    // The last bucket is the current one, begun at the turn of the
    // minute: named by its start, as "last minute" it would read 0 boots
    // a second after a boot whenever a minute turned between the two.
    'since ' + fmtTime(last.start) + ': ' + last.boots + (last.boots === 1 ? ' boot, ' : ' boots, ') + fmtRate(lastMBs) + ' ' + unit.name));
  return el('figure', { class: 'chart' }, s,
    el('figcaption', { class: 'muted small' }, label + '. Bars: machines that got their boot config; line: bytes sent by boot transfers.'));
}
