// Rackplane operator UI: what every screen shares. Plain JavaScript
// modules, no build step, no framework.
//
// Everything shown comes from the region's API with the operator's bearer
// token. Data from racks and operators goes into the DOM as text only
// (text nodes and textContent; nothing is parsed as HTML), and the CSP
// forbids inline script, so a hostile name renders as the characters it is.

export const TOKEN_KEY = 'rackplane.token';
export const STATUSES = ['new', 'commissioning', 'ready', 'deploying', 'deployed', 'releasing', 'erasing', 'failed', 'broken', 'rescue'];
// A machine's actions come from the region (m.actions): the page offers
// what the lifecycle allows now, and the region refuses the rest anyway.
export const can = (m, action) => (m.actions || []).includes(action);
export const KEEP = 300; // newest events or audit entries a page keeps on screen
// Screens follow the event log through live() and reloadOn() below; these
// intervals are for what no event announces.
export const EVENT_POLL_MS = 2000;
export const AUDIT_POLL_MS = 3000;
export const RACK_POLL_MS = 5000;

export const $ = (id) => document.getElementById(id);

// el builds an element; string and number children become text nodes,
// null and false are skipped, arrays are flattened.
export function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

export function append(parent, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    parent.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return parent;
}

export function pad(n) { return String(n).padStart(2, '0'); }

// fmtTime shows a timestamp in UTC, as the logs and the CLI do.
export function fmtTime(s) {
  if (!s) return 'never';
  const d = new Date(s);
  if (isNaN(d)) return String(s);
  return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
    pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + 'Z';
}

export function ago(s) {
  if (!s) return '';
  const sec = Math.round((Date.now() - new Date(s).getTime()) / 1000);
  if (isNaN(sec)) return '';
  if (sec < 0) return 'just now';
  if (sec < 120) return sec + 's ago';
  if (sec < 7200) return Math.round(sec / 60) + 'm ago';
  if (sec < 172800) return Math.round(sec / 3600) + 'h ago';
  return Math.round(sec / 86400) + 'd ago';
}

export function timeCell(s) {
  return el('td', { class: 'mono time', title: ago(s) }, fmtTime(s));
}

export function statusBadge(s) {
  return el('span', { class: 'status ' + String(s).replace(/[^a-z_-]/g, '') }, s);
}

export function short(v, max) {
  if (v === undefined || v === null) return '';
  let s = typeof v === 'string' ? v : JSON.stringify(v);
  max = max || 300;
  return s.length > max ? s.slice(0, max) + '…' : s;
}

// dataCell holds JSON: a block that wraps anywhere, so one long value
// does not stretch the table.
export function dataCell(text) {
  return el('td', {}, el('div', { class: 'data mono' }, text));
}

