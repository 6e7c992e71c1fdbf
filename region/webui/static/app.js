// Rackplane operator UI: routing, sign-in and the screens of racks,
// machines, the OS registry, events and audit. Other screens are modules
// of their own that register themselves with core.js.
import './rack.js';
import './subnets.js';
import {
  $, APIError, KEEP, RACK_EVENTS, STATUSES, TELEMETRY, TOKEN_KEY,
  ago, api, append, can, clearError, current, dataDetails, el, eventCells,
  errorText, fmtBytes, fmtTime, generation, gib, live, onStop, parseHash, rackLink, rackName, reloadOn, short,
  showError, signOut, splitTags, startFollowing, statusBadge, stopView, table, tagChips, takeFragmentToken,
  timeCell, token, views, registerView,
} from './core.js';
import './preseeds.js';
import './scripts.js';
import { volumesPanel } from './storage.js';
import { commissioningPanel, deleteButton, editPanel } from './machine.js';
import './tokens.js';
import './dashboard.js';
import './rejected.js';

for (const [name, f] of Object.entries({ racks: racksView, machines: machinesView, os: osView, events: eventsView, audit: auditView })) {
  registerView(name, f);
}

// MACHINE_EVENTS are what changes a machine as lists show it: events on
// its stream, without boot traffic and agent progress.
const STEP_TYPE = 'rackplane.rack.agent_step_reported.v1';
const MACHINE_EVENTS = { subject: 'machine/', not: [...TELEMETRY, STEP_TYPE] };


// ---- racks ----------------------------------------------------------

// racksView lists the racks in service, online ones first. An offline
// rack offers Retire (asked twice): the region refuses it, with why,
// while machines, subnets or volumes depend on the rack.
function racksView(view, query, parts) {
  if (parts && parts[0] && views.rack) { views.rack(view, query, parts); return; } // #/racks/ID: rack.js
  const gen = generation;
  const body = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const result = el('p', { id: 'rack-result', class: 'notice', role: 'status', hidden: true });
  const confirmText = el('span', {});
  const confirmYes = el('button', { type: 'button', id: 'rack-confirm-yes' }, 'Yes, retire it');
  const confirmNo = el('button', { type: 'button', id: 'rack-confirm-no', class: 'secondary' }, 'Cancel');
  const confirmBox = el('div', { id: 'rack-confirm', class: 'confirm', role: 'alertdialog', hidden: true },
    confirmText, ' ', confirmYes, ' ', confirmNo);
  let asked = null; // the rack the open confirmation is about
  confirmYes.addEventListener('click', () => { const r = asked; closeConfirm(); if (r) retire(r); });
  confirmNo.addEventListener('click', () => { closeConfirm(); });
  append(view, [el('h1', {}, 'Racks'), confirmBox, result, body]);

  function ask(r) {
    clearError();
    result.hidden = true;
    asked = r;
    confirmText.textContent = 'Retire rack ' + r.name + ' (' + r.id + ')? It leaves the racks for good and its NATS ' +
      'credential is revoked: this rackd cannot join again (a machine that should come back joins as a new rack).';
    confirmBox.hidden = false;
    confirmNo.focus();
  }

  function closeConfirm() {
    asked = null;
    confirmBox.hidden = true;
  }

  async function retire(r) {
    try {
      const out = await api('DELETE', '/api/v1/racks/' + encodeURIComponent(r.id));
      if (!current(gen)) return;
      result.textContent = 'Rack ' + out.name + ' retired' + (out.credential ? '; its NATS credential is revoked.' : '.') +
        (out.warning ? ' ' + out.warning : '');
      result.hidden = false;
      await load();
    } catch (e) { if (current(gen)) showError(e); }
  }

  async function load() {
    const data = await api('GET', '/api/v1/racks');
    if (!current(gen)) return;
    const rows = data.racks.map((r) => el('tr', { 'data-rack-id': r.id },
      el('td', {}, rackLink(r.id, r.name)),
      el('td', {}, statusBadge(r.online ? 'online' : 'offline')),
      timeCell(r.last_heartbeat),
      el('td', { class: 'mono' }, r.version),
      el('td', { class: 'mono' }, (r.addresses || []).join(', ')),
      el('td', { class: 'mono' }, r.boot_url),
      timeCell(r.first_seen),
      el('td', {}, r.online ? '' : el('button', { type: 'button', class: 'secondary retire', onclick: () => ask(r) }, 'Retire'))));
    body.replaceChildren(table(['Name', 'Status', 'Last heartbeat', 'Version', 'Addresses', 'Boot URL', 'First seen', ''], rows,
      'No rack has joined yet. Start rackd with -nats-url pointing at this region\'s NATS.'));
  }
  // Online and offline are events (rack_online, rack_offline: the
  // region's liveness monitor records each transition), so the list
  // follows them without a timer; the last heartbeat shown is the one
  // the list was loaded with.
  reloadOn({ type: RACK_EVENTS }, load);
}

// ---- machines -------------------------------------------------------

