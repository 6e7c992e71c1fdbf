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
  history.replaceState(null, '', location.pathname + location.search + '#' + (m[2] || '/racks'));
}

// headers are extra request headers, such as If-Match.
export async function api(method, path, body, headers) {
  const t = token();
  if (!t) {
    signOut('');
    throw new APIError(401, 'unauthorized', 'sign in with an API token');
  }
  const opts = {
    method, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    headers: { ...headers, 'Authorization': 'Bearer ' + t, 'Accept': 'application/json' },
  };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, 'network', 'the region did not answer: ' + e.message);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
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
  return data;
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

// onLeave runs f when the view is left: another screen, the same one
// drawn again, or a sign-out (which changes no address).
export function onLeave(f) { stops.push(f); }

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