export function table(headers, rows, emptyText) {
  if (rows.length === 0) return el('p', { class: 'muted' }, emptyText);
  return el('table', {},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}

// fmtBytes is a size in binary units, as the inventory counts them
// (a 960 GiB disk, 256 GiB of memory).
export function fmtBytes(n) {
  if (typeof n !== 'number' || !isFinite(n)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 || n >= 100 || Number.isInteger(n) ? String(Math.round(n * 10) / 10) : n.toFixed(1)) + ' ' + units[i];
}

// gib is memory in GiB, the unit operators order it in.
export function gib(n) {
  const g = n / (1 << 30);
  return (Number.isInteger(g) ? String(g) : g.toFixed(1)) + ' GiB';
}

export function tagChips(tags) {
  return el('span', { class: 'tags' }, (tags || []).map((t) => el('span', { class: 'tag', 'data-tag': t }, t)));
}

// splitTags reads tags as typed: separated by commas or spaces.
export function splitTags(s) { return s.split(/[\s,]+/).filter(Boolean); }

// ---- token and API -------------------------------------------------

export class APIError extends Error {
  constructor(status, code, message, requestID) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestID = requestID;
  }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

// takeFragmentToken moves #token=… into session storage and out of the
// address bar and history, so it is neither bookmarked nor shown.
// #token=…&next=/machines opens that view after signing in.
export function takeFragmentToken() {
  const m = /^#token=([^&]*)(?:&next=(\/[^#]*))?$/.exec(location.hash);
  if (!m) return;
  let t = '';
  try { t = decodeURIComponent(m[1]).trim(); } catch (e) { t = ''; }
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  history.replaceState(null, '', location.pathname + location.search + '#' + (m[2] || '/dashboard'));
}

// request calls the API with the operator's token: opts.body is sent as
// JSON, opts.headers (If-Match) and opts.accept as given, opts.signal
// cancels it (the live follower's long poll, at sign-out). It returns the
// status, the ETag and the body as text and, when it is JSON, parsed; an
// error status is thrown as an APIError with the API's message.
export async function request(method, path, opts) {
  opts = opts || {};
  const t = token();
  if (!t) {
    signOut('');
    throw new APIError(401, 'unauthorized', 'sign in with an API token');
  }
  const init = {
    method, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    headers: { ...opts.headers, 'Authorization': 'Bearer ' + t, 'Accept': opts.accept || 'application/json' },
    signal: opts.signal,
  };
  if (opts.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new APIError(0, 'network', 'the region did not answer: ' + e.message);
  }
  const text = await resp.text();
  let data = null;
  if (text && (resp.headers.get('Content-Type') || '').startsWith('application/json')) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (!resp.ok) {
    const e = data && data.error;
    const err = e
      ? new APIError(resp.status, e.code, e.message, e.request_id)
      : new APIError(resp.status, 'http_' + resp.status, (resp.status + ' ' + resp.statusText + ' ' + text).trim());
    if (resp.status === 401) signOut(err.message);
    throw err;
  }
  return { status: resp.status, etag: resp.headers.get('ETag') || '', data, text };
}

// api is request for JSON in, JSON out: the parsed answer.
export async function api(method, path, body, headers, signal) {
  return (await request(method, path, { body, headers, signal })).data;
}

// errorText is an API error as the API said it.
export function errorText(err) {
  if (!(err instanceof APIError)) return String(err && err.message || err);
  let s = err.message + ' (' + err.code + (err.status ? ', HTTP ' + err.status : '') + ')';
  if (err.requestID) s += ' [request ' + err.requestID + ']';
  return s;
}

export function showError(err) {
  if (err instanceof APIError && err.status === 401) return; // the login form says it
  const p = $('error');
  p.textContent = errorText(err);
  p.hidden = false;
}

export function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

export function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopFollowing();
  stopView();
  $('view').replaceChildren();
  $('view').hidden = true;
  $('nav').hidden = true;
  clearError();
  const m = $('login-message');
  m.textContent = message ? 'The region refused the token: ' + message : '';
  m.hidden = !message;
  $('login').hidden = false;
  $('login-token').value = '';
  $('login-token').focus();
}

// ---- routing --------------------------------------------------------

let stops = [];  // what the current view must stop when left
export let generation = 0;

export function stopView() {
  generation++;
  for (const f of stops) f();
  stops = [];
}

// every runs f now and then every ms until the view changes; a run
// starts only after the previous one ended.
export function every(ms, f) {
  const gen = generation;
  let timer = null;
  let stopped = false;
  stops.push(() => { stopped = true; clearTimeout(timer); });
  const run = async () => {
    try { await f(); } catch (e) { if (gen === generation) showError(e); }
    if (!stopped && gen === generation) timer = setTimeout(run, ms);
  };
  run();
}

// onStop runs f when the view is left: another screen, the same one
// drawn again, or a sign-out (which changes no address).
export function onStop(f) { stops.push(f); }

// current is true while the view that asked is still on screen.
export function current(gen) { return gen === generation; }

export function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [p, q] = h.split('?');
  return { parts: p.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q || '') };
}


// views are the screens by the first part of the address (#/racks,
// #/machines/ID): each module registers its own, so a screen is one file.
export const views = {};
export function registerView(name, f) { views[name] = f; }