// machinesView lists machines, filtered by what the address says
// (#/machines?status=ready&arch=amd64&min_cores=8&min_memory=16&tag=gpu):
// the API's own filters, min_memory in GiB there; tag may repeat, and a
// machine must have every one.
function machinesView(view, query) {
  const gen = generation;
  const status = STATUSES.includes(query.get('status')) ? query.get('status') : '';
  const want = {
    arch: query.get('arch') || '', min_cores: query.get('min_cores') || '', min_memory: query.get('min_memory') || '',
    tags: query.getAll('tag').flatMap(splitTags),
  };
  const filtered = status || want.arch || want.min_cores || want.min_memory || want.tags.length > 0;
  // go puts the filters in the address; the hashchange draws the list
  // anew, so a filtered list can be bookmarked and reloaded.
  const go = () => {
    const q = new URLSearchParams();
    if (filter.value) q.set('status', filter.value);
    if (archFilter.value.trim()) q.set('arch', archFilter.value.trim());
    if (coresFilter.value.trim()) q.set('min_cores', coresFilter.value.trim());
    if (memoryFilter.value.trim()) q.set('min_memory', memoryFilter.value.trim());
    for (const t of splitTags(tagFilter.value)) q.append('tag', t);
    const qs = q.toString();
    location.hash = '#/machines' + (qs ? '?' + qs : '');
  };
  const filter = el('select', { id: 'status-filter', onchange: go },
    el('option', { value: '' }, 'any'), STATUSES.map((s) => el('option', { value: s, selected: s === status }, s)));
  const archFilter = el('input', { id: 'filter-arch', name: 'arch', size: 7, placeholder: 'any', spellcheck: 'false', value: want.arch });
  const coresFilter = el('input', { id: 'filter-min-cores', name: 'min_cores', type: 'number', min: '0', size: 5, value: want.min_cores });
  const memoryFilter = el('input', { id: 'filter-min-memory', name: 'min_memory', type: 'number', min: '0', step: 'any', size: 6,
    value: want.min_memory });
  const tagFilter = el('input', { id: 'filter-tag', name: 'tag', size: 16, placeholder: 'gpu', spellcheck: 'false', value: want.tags.join(' ') });
  const filterForm = el('form', { class: 'toolbar', id: 'machine-filters', onsubmit: (ev) => { ev.preventDefault(); go(); } },
    el('label', {}, 'Status', filter), el('label', {}, 'Arch', archFilter),
    el('label', {}, 'Min cores', coresFilter), el('label', {}, 'Min memory (GiB)', memoryFilter),
    el('label', {}, 'Tags (all of)', tagFilter), el('button', { type: 'submit', id: 'filter-apply', class: 'secondary' }, 'Filter'),
    filtered ? el('a', { href: '#/machines', id: 'filter-clear' }, 'Clear filters') : null);

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
  append(view, [el('h1', {}, 'Machines'), filterForm,
    list, el('h2', {}, 'Create a machine'), form]);

  let machines = [];
  let next = '';
  async function load(after) {
    // A reload keeps as many machines as are shown ("More" included).
    const q = new URLSearchParams({ limit: String(after ? 100 : Math.min(1000, Math.max(100, machines.length))) });
    if (status) q.set('status', status);
    if (want.arch) q.set('arch', want.arch);
    if (want.min_cores) q.set('min_cores', want.min_cores);
    if (want.min_memory) q.set('min_memory', want.min_memory + 'GiB');
    for (const t of want.tags) q.append('tag', t);
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
      powerCell(m),
      el('td', {}, m.os ? m.os + '/' + m.release : ''),
      el('td', { class: 'tags-cell' }, tagChips(m.tags)),
      hardwareCell(m),
      el('td', { class: 'actions' },
        can(m, 'deploy') ? el('a', { href: '#/machines/' + encodeURIComponent(m.id), class: 'deploy-link' }, 'Deploy…') : '', ' ',
        can(m, 'release') ? el('button', { type: 'button', class: 'secondary release', onclick: () => release(m) }, 'Release') : '')));
    list.replaceChildren(table(['Hostname', 'MACs', 'Status', 'Power', 'OS/release', 'Tags', 'Hardware', ''], rows,
      filtered ? 'No machine matches ' + describeFilters() + '.' : 'No machines yet: create one below, or PXE-boot one (unknown MACs become new machines).'));
    if (next) list.append(el('button', { type: 'button', class: 'secondary', onclick: () => load(next).catch(showError) }, 'More'));
  }
  function describeFilters() {
    const parts = [];
    if (status) parts.push('status ' + status);
    if (want.arch) parts.push('arch ' + want.arch);
    if (want.min_cores) parts.push('at least ' + want.min_cores + ' cores');
    if (want.min_memory) parts.push('at least ' + want.min_memory + ' GiB of memory');
    if (want.tags.length) parts.push('tags ' + want.tags.join(', '));
    return parts.join(', ');
  }
  async function release(m) {
    clearError();
    try {
      await api('POST', '/api/v1/machines/' + encodeURIComponent(m.id) + '/release');
      if (current(gen)) await load();
    } catch (e) { showError(e); }
  }
  reloadOn(MACHINE_EVENTS, () => load());
}

// hardwareCell sums up a commissioned machine's hardware in its row.
function hardwareCell(m) {
  const h = m.hardware;
  if (!h) return el('td', { class: 'hardware muted', title: 'never commissioned' }, '—');
  return el('td', { class: 'hardware small' },
    h.cores + ' cores, ' + gib(h.memory_bytes) + ', ' + h.disks + (h.disks === 1 ? ' disk' : ' disks') +
    (h.disks ? ' (' + fmtBytes(h.disk_bytes) + ')' : ''));
}

function osLabel(o) {
  // A release's title names its OS already ("Debian 12").
  const name = o.title || (o.os_title || o.os) + ' ' + o.release;
  return name + ' (' + o.os + '/' + o.release + ', ' + o.arch + '/' + o.subarch + ')';
}

// ---- power ------------------------------------------------------------

// powerBadge is a machine's stored power state: on, off or unknown as
// the last power action left it, or — when no action ever ran.
function powerBadge(p) {
  if (!p.power_checked_at) return el('span', { class: 'muted', title: 'never checked' }, '—');
  return statusBadge(p.power_state || 'unknown');
}

// powerFailure is why the last power action failed, or null.
function powerFailure(p) {
  if (!p.power_outcome || p.power_outcome === 'ok') return null;
  return p.power_outcome + (p.power_error ? ': ' + p.power_error : '');
}

function powerCell(m) {
  const failed = powerFailure(m);
  return el('td', { class: 'power', title: failed || (m.power_checked_at ? 'checked ' + fmtTime(m.power_checked_at) : null) },
    powerBadge(m), failed ? el('div', { class: 'small bad power-error' }, short(failed, 160)) : null);
}

// newer says whether power state a was checked after b (or b never was).
function newer(a, b) {
  if (!b || !b.power_checked_at) return true;
  if (!a.power_checked_at) return false;
  return new Date(a.power_checked_at).getTime() >= new Date(b.power_checked_at).getTime();
}

