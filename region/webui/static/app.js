// Rackplane operator UI. Plain JavaScript, no build step, no framework.
//
// Everything shown comes from the region's API with the operator's bearer
// token. Data from racks and operators goes into the DOM as text only
// (text nodes and textContent; nothing is parsed as HTML), and the CSP
// forbids inline script, so a hostile name renders as the characters it is.
'use strict';

(function () {
  const TOKEN_KEY = 'rackplane.token';
  const STATUSES = ['new', 'commissioning', 'ready', 'deploying', 'deployed', 'releasing', 'failed', 'broken', 'rescue'];
  // A machine's actions come from the region (m.actions): the page offers
  // what the lifecycle allows now, and the region refuses the rest anyway.
  const can = (m, action) => (m.actions || []).includes(action);
  const KEEP = 300; // newest events or audit entries a page keeps on screen
  const EVENT_POLL_MS = 2000;
  const AUDIT_POLL_MS = 3000;
  const RACK_POLL_MS = 5000;

  const $ = (id) => document.getElementById(id);

  // el builds an element; string and number children become text nodes,
  // null and false are skipped, arrays are flattened.
  function el(tag, props, ...children) {
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

  function append(parent, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      parent.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return parent;
  }

  function pad(n) { return String(n).padStart(2, '0'); }

  // fmtTime shows a timestamp in UTC, as the logs and the CLI do.
  function fmtTime(s) {
    if (!s) return 'never';
    const d = new Date(s);
    if (isNaN(d)) return String(s);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
      pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + 'Z';
  }

  function ago(s) {
    if (!s) return '';
    const sec = Math.round((Date.now() - new Date(s).getTime()) / 1000);
    if (isNaN(sec)) return '';
    if (sec < 0) return 'just now';
    if (sec < 120) return sec + 's ago';
    if (sec < 7200) return Math.round(sec / 60) + 'm ago';
    if (sec < 172800) return Math.round(sec / 3600) + 'h ago';
    return Math.round(sec / 86400) + 'd ago';
  }

  function timeCell(s) {
    return el('td', { class: 'mono time', title: ago(s) }, fmtTime(s));
  }

  function statusBadge(s) {
    return el('span', { class: 'status ' + String(s).replace(/[^a-z_-]/g, '') }, s);
  }

  function short(v, max) {
    if (v === undefined || v === null) return '';
    let s = typeof v === 'string' ? v : JSON.stringify(v);
    max = max || 300;
    return s.length > max ? s.slice(0, max) + '…' : s;
  }

  // dataCell holds JSON: a block that wraps anywhere, so one long value
  // does not stretch the table.
  function dataCell(text) {
    return el('td', {}, el('div', { class: 'data mono' }, text));
  }

  function table(headers, rows, emptyText) {
    if (rows.length === 0) return el('p', { class: 'muted' }, emptyText);
    return el('table', {},
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows));
  }

  // ---- token and API -------------------------------------------------

  class APIError extends Error {
    constructor(status, code, message, requestID) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestID = requestID;
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  // takeFragmentToken moves #token=… into session storage and out of the
  // address bar and history, so it is neither bookmarked nor shown.
  // #token=…&next=/machines opens that view after signing in.
  function takeFragmentToken() {
    const m = /^#token=([^&]*)(?:&next=(\/[^#]*))?$/.exec(location.hash);
    if (!m) return;
    let t = '';
    try { t = decodeURIComponent(m[1]).trim(); } catch (e) { t = ''; }
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, '', location.pathname + location.search + '#' + (m[2] || '/racks'));
  }

  async function api(method, path, body) {
    const t = token();
    if (!t) {
      signOut('');
      throw new APIError(401, 'unauthorized', 'sign in with an API token');
    }
    const opts = {
      method, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      headers: { 'Authorization': 'Bearer ' + t, 'Accept': 'application/json' },
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
  function errorText(err) {
    if (!(err instanceof APIError)) return String(err && err.message || err);
    let s = err.message + ' (' + err.code + (err.status ? ', HTTP ' + err.status : '') + ')';
    if (err.requestID) s += ' [request ' + err.requestID + ']';
    return s;
  }

  function showError(err) {
    if (err instanceof APIError && err.status === 401) return; // the login form says it
    const p = $('error');
    p.textContent = errorText(err);
    p.hidden = false;
  }

  function clearError() {
    $('error').hidden = true;
    $('error').textContent = '';
  }

  function signOut(message) {
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
  let generation = 0;

  function stopView() {
    generation++;
    for (const f of stops) f();
    stops = [];
  }

  // every runs f now and then every ms until the view changes; a run
  // starts only after the previous one ended.
  function every(ms, f) {
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

  // current is true while the view that asked is still on screen.
  function current(gen) { return gen === generation; }

  function parseHash() {
    const h = location.hash.replace(/^#\/?/, '');
    const [p, q] = h.split('?');
    return { parts: p.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q || '') };
  }

  function route() {
    if (!token()) { signOut(''); return; }
    stopView();
    clearError();
    $('login').hidden = true;
    $('nav').hidden = false;
    const view = $('view');
    view.replaceChildren();
    view.hidden = false;
    const { parts, query } = parseHash();
    const name = parts[0] || 'racks';
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === name);
    const views = { racks: racksView, machines: machinesView, os: osView, events: eventsView, audit: auditView };
    if (name === 'machines' && parts[1]) { machineView(view, parts[1]); return; }
    (views[name] || racksView)(view, query);
  }

  // ---- racks ----------------------------------------------------------

  function racksView(view) {
    const gen = generation;
    const body = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
    append(view, [el('h1', {}, 'Racks'), body]);
    every(RACK_POLL_MS, async () => {
      const data = await api('GET', '/api/v1/racks');
      if (!current(gen)) return;
      const rows = data.racks.map((r) => el('tr', { 'data-rack-id': r.id },
        el('td', {}, r.name),
        el('td', {}, statusBadge(r.online ? 'online' : 'offline')),
        timeCell(r.last_heartbeat),
        el('td', { class: 'mono' }, r.version),
        el('td', { class: 'mono' }, (r.addresses || []).join(', ')),
        el('td', { class: 'mono' }, r.boot_url),
        timeCell(r.first_seen)));
      body.replaceChildren(table(['Name', 'Status', 'Last heartbeat', 'Version', 'Addresses', 'Boot URL', 'First seen'], rows,
        'No rack has joined yet. Start rackd with -nats-url pointing at this region\'s NATS.'));
    });
  }

  // ---- machines -------------------------------------------------------

  function machinesView(view, query) {
    const gen = generation;
    const status = STATUSES.includes(query.get('status')) ? query.get('status') : '';
    const filter = el('select', {
      id: 'status-filter',
      onchange: () => { location.hash = '#/machines' + (filter.value ? '?status=' + filter.value : ''); },
    }, el('option', { value: '' }, 'any'), STATUSES.map((s) => el('option', { value: s, selected: s === status }, s)));

    const hostname = el('input', { id: 'new-hostname', name: 'hostname', required: true, placeholder: 'node1', spellcheck: 'false' });
    const macs = el('input', { id: 'new-macs', name: 'macs', required: true, placeholder: '52:54:00:12:34:56', size: 40, spellcheck: 'false' });
    const arch = el('input', { id: 'new-arch', name: 'arch', placeholder: 'amd64', size: 8 });
    const created = el('span', { class: 'notice', role: 'status' });
    const form = el('form', { class: 'inline', id: 'create-machine', onsubmit: async (ev) => {
      ev.preventDefault();
      clearError();
      created.textContent = '';
      const req = { hostname: hostname.value.trim(), macs: macs.value.split(/[\s,]+/).filter(Boolean) };
      if (arch.value.trim()) req.arch = arch.value.trim();
      try {
        const m = await api('POST', '/api/v1/machines', req);
        if (!current(gen)) return;
        hostname.value = ''; macs.value = ''; arch.value = '';
        created.textContent = 'Created ' + m.hostname + '.';
        await load();
      } catch (e) { showError(e); }
    } },
    el('label', {}, 'Hostname', hostname), el('label', {}, 'MACs (comma or space separated)', macs),
    el('label', {}, 'Arch', arch), el('button', { type: 'submit' }, 'Create machine'), created);

    const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
    append(view, [el('h1', {}, 'Machines'),
      el('div', { class: 'toolbar' }, el('label', {}, 'Status', filter)),
      list, el('h2', {}, 'Create a machine'), form]);

    let machines = [];
    let next = '';
    async function load(after) {
      const q = new URLSearchParams({ limit: '100' });
      if (status) q.set('status', status);
      if (after) q.set('after', after);
      const data = await api('GET', '/api/v1/machines?' + q);
      if (!current(gen)) return;
      machines = after ? machines.concat(data.machines) : data.machines;
      next = data.next;
      render();
    }
    function render() {
      const rows = machines.map((m) => el('tr', { 'data-machine-id': m.id },
        el('td', {}, el('a', { href: '#/machines/' + encodeURIComponent(m.id) }, m.hostname)),
        el('td', { class: 'mono' }, (m.macs || []).join(', ')),
        el('td', {}, statusBadge(m.status)),
        el('td', {}, m.os ? m.os + '/' + m.release : ''),
        el('td', {},
          can(m, 'deploy') ? el('a', { href: '#/machines/' + encodeURIComponent(m.id), class: 'deploy-link' }, 'Deploy…') : '', ' ',
          can(m, 'release') ? el('button', { type: 'button', class: 'secondary release', onclick: () => release(m) }, 'Release') : '')));
      list.replaceChildren(table(['Hostname', 'MACs', 'Status', 'OS/release', ''], rows,
        status ? 'No machine is ' + status + '.' : 'No machines yet: create one below, or PXE-boot one (unknown MACs become new machines).'));
      if (next) list.append(el('button', { type: 'button', class: 'secondary', onclick: () => load(next).catch(showError) }, 'More'));
    }
    async function release(m) {
      clearError();
      try {
        await api('POST', '/api/v1/machines/' + encodeURIComponent(m.id) + '/release');
        if (current(gen)) await load();
      } catch (e) { showError(e); }
    }
    load().catch(showError);
  }

  function osLabel(o) {
    // A release's title names its OS already ("Debian 12").
    const name = o.title || (o.os_title || o.os) + ' ' + o.release;
    return name + ' (' + o.os + '/' + o.release + ', ' + o.arch + '/' + o.subarch + ')';
  }

  function machineView(view, id) {
    const gen = generation;
    const details = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
    const title = el('h1', {}, 'Machine');
    const actionNote = el('span', { class: 'notice', role: 'status' });

    const osSelect = el('select', { id: 'deploy-os', required: true });
    const preseed = el('input', { id: 'deploy-preseed', placeholder: '(chosen by the region)', spellcheck: 'false' });
    const params = el('input', { id: 'deploy-params', placeholder: 'console=ttyS0', size: 30, spellcheck: 'false' });
    const deployButton = el('button', { type: 'submit', id: 'deploy' }, 'Deploy');
    let oses = [];
    const deployForm = el('form', { class: 'inline', id: 'deploy-form', onsubmit: async (ev) => {
      ev.preventDefault();
      clearError();
      const o = oses[Number(osSelect.value)];
      if (!o) return;
      const req = { os: o.os, release: o.release, arch: o.arch, subarch: o.subarch };
      if (preseed.value.trim()) req.preseed = preseed.value.trim();
      const kp = params.value.split(/\s+/).filter(Boolean);
      if (kp.length) req.kernel_params = kp;
      await action('deploy', req, 'Deployment started.');
    } },
    el('label', {}, 'OS and release', osSelect), el('label', {}, 'Preseed', preseed),
    el('label', {}, 'Kernel parameters', params), deployButton);
    const reason = el('input', { id: 'action-reason', placeholder: 'reason (for mark failed/broken)', size: 30, spellcheck: 'false' });
    const withReason = () => (reason.value.trim() ? { reason: reason.value.trim() } : undefined);
    const buttons = {
      release: el('button', { type: 'button', id: 'release', class: 'secondary',
        onclick: () => action('release', undefined, 'Released.') }, 'Release'),
      'mark-failed': el('button', { type: 'button', id: 'mark-failed', class: 'secondary',
        onclick: () => action('mark-failed', withReason(), 'Marked failed.') }, 'Mark failed'),
      'mark-broken': el('button', { type: 'button', id: 'mark-broken', class: 'secondary',
        onclick: () => action('mark-broken', withReason(), 'Marked broken.') }, 'Mark broken'),
      'mark-fixed': el('button', { type: 'button', id: 'mark-fixed', class: 'secondary',
        onclick: () => action('mark-fixed', undefined, 'Marked fixed.') }, 'Mark fixed'),
    };
    const releaseButton = el('span', { class: 'toolbar-buttons' }, Object.values(buttons), reason);

    const events = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
    append(view, [el('p', {}, el('a', { href: '#/machines' }, '← Machines')), title, details,
      el('h2', {}, 'Actions'), deployForm, el('div', { class: 'toolbar' }, releaseButton, actionNote),
      el('h2', {}, 'Events'), events]);

    async function action(what, body, done) {
      actionNote.textContent = '';
      try {
        const m = await api('POST', '/api/v1/machines/' + encodeURIComponent(id) + '/' + what, body === undefined ? undefined : body);
        if (!current(gen)) return;
        show(m);
        actionNote.textContent = done;
      } catch (e) { showError(e); }
    }

    function show(m) {
      title.textContent = 'Machine ' + m.hostname;
      deployForm.hidden = !can(m, 'deploy');
      for (const [name, b] of Object.entries(buttons)) b.hidden = !can(m, name);
      reason.hidden = !can(m, 'mark-failed') && !can(m, 'mark-broken');
      const rows = [
        ['Hostname', m.hostname], ['ID', m.id], ['Status', statusBadge(m.status)],
        ['Status reason', m.status_reason || ''], ['MACs', (m.macs || []).join(', ')],
        ['Arch', m.arch], ['Origin', m.origin], ['Boot rack', m.boot_rack_id || 'any'],
        ['OS/release', m.os ? m.os + '/' + m.release + (m.subarch ? ' (' + m.subarch + ')' : '') : ''],
        ['Image version', m.image_version_id || ''], ['Deploy rack', m.deploy_rack_id || ''],
        ['Preseed', m.preseed_name ? m.preseed_name + ' version ' + m.preseed_version : ''],
        ['Deploy started', m.deploy_started_at ? fmtTime(m.deploy_started_at) : ''],
        ['Created', fmtTime(m.created_at)], ['Updated', fmtTime(m.updated_at)], ['Version', String(m.version)],
      ];
      details.replaceChildren(el('dl', { class: 'details', id: 'machine-details' },
        rows.map(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, v)])));
    }

    api('GET', '/api/v1/machines/' + encodeURIComponent(id)).then((m) => { if (current(gen)) show(m); }).catch(showError);
    api('GET', '/api/v1/os').then((data) => {
      if (!current(gen)) return;
      oses = data.oses || [];
      osSelect.replaceChildren(...oses.map((o, i) => el('option', { value: String(i), disabled: !o.available },
        osLabel(o) + (o.available ? '' : ' — no online rack has it'))));
      if (oses.length === 0) {
        osSelect.append(el('option', { value: '' }, 'no rack has an OS image yet'));
        deployButton.disabled = true;
      }
    }).catch(showError);
    followLog(events, {
      url: (page) => '/api/v1/events?' + new URLSearchParams({ stream: 'machine/' + id, ...page }),
      items: (d) => d.events, start: '', interval: EVENT_POLL_MS,
      render: eventRows, empty: 'No events yet.',
      onNew: () => api('GET', '/api/v1/machines/' + encodeURIComponent(id)).then((m) => { if (current(gen)) show(m); }),
    });
  }

  // ---- OS registry ----------------------------------------------------

  function osView(view, query) {
    const gen = generation;
    const live = query.get('live') === 'true';
    const body = el('div', {}, el('p', { class: 'muted' }, live ? 'Asking every online rack…' : 'Loading…'));
    append(view, [el('h1', {}, 'OS registry'),
      el('p', { class: 'hint' }, 'What can be deployed, and which racks can boot it. ',
        live ? el('a', { href: '#/os' }, 'Show what the racks last reported') : el('a', { href: '#/os?live=true' }, 'Ask the racks now')),
      body]);
    api('GET', '/api/v1/os' + (live ? '?live=true' : '')).then((data) => {
      if (!current(gen)) return;
      const rows = (data.oses || []).map((o) => el('tr', {},
        el('td', {}, o.os_title || o.os, el('div', { class: 'muted mono' }, o.os)),
        el('td', {}, o.title || o.release, el('div', { class: 'muted mono' }, o.release)),
        el('td', { class: 'mono' }, o.arch + '/' + o.subarch),
        el('td', {}, statusBadge(o.available ? 'available' : 'unavailable')),
        el('td', {}, o.requires_licence_key ? (o.licence_key_set ? 'set' : 'needed, not set') : ''),
        el('td', {}, (o.racks || []).map((r) => el('div', {},
          r.name, ' ', statusBadge(r.online ? 'online' : 'offline'), ' ',
          el('span', { class: 'muted mono' }, (r.versions || []).map((v) => v.label + '/' + v.version).join(', ')))))));
      const parts = [table(['OS', 'Release', 'Arch', 'Bootable now', 'Licence key', 'Racks (image versions)'], rows,
        'No rack reports an OS image yet. Import one with POST /api/v1/racks/{id}/images/imports.')];
      if (data.live) {
        parts.push(el('p', { class: 'muted' }, 'Asked live in ' + data.elapsed_ms + ' ms; answered: ' +
          ((data.answered || []).map((r) => r.name).join(', ') || 'none') + '.'));
        if ((data.not_answered || []).length) {
          parts.push(el('p', { class: 'error' }, 'Did not answer in time: ' + data.not_answered.map((r) => r.name).join(', ')));
        }
      }
      body.replaceChildren(...parts);
    }).catch(showError);
  }

  // ---- events and audit -------------------------------------------------

  // followLog reads the newest KEEP entries of a log (last=, so a long log
  // is not paged through), shows them newest first, then polls from the
  // cursor the API gave.
  function followLog(target, o) {
    const gen = generation;
    let cursor = o.start;
    let items = [];
    let first = true;
    const note = el('p', { class: 'muted', role: 'status' });
    every(o.interval, async () => {
      let added = 0;
      for (;;) {
        const data = await api('GET', o.url(first ? { last: String(KEEP) } : { limit: '1000', after: cursor }));
        if (!current(gen)) return;
        const page = o.items(data) || [];
        items = items.concat(page);
        added += page.length;
        if (items.length > KEEP) items = items.slice(items.length - KEEP);
        if (data.next !== undefined && data.next !== null && String(data.next) !== '') cursor = String(data.next);
        if (first || page.length < 1000) break;
      }
      note.textContent = 'Newest first, the last ' + KEEP + ' at most; updated ' + fmtTime(new Date().toISOString()) + '.';
      if (added > 0 || first) {
        target.replaceChildren(note, table(o.headers || eventHeaders, items.slice().reverse().map(o.render), o.empty));
        if (!first && o.onNew) await o.onNew();
      }
      first = false;
    });
  }

  const eventHeaders = ['Time', 'Type', 'Subject', 'Source', 'Actor', 'Data'];

  function eventRows(e) {
    return el('tr', { 'data-event-id': e.id },
      timeCell(e.time), el('td', { class: 'mono' }, e.type), el('td', { class: 'mono' }, e.subject),
      el('td', { class: 'mono' }, e.source), el('td', {}, e.actor || ''), dataCell(short(e.data)));
  }

  function eventsView(view) {
    const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
    append(view, [el('h1', {}, 'Events'), list]);
    followLog(list, {
      url: (page) => '/api/v1/events?' + new URLSearchParams(page),
      items: (d) => d.events, start: '', interval: EVENT_POLL_MS, render: eventRows, empty: 'The log is empty.',
    });
  }

  function auditView(view) {
    const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
    append(view, [el('h1', {}, 'Audit log'), list]);
    followLog(list, {
      url: (page) => '/api/v1/audit?' + new URLSearchParams(page),
      items: (d) => d.entries, start: '0', interval: AUDIT_POLL_MS, empty: 'Nothing audited yet.',
      headers: ['Time', 'Actor', 'Action', 'Target', 'Outcome', 'Before → after', 'Request'],
      render: (a) => el('tr', { 'data-audit-id': String(a.id) },
        timeCell(a.at), el('td', {}, a.actor), el('td', { class: 'mono' }, a.action), el('td', { class: 'mono' }, a.target),
        el('td', {}, statusBadge(a.outcome), ' ', String(a.status), a.detail ? el('div', { class: 'muted' }, a.detail) : null),
        dataCell(a.before || a.after ? short(a.before, 150) + ' → ' + short(a.after, 150) : ''),
        el('td', { class: 'mono muted' }, a.request_id)),
    });
  }

  // ---- start ------------------------------------------------------------

  function start() {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('login-token').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $('login-token').value = '';
      if (!location.hash || location.hash === '#') location.hash = '#/racks';
      else route();
    });
    $('sign-out').addEventListener('click', () => signOut(''));
    window.addEventListener('hashchange', () => {
      if (location.hash.startsWith('#token=')) takeFragmentToken();
      route();
    });
    takeFragmentToken();
    route();
  }

  start();
}());