// ---- live updates ---------------------------------------------------
//
// One follower per page reads the event log from where it was when the
// page signed in, holding a long poll (GET /api/v1/events?wait=) at its
// end, and hands each event to the current view's subscriptions. Screens
// load once and load again when an event says their data changed, so an
// idle page makes one request a LIVE_WAIT, not one per screen per second.

// TELEMETRY are the events of boot traffic (the region's
// postgres.TelemetryTypes): many, and no change of any machine's or rack's
// state, so lists of machines and racks leave them out.
export const TELEMETRY = [
  'rackplane.rack.boot_handoff.v1', 'rackplane.rack.boot_transfer.v1', 'rackplane.rack.boot_request_rejected.v1',
  'rackplane.rack.boot_requests_summarized.v1', 'rackplane.rack.handoff_file_deleted.v1',
  'rackplane.rack.dhcp_leases_changed.v1', 'rackplane.region.discovery_refused.v1',
];
// LIVE_WAIT is how long one request waits at the end of the log: below
// the API's limit (55s) and the 60s idle timeout of proxies.
export const LIVE_WAIT_S = 50;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;

const subscriptions = new Set();
let follower = null;   // the running follower: {stopped, controller}
let readyWaiters = []; // resolved once the follower has a cursor (or failed to get one)
let isReady = false;

// matches says whether event e is what filter asks for: a function of
// the event, or {type, not, subject, actor}: type and not are type
// prefixes (one or a list) the event must and must not have; subject is
// one or a list of subjects, a value ending in '/' matching every subject
// under it ('machine/'); actor: true takes only events someone caused
// through the API.
export function matches(filter, e) {
  if (e === null) return true; // a resync concerns everyone
  if (typeof filter === 'function') return filter(e);
  const list = (v) => (v === undefined || v === null ? [] : [].concat(v));
  const types = list(filter.type);
  const type = e.type || '';
  if (types.length && !types.some((p) => type.startsWith(p))) return false;
  if (list(filter.not).some((p) => type.startsWith(p))) return false;
  const subjects = list(filter.subject);
  const subject = e.subject || '';
  if (subjects.length && !subjects.some((s) => (s.endsWith('/') ? subject.startsWith(s) : subject === s))) return false;
  if (filter.actor && !e.actor) return false;
  return true;
}

// live calls onEvent(e) with every event matching filter until the view
// changes. onEvent(null) says events may have been missed (the follower
// lost its place and started again from the end of the log): load again.
export function live(filter, onEvent) {
  const sub = { filter, onEvent };
  subscriptions.add(sub);
  stops.push(() => subscriptions.delete(sub));
  startFollowing();
}

// following resolves once the follower knows where the log ends, so a
// screen that loads after it misses no event between its load and the
// follower's start.
export function following() {
  startFollowing();
  if (isReady) return Promise.resolve();
  return new Promise((resolve) => readyWaiters.push(resolve));
}

// reloadOn runs load once the follower is ready, then again when an
// event matching filter arrives: a burst within ms (default 250) is one
// load, and a load never overlaps the one before. It returns a function
// that asks for a load the same way.
export function reloadOn(filter, load, ms) {
  const gen = generation;
  const wait = ms === undefined ? 250 : ms;
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (gen !== generation) return;
    if (running) { again = true; return; }
    running = true;
    try { await load(); } catch (e) { if (gen === generation) showError(e); }
    running = false;
    if (again) { again = false; schedule(); }
  };
  const schedule = () => { if (timer === null && gen === generation) timer = setTimeout(run, wait); };
  stops.push(() => { clearTimeout(timer); timer = null; });
  live(filter, schedule);
  following().then(() => { if (gen === generation && !running) run(); });
  return schedule;
}

function dispatch(e) {
  if (e === null || matches({ type: RACK_EVENTS }, e)) rackCache = null;
  for (const sub of [...subscriptions]) {
    if (!subscriptions.has(sub) || !matches(sub.filter, e)) continue;
    try { sub.onEvent(e); } catch (err) { console.error(err); }
  }
}