// powerPanel is a machine's Power section: its parameters (never the
// password), the rack that drives it, its power state, the actions and
// the form that sets the parameters. update(m) takes the state from the
// machine when it is newer than what the panel shows.
function powerPanel(id, gen) {
  const base = '/api/v1/machines/' + encodeURIComponent(id) + '/power';
  let params = null;     // GET …/power, null when the machine has none
  let state = null;      // {power_state, power_checked_at, power_outcome, power_error, live}
  let hostname = '';
  let rackNames = {};    // rack id -> name
  let racks = [];
  let drivers = [];      // GET /api/v1/power-drivers
  let busy = false;

  const details = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const result = el('span', { id: 'power-result', class: 'notice', role: 'status' });
  const message = el('p', { id: 'power-message', class: 'error', role: 'alert', hidden: true });
  const confirmText = el('span', {});
  const confirmYes = el('button', { type: 'button', id: 'power-confirm-yes' });
  const confirmNo = el('button', { type: 'button', id: 'power-confirm-no', class: 'secondary' }, 'Cancel');
  const confirmBox = el('div', { id: 'power-confirm', class: 'confirm', role: 'alertdialog', hidden: true },
    confirmText, ' ', confirmYes, ' ', confirmNo);
  let onConfirm = null;
  confirmYes.addEventListener('click', () => { const f = onConfirm; closeConfirm(); if (f) f(); });
  confirmNo.addEventListener('click', () => { closeConfirm(); result.textContent = 'Cancelled.'; });

  const buttons = {
    on: el('button', { type: 'button', id: 'power-on', onclick: () => act('on') }, 'Power on'),
    off: el('button', { type: 'button', id: 'power-off', class: 'secondary',
      onclick: () => ask('Power off ' + (hostname || 'this machine') + ' now? Its operating system is not shut down first.',
        'Yes, power off', () => act('off')) }, 'Power off'),
    cycle: el('button', { type: 'button', id: 'power-cycle', class: 'secondary',
      onclick: () => ask('Power cycle ' + (hostname || 'this machine') + ' now? It is switched off without a shutdown, then on.',
        'Yes, power cycle', () => act('cycle')) }, 'Power cycle'),
    check: el('button', { type: 'button', id: 'power-check', class: 'secondary', onclick: () => check() }, 'Check now'),
  };

  // The form. The password field starts empty and is emptied after each
  // save: empty keeps the stored password, so it is never shown back.
  const driver = el('select', { id: 'power-driver', required: true });
  const rack = el('select', { id: 'power-rack' });
  const address = el('input', { id: 'power-address', size: 30, spellcheck: 'false', placeholder: 'BMC host, URL or path' });
  const port = el('input', { id: 'power-port', type: 'number', min: '0', max: '65535', value: '0', size: 6 });
  const username = el('input', { id: 'power-username', spellcheck: 'false', autocomplete: 'off' });
  const password = el('input', { id: 'power-password', type: 'password', autocomplete: 'new-password', spellcheck: 'false' });
  const noPassword = el('input', { id: 'power-no-password', type: 'checkbox' });
  const extra = el('textarea', { id: 'power-extra', rows: 2, cols: 30, spellcheck: 'false', placeholder: 'name=value, one a line' });
  const saved = el('span', { class: 'notice', role: 'status', id: 'power-saved' });
  const save = el('button', { type: 'submit', id: 'power-save' }, 'Save power parameters');
  const clear = el('button', { type: 'button', id: 'power-clear', class: 'secondary',
    onclick: () => ask('Remove the power parameters and the stored password of ' + (hostname || 'this machine') + '?',
      'Yes, remove them', clearParams) }, 'Clear power parameters');
  noPassword.addEventListener('change', () => {
    password.disabled = noPassword.checked;
    if (noPassword.checked) password.value = '';
  });
  const form = el('form', { class: 'inline', id: 'power-form', autocomplete: 'off', onsubmit: (ev) => { ev.preventDefault(); saveParams(); } },
    el('label', {}, 'Driver', driver), el('label', {}, 'Driving rack', rack),
    el('label', {}, 'Address', address), el('label', {}, 'Port (0: the driver\'s)', port),
    el('label', {}, 'Username', username),
    el('label', {}, 'Password (empty: keep)', password),
    el('label', { class: 'check' }, el('span', {}, noPassword, ' remove the password')),
    el('label', {}, 'Extra', extra), save, clear, saved);

  const node = el('div', { id: 'power' }, details,
    el('div', { class: 'toolbar' }, Object.values(buttons), result), confirmBox, message,
    el('h3', {}, 'Power parameters'), form);

  // setBusy disables the actions while one runs, while a confirmation
  // is open, and when the region would refuse them: no parameters, no
  // rack to drive the machine, that rack offline, or its driver unusable
  // there or without the action. The button's title says which.
  function setBusy(b) {
    busy = b;
    const waiting = b || !confirmBox.hidden;
    for (const [action, x] of Object.entries(buttons)) {
      const why = waiting ? null : refusal(action === 'check' ? 'status' : action);
      x.disabled = waiting || why !== null;
      x.title = why || '';
    }
    save.disabled = b;
    clear.disabled = waiting || !params;
  }

  // refusal is why the region would refuse power action now, or null.
  function refusal(action) {
    if (!params) return 'No power parameters: set them below first.';
    const rid = params.driving_rack_id;
    if (!rid) return 'No rack drives this machine: name one in the power parameters.';
    const r = racks.find((x) => x.id === rid);
    if (r && !r.online) return 'Rack ' + r.name + ' drives this machine and is offline.';
    const d = drivers.find((x) => x.name === params.driver && x.rack_id === rid);
    if (!d) return 'Rack ' + rackLabel(rid) + ' does not report the ' + params.driver + ' power driver.';
    if (!d.available) return 'The ' + params.driver + ' driver is unusable on rack ' + rackLabel(rid) + (d.detail ? ': ' + d.detail : '.');
    if (d.actions && d.actions.length && !d.actions.includes(action)) return 'The ' + params.driver + ' driver offers no ' + action + ' action.';
    return null;
  }

  function ask(text, yes, f) {
    if (busy) return;
    confirmText.textContent = text;
    confirmYes.textContent = yes;
    onConfirm = f;
    confirmBox.hidden = false;
    setBusy(busy);
    confirmNo.focus();
  }

  function closeConfirm() {
    onConfirm = null;
    confirmBox.hidden = true;
    setBusy(busy);
  }

  function fail(err) {
    if (err instanceof APIError && err.status === 401) return;
    message.textContent = errorText(err);
    message.hidden = false;
  }

  function clearMessage() {
    message.hidden = true;
    message.textContent = '';
  }

  function takeState(s) {
    if (newer(s, state)) state = { power_state: s.power_state, power_checked_at: s.power_checked_at,
      power_outcome: s.power_outcome, power_error: s.power_error };
  }

  function rackLabel(rid) {
    if (!rid) return '';
    return rackNames[rid] ? rackNames[rid] : rid;
  }

  function render() {
    if (!params) {
      details.replaceChildren(el('p', { class: 'muted', id: 'power-none' },
        'No power parameters: the region cannot reach this machine\'s BMC until they are set below.'));
    } else {
      const pw = params.password_set ? 'set' + (params.password_fingerprint ? ' (fingerprint ' + params.password_fingerprint + ')' : '') : 'not set';
      const extras = Object.entries(params.extra || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => k + '=' + v).join(', ');
      const drivingName = rackLabel(params.driving_rack_id);
      const rows = [
        ['Driver', params.driver], ['Address', params.address], ['Port', params.port ? String(params.port) : 'the driver\'s default'],
        ['Username', params.username], ['Password', pw], ['Extra', extras],
        ['Driving rack', params.driving_rack_id
          ? el('span', { title: params.driving_rack_id }, drivingName,
            params.driving_rack_reason ? ' (' + params.driving_rack_reason + ')' : '')
          : 'none: the machine has no boot rack and no rack serves its BMC\'s subnet; name one below'],
      ];
      const s = state || {};
      const failed = powerFailure(s);
      rows.push(['Power', powerBadge(s)],
        ['Checked', s.power_checked_at ? el('span', { title: ago(s.power_checked_at) }, fmtTime(s.power_checked_at)) : 'never'],
        ['Last error', failed || '']);
      details.replaceChildren(el('dl', { class: 'details', id: 'power-details' },
        rows.map(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, v)])));
    }
    setBusy(busy);
  }

  // fillForm puts the stored parameters in the form; the password field
  // stays empty.
  function fillForm() {
    const have = new Set(drivers.map((d) => d.name));
    const opts = [];
    if (!params) opts.push(el('option', { value: '' }, 'choose a driver'));
    if (params && !have.has(params.driver)) {
      opts.push(el('option', { value: params.driver }, params.driver + ' — no rack reports it'));
    }
    const byName = new Map();
    for (const d of drivers) {
      if (!byName.has(d.name)) byName.set(d.name, []);
      byName.get(d.name).push(d);
    }
    for (const [name, ds] of byName) {
      const ok = ds.filter((d) => d.available);
      const kind = ds[0].kind ? ' (' + ds[0].kind + ')' : '';
      const label = ok.length
        ? name + kind + ' — on ' + ok.map((d) => d.rack_name + (d.online ? '' : ' (offline)')).join(', ')
        : name + kind + ' — unusable: ' + ds.map((d) => d.rack_name + ': ' + (d.detail || 'not available')).join('; ');
      opts.push(el('option', { value: name, disabled: ok.length === 0, title: ok.length ? null : label }, label));
    }
    if (drivers.length === 0) opts.push(el('option', { value: '', disabled: true }, 'no rack reports a power driver'));
    driver.replaceChildren(...opts);
    driver.value = params ? params.driver : '';
    rack.replaceChildren(el('option', { value: '' }, 'the rack of the BMC\'s subnet, else the machine\'s boot rack'),
      ...racks.map((r) => el('option', { value: r.id }, r.name + (r.online ? '' : ' (offline)'))));
    rack.value = params && params.rack_id ? params.rack_id : '';
    address.value = params ? params.address : '';
    port.value = params ? String(params.port || 0) : '0';
    username.value = params ? params.username : '';
    extra.value = params ? Object.entries(params.extra || {}).map(([k, v]) => k + '=' + v).join('\n') : '';
    password.value = '';
    password.placeholder = params && params.password_set ? '(unchanged)' : '(none)';
    noPassword.checked = false;
    password.disabled = false;
  }

  async function load() {
    const [rs, ds, p] = await Promise.all([
      api('GET', '/api/v1/racks'),
      api('GET', '/api/v1/power-drivers').catch((e) => { fail(e); return { power_drivers: [] }; }),
      api('GET', base + '?live=false').catch((e) => { if (e instanceof APIError && e.status === 404 && e.code === 'not_found') return null; throw e; }),
    ]);
    if (!current(gen)) return;
    racks = rs.racks || [];
    rackNames = Object.fromEntries(racks.map((r) => [r.id, r.name]));
    drivers = ds.power_drivers || [];
    params = p;
    if (p) takeState(p);
    render();
    fillForm();
  }

  async function act(what) {
    if (busy) return;
    clearMessage();
    result.textContent = 'Power ' + what + '…';
    setBusy(true);
    try {
      const r = await api('POST', base + '/' + what);
      if (!current(gen)) return;
      state = { power_state: r.state, power_checked_at: new Date().toISOString(), power_outcome: r.outcome };
      result.textContent = 'Power ' + what + ': ' + r.state + ' (' + r.outcome + ', ' + r.duration_ms + ' ms, rack ' + rackLabel(r.rack_id) + ').';
    } catch (e) {
      if (!current(gen)) return;
      result.textContent = 'Power ' + what + ' failed.';
      fail(e);
    } finally {
      if (current(gen)) { setBusy(false); render(); }
    }
  }

  async function check() {
    if (busy) return;
    clearMessage();
    result.textContent = 'Asking the rack…';
    setBusy(true);
    try {
      const p = await api('GET', base);
      if (!current(gen)) return;
      params = p;
      state = null;
      takeState(p);
      result.textContent = 'The rack says: ' + p.power_state + ' (checked ' + fmtTime(p.power_checked_at) + ').';
    } catch (e) {
      if (!current(gen)) return;
      result.textContent = 'Check failed.';
      fail(e);
    } finally {
      if (current(gen)) { setBusy(false); render(); }
    }
  }

  async function saveParams() {
    if (busy) return;
    clearMessage();
    saved.textContent = '';
    const ex = {};
    for (const line of extra.value.split('\n')) {
      const l = line.trim();
      if (!l) continue;
      const i = l.indexOf('=');
      if (i <= 0) { fail(new Error('extra: "' + short(l, 60) + '" is not name=value')); return; }
      ex[l.slice(0, i).trim()] = l.slice(i + 1).trim();
    }
    const req = { driver: driver.value, address: address.value.trim(), port: Number(port.value) || 0,
      username: username.value, extra: ex };
    if (rack.value) req.rack_id = rack.value;
    // Sent only when typed (or to remove it): absent keeps the stored one.
    if (noPassword.checked) req.password = '';
    else if (password.value !== '') req.password = password.value;
    setBusy(true);
    try {
      await api('PUT', base, req);
      // Saved: the typed password leaves the page. A refused one stays
      // for the operator to correct.
      password.value = '';
      noPassword.checked = false;
      if (!current(gen)) return;
      saved.textContent = 'Saved.';
      await load();
    } catch (e) {
      if (current(gen)) fail(e);
    } finally {
      if (current(gen)) setBusy(false);
    }
  }

  async function clearParams() {
    clearMessage();
    saved.textContent = '';
    setBusy(true);
    try {
      await api('DELETE', base);
      if (!current(gen)) return;
      saved.textContent = 'Cleared.';
      await load();
    } catch (e) {
      if (current(gen)) fail(e);
    } finally {
      if (current(gen)) setBusy(false);
    }
  }

  setBusy(false);
  // The parameters and the racks' drivers change by events: the
  // machine's power parameters, racks' capability reports and liveness.
  reloadOn((e) => e === null || (e.subject === 'machine/' + id && e.type.startsWith('rackplane.region.power_parameters_')) ||
    e.type.startsWith('rackplane.rack.capabilities_reported.') || RACK_EVENTS.some((p) => e.type.startsWith(p)),
  () => load().catch(fail));
  return {
    node,
    update(m) {
      hostname = m.hostname;
      const before = state;
      takeState(m);
      if (state !== before && params) render();
    },
  };
}