function setReady() {
  isReady = true;
  const w = readyWaiters;
  readyWaiters = [];
  for (const f of w) f();
}

function setStatus(state, detail) {
  const s = $('live-status');
  if (!s) return;
  s.hidden = state === '';
  s.className = state === 'live' ? 'live ok' : 'live ' + state;
  s.textContent = state === 'live' ? 'live' : state === 'reconnecting' ? 'reconnecting…' : '';
  s.title = state === 'live' ? 'Following the event log' : detail ? 'The event log: ' + detail : '';
}

// startFollowing starts the page's follower unless it runs.
export function startFollowing() {
  if (follower || !token()) return;
  const f = { stopped: false, controller: null };
  follower = f;
  run(f);
}

// stopFollowing ends the follower (on sign-out): its request is
// cancelled, and the next sign-in starts another from the end of the log.
export function stopFollowing() {
  const f = follower;
  follower = null;
  isReady = false;
  setStatus('');
  if (!f) return;
  f.stopped = true;
  if (f.controller) f.controller.abort();
}

async function get(f, path, timeoutMs) {
  f.controller = new AbortController();
  const c = f.controller;
  // A request the network lost (a laptop asleep, a proxy gone) would
  // otherwise hang for ever: give up a while after the region would
  // have answered.
  const timer = setTimeout(() => c.abort(), timeoutMs);
  try {
    return await api('GET', path, undefined, undefined, c.signal);
  } finally {
    clearTimeout(timer);
  }
}

async function run(f) {
  let cursor = '';
  let failures = 0;
  let first = true;
  while (!f.stopped) {
    try {
      if (!cursor) {
        // The newest event's cursor: what is after it is new.
        const d = await get(f, '/api/v1/events?last=1', 15000);
        if (f.stopped) return;
        cursor = d.next || '';
        if (!first) dispatch(null);
        first = false;
        setReady();
        setStatus('live');
      }
      // After a failure the first read does not wait: its answer says
      // at once that the region is back (a long poll would say so only
      // with the next event).
      const q = { after: cursor, limit: '1000' };
      if (failures === 0) q.wait = LIVE_WAIT_S + 's';
      const d = await get(f, '/api/v1/events?' + new URLSearchParams(q), (LIVE_WAIT_S + 15) * 1000);
      if (f.stopped) return;
      failures = 0;
      setStatus('live');
      if (d.next) cursor = d.next;
      for (const e of d.events || []) dispatch(e);
    } catch (err) {
      if (f.stopped) return;
      if (err instanceof APIError && err.status === 401) return; // signed out
      failures++;
      setStatus('reconnecting', errorText(err));
      // A cursor the region refuses (a 400) is dropped: the follower
      // starts again from the end, and the screens load again.
      if (err instanceof APIError && err.status === 400) cursor = '';
      if (first) {
        // Screens waiting for the follower load anyway and show what
        // the region says; they load again once it follows.
        first = false;
        setReady();
      }
      const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(failures - 1, 5));
      await new Promise((r) => setTimeout(r, ms * (0.75 + Math.random() / 2)));
    }
  }
}

// ---- racks by name and events in tables -------------------------------

// RACK_EVENTS change what a rack list shows: joining, registering (name,
// version, addresses), online and offline, retiring.
export const RACK_EVENTS = ['rackplane.region.rack_', 'rackplane.rack.rack_registered.'];

let rackCache = null; // Promise of Map rack id -> rack, dropped when a rack event arrives

// rackNames resolves to the racks in service by id; retired ones are
// asked for one by one (rackName).
export function rackNames() {
  if (!rackCache) {
    rackCache = api('GET', '/api/v1/racks').then((d) => new Map((d.racks || []).map((r) => [r.id, r])));
    rackCache.catch(() => { rackCache = null; });
  }
  return rackCache;
}

const rackAsked = new Map(); // rack id -> Promise of the name of a rack not in service