// ---- hardware, tags, commissioning ----------------------------------

// hardwarePanel is a machine's Hardware section: what its last
// commissioning found, and what changed since the one before.
// update(m) reloads it when the machine's summary or status moved, as
// when a commissioning ends with a new inventory.
function hardwarePanel(id, gen) {
  const base = '/api/v1/machines/' + encodeURIComponent(id) + '/hardware';
  const node = el('div', { id: 'hardware' }, el('p', { class: 'muted' }, 'Loading…'));
  let seen = null;
  let loading = false;
  let again = false;

  async function load() {
    if (loading) { again = true; return; }
    loading = true;
    try {
      let hw = null;
      try {
        hw = await api('GET', base);
      } catch (e) {
        if (!(e instanceof APIError && e.status === 404)) throw e;
      }
      if (!current(gen)) return;
      if (!hw) {
        node.replaceChildren(el('p', { class: 'muted', id: 'hardware-none' }, 'Not commissioned yet. ',
          el('span', { class: 'hint' }, 'Commission the machine (Actions above) to take its hardware inventory: ' +
            'its agent reports the CPUs, memory, disks, NICs and firmware.')));
        return;
      }
      let history = null;
      try {
        history = await api('GET', base + '/history?limit=10');
      } catch (e) {
        if (!(e instanceof APIError && e.status === 404)) throw e;
      }
      if (!current(gen)) return;
      render(hw, history ? history.reports || [] : []);
    } finally {
      loading = false;
      if (again && current(gen)) { again = false; load().catch(showError); }
    }
  }

  function render(hw, reports) {
    const inv = hw.inventory || {};
    const f = hw.summary || {};
    const cpu = inv.cpu || {};
    const mem = inv.memory || {};
    const fw = inv.firmware || {};
    const dmi = inv.dmi || {};
    const disks = inv.disks || [];
    const nics = inv.nics || [];
    const secure = fw.secure_boot === true ? 'Secure Boot on' : fw.secure_boot === false ? 'Secure Boot off' : 'Secure Boot unknown';
    const memory = gib(f.memory_bytes) + (mem.installed_bytes
      ? ' installed (' + mem.installed_source + '), ' + gib(mem.total_bytes) + ' usable'
      : ' usable (installed unknown)');
    const rows = [
      ['Architecture', f.arch],
      ['CPU', cpu.model],
      ['Sockets × cores × threads', f.sockets + ' × ' + f.cores + ' × ' + f.threads],
      ['CPU flags', (cpu.flags || []).join(' ')],
      ['Memory', memory],
      ['Disks', disks.length + (disks.length === 1 ? ' disk, ' : ' disks, ') + fmtBytes(f.disk_bytes) + ' in all'],
      ['NICs', String(nics.length)],
      ['Firmware', fw.type === 'uefi' ? 'UEFI, ' + secure : fw.type === 'bios' ? 'BIOS' : String(fw.type || '')],
      ['Vendor', dmi.vendor || ''], ['Product', dmi.product || ''], ['Serial', dmi.serial || ''], ['System UUID', dmi.uuid || ''],
      ['BMC', inv.bmc ? [inv.bmc.ipv4, inv.bmc.ipv6].filter(Boolean).join(', ') : ''],
      ['Taken', el('span', { title: ago(hw.collected_at) }, fmtTime(hw.collected_at),
        ' by agent ' + (inv.agent_version || '?') + ', reported ' + fmtTime(hw.reported_at))],
    ];
    const diskRows = disks.map((d) => el('tr', { 'data-disk': d.name },
      el('td', { class: 'mono' }, d.name), el('td', {}, fmtBytes(d.size_bytes)), el('td', {}, d.model || ''),
      el('td', { class: 'mono' }, d.serial || ''),
      el('td', {}, (d.rotational ? 'rotational' : 'solid state') + (d.removable ? ', removable' : '')),
      el('td', { class: 'mono small' }, d.wwid ? el('div', {}, d.wwid) : null, (d.by_id || []).map((p) => el('div', {}, p)))));
    const nicRows = nics.map((n) => el('tr', { 'data-nic': n.name, class: n.boot ? 'boot' : null },
      el('td', { class: 'mono' }, n.name, n.boot ? [' ', el('span', { class: 'status boot', title: 'the machine booted from this NIC' }, 'boot')] : null),
      el('td', { class: 'mono' }, n.mac), el('td', { class: 'mono' }, n.driver || ''),
      el('td', {}, statusBadge(n.link)), el('td', {}, n.speed_mbps ? n.speed_mbps + ' Mb/s' : '')));
    // What the agent could not know (no DMI serial, no BMC) is left out.
    node.replaceChildren(
      el('dl', { class: 'details', id: 'hardware-summary' },
        rows.filter(([, v]) => v !== '' && v !== undefined).map(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, v)])),
      el('h3', {}, 'Disks'),
      el('div', { id: 'hardware-disks' }, table(['Name', 'Size', 'Model', 'Serial', 'Kind', 'WWID and by-id'], diskRows, 'No disks.')),
      el('h3', {}, 'NICs'),
      el('div', { id: 'hardware-nics' }, table(['Name', 'MAC', 'Driver', 'Link', 'Speed'], nicRows, 'No NICs.')),
      // replaceChildren writes a null as the text "null".
      changes(reports) || '');
  }

  // changes is what the newest report changed from the one before, in
  // a section that opens on a click; null when nothing did.
  function changes(reports) {
    const r = reports.find((x) => !x.stale);
    if (!r || r.first || !r.diff || Object.keys(r.diff).length === 0) return null;
    const d = r.diff;
    const items = [];
    const disk = (x) => x.name + ' ' + fmtBytes(x.size_bytes) + (x.serial ? ' (serial ' + x.serial + ')' : '');
    const cpu = (c) => (c ? c.model + ', ' + c.sockets + ' × ' + c.cores + ' × ' + c.threads : '?');
    const firmware = (x) => (x ? x.type + (x.secure_boot === true ? ', Secure Boot on' : x.secure_boot === false ? ', Secure Boot off' : '') : '?');
    for (const x of d.disks_added || []) items.push('Disk added: ' + disk(x));
    for (const x of d.disks_removed || []) items.push('Disk removed: ' + disk(x));
    for (const x of d.disks_resized || []) items.push('Disk resized: ' + x.name + ' ' + fmtBytes(x.from_bytes) + ' → ' + fmtBytes(x.to_bytes));
    for (const x of d.nics_added || []) items.push('NIC added: ' + x.name + ' ' + x.mac);
    for (const x of d.nics_removed || []) items.push('NIC removed: ' + x.name + ' ' + x.mac);
    if (d.memory) items.push('Memory: ' + gib(d.memory.from_bytes) + ' → ' + gib(d.memory.to_bytes));
    if (d.cpu) items.push('CPU: ' + cpu(d.cpu.from) + ' → ' + cpu(d.cpu.to));
    if (d.firmware) items.push('Firmware: ' + firmware(d.firmware.from) + ' → ' + firmware(d.firmware.to));
    if (d.architecture) items.push('Architecture: ' + d.architecture.from + ' → ' + d.architecture.to);
    return el('details', { id: 'hardware-changes' },
      el('summary', {}, 'Changes since the last commissioning (' + items.length + ')'),
      el('p', { class: 'muted small' }, 'Inventory taken ' + fmtTime(r.collected_at) + ', compared with the one before.'),
      el('ul', {}, items.map((t) => el('li', {}, t))));
  }

  load().catch(showError);
  return {
    node,
    update(m) {
      const key = m.status + ' ' + JSON.stringify(m.hardware || null);
      if (seen !== null && key !== seen) load().catch(showError);
      seen = key;
    },
  };
}

// tagsPanel shows a machine's tags and the form that replaces them. The
// input keeps what the operator typed while the page follows the
// machine; a refusal is shown as the API said it.
function tagsPanel(id, gen) {
  const chips = el('div', { id: 'machine-tags' });
  const input = el('input', { id: 'tags-input', name: 'tags', size: 40, spellcheck: 'false', placeholder: 'gpu rack-a1' });
  const saved = el('span', { class: 'notice', role: 'status', id: 'tags-saved' });
  const save = el('button', { type: 'submit', id: 'tags-save' }, 'Save tags');
  let typed = false;
  input.addEventListener('input', () => { typed = true; saved.textContent = ''; });
  let onSaved = null;
  const form = el('form', { class: 'inline', id: 'tags-form', autocomplete: 'off', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    saved.textContent = '';
    save.disabled = true;
    try {
      const m = await api('PUT', '/api/v1/machines/' + encodeURIComponent(id) + '/tags', { tags: splitTags(input.value) });
      if (!current(gen)) return;
      typed = false;
      saved.textContent = 'Saved.';
      if (onSaved) onSaved(m);
    } catch (e) {
      if (current(gen)) showError(e);
    } finally {
      if (current(gen)) save.disabled = false;
    }
  } },
  el('label', {}, 'Tags (comma or space separated; empty for none)', input), save, saved);
  return {
    node: el('div', { id: 'tags' }, chips, form),
    onSaved(f) { onSaved = f; },
    update(m) {
      const tags = m.tags || [];
      chips.replaceChildren(tags.length ? tagChips(tags) : el('span', { class: 'muted' }, 'No tags.'));
      if (!typed) input.value = tags.join(' ');
    },
  };
}