// rackName resolves to rack id's name, '' when it cannot be had.
export async function rackName(id) {
  if (!id) return '';
  const racks = await rackNames().catch(() => new Map());
  if (racks.has(id)) return racks.get(id).name;
  if (!rackAsked.has(id)) {
    rackAsked.set(id, api('GET', '/api/v1/racks/' + encodeURIComponent(id))
      .then((r) => r.name + (r.retired_at ? ' (retired)' : ''), () => { rackAsked.delete(id); return ''; }));
  }
  return rackAsked.get(id);
}

// rackLink is a rack by its name, to its page; a rack whose name is not
// known yet shows the start of its id (the whole id in the title).
export function rackLink(id, name) {
  return el('a', { href: '#/racks/' + encodeURIComponent(id), class: 'rack-link', title: id, 'data-rack-id': id },
    name || 'rack ' + String(id).slice(0, 8) + '…');
}

// rackCell is a cell of text that names a rack by its id (an event's
// source rackplane/rack/<id>, an actor rack:<id>): the rack by its name.
function rackCell(text, re, cls) {
  const m = re.exec(text || '');
  if (!m) return el('td', { class: cls }, text || '');
  const td = el('td', { class: cls, title: text }, 'rack ', rackLink(m[1], ''));
  rackName(m[1]).then((name) => { if (name) td.replaceChildren('rack ', rackLink(m[1], name)); });
  return td;
}
const sourceCell = (source) => rackCell(source, /^rackplane\/rack\/([0-9a-f-]{36})$/, 'mono source');
const actorCell = (actor) => rackCell(actor, /^rack:([0-9a-f-]{36})$/, 'actor');

// subjectCell links an event's subject to its machine's or rack's page.
function subjectCell(subject) {
  const m = /^(machine|rack)\/([0-9a-f-]{36})$/.exec(subject || '');
  if (!m) return el('td', { class: 'mono' }, subject || '');
  return el('td', { class: 'mono subject' }, el('a', { href: '#/' + m[1] + 's/' + encodeURIComponent(m[2]) }, subject));
}

// The data fields an event's one-line summary shows, in this order, the
// first few present.
const SUMMARY_KEYS = ['hostname', 'name', 'tags', 'status', 'state', 'previous_state', 'action', 'outcome', 'reason', 'purpose',
  'os', 'release', 'mac', 'file_name', 'route', 'bytes', 'protocol', 'remote', 'driver', 'progress', 'message', 'error',
  'requests', 'transfers', 'sources', 'version', 'label'];

// eventSummary is an event's data in a line: its key fields as
// name value pairs.
export function eventSummary(e) {
  const d = e && e.data && typeof e.data === 'object' && !Array.isArray(e.data) ? e.data : {};
  const parts = [];
  for (const k of SUMMARY_KEYS) {
    let v = d[k];
    if (Array.isArray(v)) v = v.filter((x) => x !== null && typeof x !== 'object').join(', ');
    if (v === undefined || v === null || v === '' || typeof v === 'object') continue;
    parts.push(k + ' ' + short(String(v), 60));
    if (parts.length === 4) break;
  }
  if (parts.length === 0) {
    // Nothing simple to show: name what there is.
    const keys = Object.keys(d);
    return keys.length === 0 ? 'no data' : keys.slice(0, 5).join(', ') + (keys.length > 5 ? ', …' : '');
  }
  return parts.join(' · ');
}

// dataDetails shows JSON as a summary line that opens on the whole of it,
// indented; nothing is cut.
export function dataDetails(summary, value) {
  return el('details', { class: 'data' }, el('summary', {}, summary),
    el('pre', { class: 'mono' }, JSON.stringify(value === undefined ? null : value, null, 2)));
}

// eventCells are an event's cells: time, type, subject, source, actor
// and its data summed up, with the JSON a click away.
export function eventCells(e) {
  return [timeCell(e.time), el('td', { class: 'mono type' }, e.type), subjectCell(e.subject),
    sourceCell(e.source), actorCell(e.actor),
    el('td', { class: 'data-cell' }, dataDetails(eventSummary(e), e.data))];
}