// stepsPanel shows, while a machine is commissioning, the steps its
// agent reported for the current operation, following them as the
// event views do (the latest state of each step, in the order they
// began).
function stepsPanel(id, gen) {
  const node = el('div', { id: 'commissioning', hidden: true });
  const body = el('div', {}, el('p', { class: 'muted' }, 'Waiting for the agent…'));
  append(node, [el('h2', {}, 'Commissioning'), body]);
  let operation = '';
  let commissioning = false;
  let cursor = '';
  let first = true;
  let steps = [];   // agent_step_reported events, oldest first

  // The agent's reports arrive as events on the machine's subject: the
  // panel reads what is new from its cursor when one does.
  reloadOn({ subject: 'machine/' + id, type: STEP_TYPE }, async () => {
    if (!commissioning && !first) return;
    let added = 0;
    for (;;) {
      const q = { stream: 'machine/' + id, type: 'rackplane.rack.agent_step_reported.v1' };
      Object.assign(q, first ? { last: String(KEEP) } : { limit: '1000', after: cursor });
      const data = await api('GET', '/api/v1/events?' + new URLSearchParams(q));
      if (!current(gen)) return;
      const page = data.events || [];
      steps = steps.concat(page);
      added += page.length;
      if (steps.length > KEEP) steps = steps.slice(steps.length - KEEP);
      if (data.next) cursor = String(data.next);
      if (first || page.length < 1000) break;
    }
    first = false;
    if (added > 0) render();
  });

  function render() {
    const byName = new Map();
    for (const e of steps) {
      const d = e.data || {};
      if (d.operation_id !== operation) continue;
      byName.set(d.name, { ...d, time: e.time, began: byName.has(d.name) ? byName.get(d.name).began : e.time });
    }
    const rows = [...byName.values()].map((s) => {
      const p = s.state === 'done' ? 100 : Math.max(0, Math.min(100, Number(s.progress) || 0));
      return el('tr', { 'data-step': s.name },
        el('td', {}, s.name), el('td', {}, statusBadge(s.state)),
        el('td', { class: 'progress' }, el('progress', { max: 100, value: p, title: p + '%' }), ' ', p + '%'),
        el('td', {}, s.message || ''), timeCell(s.time));
    });
    body.replaceChildren(table(['Step', 'State', 'Progress', 'Message', 'Last report'], rows,
      'The agent has reported no step yet: the machine is booting its ephemeral environment.'));
  }

  return {
    node,
    update(m) {
      commissioning = m.status === 'commissioning';
      node.hidden = !commissioning;
      const op = m.deployment_id || '';
      if (op !== operation) { operation = op; render(); }
    },
  };
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
  // A release may erase the disks first; '' leaves it to the region's
  // -release-erase.
  const erase = el('select', { id: 'release-erase', 'aria-label': 'Erase the disks on release' },
    el('option', { value: '' }, 'erase: region default'), ['none', 'quick', 'full'].map((v) => el('option', { value: v }, 'erase: ' + v)));
  const buttons = {
    commission: el('button', { type: 'button', id: 'commission', class: 'secondary',
      onclick: () => action('commission', undefined, 'Commissioning started.') }, 'Commission'),
    release: el('button', { type: 'button', id: 'release', class: 'secondary',
      onclick: () => action('release', erase.value ? { erase: erase.value } : undefined,
        erase.value === 'quick' || erase.value === 'full' ? 'Erasing the disks.' : 'Released.') }, 'Release'),
    'mark-failed': el('button', { type: 'button', id: 'mark-failed', class: 'secondary',
      onclick: () => action('mark-failed', withReason(), 'Marked failed.') }, 'Mark failed'),
    'mark-broken': el('button', { type: 'button', id: 'mark-broken', class: 'secondary',
      onclick: () => action('mark-broken', withReason(), 'Marked broken.') }, 'Mark broken'),
    'mark-fixed': el('button', { type: 'button', id: 'mark-fixed', class: 'secondary',
      onclick: () => action('mark-fixed', undefined, 'Marked fixed.') }, 'Mark fixed'),
  };
  const releaseButton = el('span', { class: 'toolbar-buttons' }, Object.values(buttons), erase, reason);

  const power = powerPanel(id, gen);
  const steps = stepsPanel(id, gen);
  const tags = tagsPanel(id, gen);
  tags.onSaved(show);
  const hardware = hardwarePanel(id, gen);
  const edit = editPanel(id, gen, () => reload());
  const del = deleteButton(id, gen);
  const events = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  append(view, [el('p', {}, el('a', { href: '#/machines' }, '← Machines')), title, details, steps.node,
    el('h2', {}, 'Actions'), deployForm, el('div', { class: 'toolbar' }, releaseButton, del.node, actionNote),
    el('h2', {}, 'Edit'), edit.node,
    el('h2', {}, 'Tags'), tags.node,
    el('h2', {}, 'Hardware'), hardware.node,
    el('h2', {}, 'Commissioning scripts'), commissioningPanel(id, gen),
    el('h2', {}, 'Power'), power.node,
    el('h2', {}, 'Volumes'), volumesPanel(id, gen),
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
    power.update(m);
    steps.update(m);
    tags.update(m);
    hardware.update(m);
    edit.update(m);
    del.update(m);
    deployForm.hidden = !can(m, 'deploy');
    for (const [name, b] of Object.entries(buttons)) b.hidden = !can(m, name);
    reason.hidden = !can(m, 'mark-failed') && !can(m, 'mark-broken');
    erase.hidden = !can(m, 'release');
    const rows = [
      ['Hostname', m.hostname], ['ID', m.id], ['Status', statusBadge(m.status)],
      ['Status reason', m.status_reason || ''], ['MACs', (m.macs || []).join(', ')], ['Tags', tagChips(m.tags)],
      ['Arch', m.arch], ['Origin', m.origin], ['Boot rack', m.boot_rack_id ? rackCell(m.boot_rack_id) : 'any'],
      ['OS/release', m.os ? m.os + '/' + m.release + (m.subarch ? ' (' + m.subarch + ')' : '') : ''],
      ['Image version', m.image_version_id || ''], ['Deploy rack', m.deploy_rack_id ? rackCell(m.deploy_rack_id) : ''],
      ['Preseed', m.preseed_name ? m.preseed_name + ' version ' + m.preseed_version : ''],
      ['Deploy started', m.deploy_started_at ? fmtTime(m.deploy_started_at) : ''],
      ['Created', fmtTime(m.created_at)], ['Updated', fmtTime(m.updated_at)], ['Version', String(m.version)],
    ];
    details.replaceChildren(el('dl', { class: 'details', id: 'machine-details' },
      rows.map(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, v)])));
  }

  // rackCell is a rack by name: the id until the name is known.
  function rackCell(rid) {
    const span = el('span', {}, rackLink(rid, ''));
    rackName(rid).then((name) => { if (current(gen) && name) span.replaceChildren(rackLink(rid, name)); });
    return span;
  }

  // The machine's own events (its state, power, tags, inventory) bring
  // it again; boot traffic and the agent's steps do not change it.
  const reload = reloadOn({ subject: 'machine/' + id, not: [...TELEMETRY, STEP_TYPE] }, async () => {
    const m = await api('GET', '/api/v1/machines/' + encodeURIComponent(id));
    if (current(gen)) show(m);
  });
  api('GET', '/api/v1/os').then((data) => {
    if (!current(gen)) return;
    oses = data.oses || [];
    osSelect.replaceChildren(...oses.map((o, i) => el('option', { value: String(i), disabled: !o.available },
      osLabel(o) + (o.available ? '' : ' — no online rack has it'))));
    if (oses.length === 0) {
      osSelect.append(el('option', { value: '' }, 'no rack has an OS image yet'));
      deployButton.disabled = true;
      deployButton.title = 'No rack has an OS image to deploy: import one first (OS registry).';
    }
  }).catch(showError);
  followLog(events, {
    url: (page) => '/api/v1/events?' + new URLSearchParams({ stream: 'machine/' + id, ...page }),
    items: (d) => d.events, start: '', filter: { subject: 'machine/' + id, not: TELEMETRY },
    render: eventRows, empty: 'No events yet.',
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
  // A release that takes a licence key has a form to set it: the key is
  // sent once (PUT …/licence-key, which a rack providing the release
  // validates first) and never shown back: the field is a password's,
  // emptied once sent, and the row says only whether a key is set. The
  // forms outlive the table's reloads, so a reload does not lose what is
  // being typed.
  const forms = new Map();
  const keyForm = (o) => {
    const k = o.os + '/' + o.release;
    const at = k + ' ' + o.arch + '/' + o.subarch; // a row: the key is the release's, for every arch
    if (forms.has(at)) {
      forms.get(at).querySelector('input').placeholder = o.licence_key_set ? 'a new key' : 'the key';
      return forms.get(at);
    }
    const input = el('input', { type: 'password', class: 'licence-key', name: 'key', autocomplete: 'off', spellcheck: 'false',
      size: 24, required: true, 'aria-label': 'Licence key of ' + k, placeholder: o.licence_key_set ? 'a new key' : 'the key' });
    const note = el('span', { class: 'notice licence-note', role: 'status' });
    const button = el('button', { type: 'submit', class: 'secondary licence-save' }, 'Set key');
    const form = el('form', { class: 'inline licence-form', autocomplete: 'off', 'data-os': k, onsubmit: async (ev) => {
      ev.preventDefault();
      clearError();
      note.textContent = '';
      const key = input.value;
      input.value = '';
      button.disabled = true;
      try {
        await api('PUT', '/api/v1/os/' + encodeURIComponent(o.os) + '/' + encodeURIComponent(o.release) + '/licence-key', { key });
        if (!current(gen)) return;
        note.textContent = 'Key set: a rack providing ' + k + ' accepted it.';
      } catch (e) {
        if (current(gen)) showError(e);
      } finally {
        button.disabled = false;
      }
    } }, input, ' ', button, ' ', note);
    forms.set(at, form);
    return form;
  };
  // What the racks last reported follows their capability reports and
  // liveness; asking them live is once, on request.
  const load = async () => {
    const data = await api('GET', '/api/v1/os' + (live ? '?live=true' : ''));
    if (!current(gen)) return;
    const rows = (data.oses || []).map((o) => el('tr', {},
      el('td', {}, o.os_title || o.os, el('div', { class: 'muted mono' }, o.os)),
      el('td', {}, o.title || o.release, el('div', { class: 'muted mono' }, o.release)),
      el('td', { class: 'mono' }, o.arch + '/' + o.subarch),
      el('td', {}, statusBadge(o.available ? 'available' : 'unavailable')),
      el('td', { class: 'licence' }, o.requires_licence_key
        ? [el('span', { class: 'licence-state' }, o.licence_key_set ? 'set' : 'needed, not set'), keyForm(o)] : ''),
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
  };
  if (live) load().catch(showError);
  else reloadOn({ type: ['rackplane.rack.capabilities_reported.', 'rackplane.rack.image_', 'rackplane.region.licence_key_set.', ...RACK_EVENTS] }, load);
}

// ---- events and audit -------------------------------------------------

// followLog reads the newest KEEP entries of a log (last=, so a long log
// is not paged through) and shows them newest first. Then it reads what
// is new from the cursor the API gave whenever an event matching
// o.filter arrives (o.filter: the follower's filter; o.refresh(again):
// what else asks for a read), or, with o.direct, takes the events the
// page's follower hands over as they are.
function followLog(target, o) {
  const gen = generation;
  let cursor = o.start;
  let items = [];
  let first = true;
  const seen = new Set(); // ids shown, so an entry read twice is shown once
  const key = o.key || ((x) => x.id);
  const note = el('p', { class: 'muted', role: 'status' });
  let drawTimer = null;
  onStop(() => clearTimeout(drawTimer));
  const draw = () => {
    drawTimer = null;
    if (!current(gen)) return;
    note.textContent = 'Newest first, the last ' + KEEP + ' at most; updated ' + fmtTime(new Date().toISOString()) + '.';
    target.replaceChildren(note, table(o.headers || eventHeaders, items.slice().reverse().map(o.render), o.empty));
  };
  const take = (page) => {
    let added = 0;
    for (const x of page) {
      const k = String(key(x));
      if (seen.has(k)) continue;
      seen.add(k);
      items.push(x);
      added++;
    }
    if (items.length > KEEP) {
      for (const x of items.slice(0, items.length - KEEP)) seen.delete(String(key(x)));
      items = items.slice(items.length - KEEP);
    }
    return added;
  };
  const read = async () => {
    let added = 0;
    for (;;) {
      const data = await api('GET', o.url(first ? { last: String(KEEP) } : { limit: '1000', after: cursor }));
      if (!current(gen)) return;
      const page = o.items(data) || [];
      added += take(page);
      if (data.next !== undefined && data.next !== null && String(data.next) !== '') cursor = String(data.next);
      if (first || page.length < 1000) break;
    }
    if (added > 0 || first) draw();
    first = false;
  };
  if (o.direct) {
    // Events the follower hands over before the first read are kept for
    // after it; the ids drop those the read had too.
    let pending = [];
    const again = reloadOn(() => false, async () => {
      await read();
      if (current(gen) && pending.length) { const p = pending; pending = []; if (take(p)) draw(); }
    });
    live(o.filter, (e) => {
      if (e === null) { again(); return; } // the follower started over: read on from the cursor
      if (first) { pending.push(e); return; }
      if (take([e]) && drawTimer === null) drawTimer = setTimeout(draw, 100);
    });
    return;
  }
  const again = reloadOn(o.filter, read);
  if (o.refresh) o.refresh(again);
}

const eventHeaders = ['Time', 'Type', 'Subject', 'Source', 'Actor', 'Data'];

function eventRows(e) {
  return el('tr', { 'data-event-id': e.id }, eventCells(e));
}

function eventsView(view) {
  const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  append(view, [el('h1', {}, 'Events'),
    el('p', { class: 'hint' }, 'Messages the region refused are not in this log: ',
      el('a', { href: '#/rejected', id: 'events-rejected-link' }, 'refused messages'), '.'),
    list]);
  followLog(list, {
    url: (page) => '/api/v1/events?' + new URLSearchParams(page),
    items: (d) => d.events, start: '', filter: {}, direct: true, render: eventRows, empty: 'The log is empty.',
  });
}

// AUDIT_REFUSED_POLL_MS: the audit log has no wait and no event of its
// own. What the API changes is an event with the caller as actor, which
// brings the new entries (read once soon and once more later, as the
// entry is written just after the change's event); a request the API
// refused changes nothing and is no event, so a slow timer brings those.
const AUDIT_REFUSED_POLL_MS = 30000;

function auditView(view) {
  const gen = generation;
  const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  append(view, [el('h1', {}, 'Audit log'), list]);
  followLog(list, {
    url: (page) => '/api/v1/audit?' + new URLSearchParams(page),
    items: (d) => d.entries, start: '0', empty: 'Nothing audited yet.', filter: { actor: true },
    key: (a) => a.id,
    refresh: (again) => {
      let later = null;
      live({ actor: true }, () => { clearTimeout(later); later = setTimeout(() => { if (current(gen)) again(); }, 2000); });
      const slow = setInterval(again, AUDIT_REFUSED_POLL_MS);
      onStop(() => { clearTimeout(later); clearInterval(slow); });
    },
    headers: ['Time', 'Actor', 'Action', 'Target', 'Outcome', 'Before → after', 'Request'],
    render: (a) => el('tr', { 'data-audit-id': String(a.id) },
      timeCell(a.at), el('td', {}, a.actor), el('td', { class: 'mono' }, a.action), el('td', { class: 'mono' }, a.target),
      el('td', {}, statusBadge(a.outcome), ' ', String(a.status), a.detail ? el('div', { class: 'muted' }, a.detail) : null),
      el('td', { class: 'data-cell' }, a.before || a.after
        ? dataDetails(short(a.before, 60) + ' → ' + short(a.after, 60), { before: a.before, after: a.after }) : ''),
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
    if (!location.hash || location.hash === '#') location.hash = '#/dashboard';
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

function route() {
  if (!token()) { signOut(''); return; }
  stopView();
  clearError();
  $('login').hidden = true;
  $('nav').hidden = false;
  startFollowing();
  const view = $('view');
  view.replaceChildren();
  view.hidden = false;
  const { parts, query } = parseHash();
  const name = parts[0] || 'dashboard';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === name);
  if (name === 'machines' && parts[1]) { machineView(view, parts[1]); return; }
  // A screen gets the rest of the address too: #/racks/ID is the rack's page.
  (views[name] || views.dashboard)(view, query, parts.slice(1));
}

start();
