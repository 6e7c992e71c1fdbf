// Rackplane operator UI: the subnets of managed DHCP (#/subnets) and a
// subnet's page (#/subnets/ID) with its edit form and the leases its rack
// reported. An edit carries the version it was made on (If-Match): when
// someone changed the subnet meanwhile the region refuses it (412), and
// the page shows the current subnet to edit again.
import {
  api, append, clearError, current, el, fmtTime,
  generation, registerView, reloadOn, showError, table, timeCell,
} from './core.js';

registerView('subnets', subnetsView);

function subnetsView(view, query, parts) {
  if (parts && parts[0]) { subnetView(view, parts[0]); return; }
  listView(view);
}

const rangesText = (s) => (s.ranges || []).map((r) => r.start + '–' + r.end).join(', ');
const words = (s) => s.split(/[\s,]+/).filter(Boolean);

// parseRanges reads "10.0.0.100-10.0.0.199, …" (a dash or an en dash).
function parseRanges(s) {
  return words(s).map((r) => {
    const [start, end] = r.split(/[-–]/);
    return { start: (start || '').trim(), end: (end || start || '').trim() };
  });
}

// until is how long until a time to come, as ago says how long since.
function until(s) {
  const sec = Math.round((new Date(s).getTime() - Date.now()) / 1000);
  if (isNaN(sec)) return '';
  if (sec <= 0) return 'now';
  if (sec < 120) return 'in ' + sec + 's';
  if (sec < 7200) return 'in ' + Math.round(sec / 60) + 'm';
  if (sec < 172800) return 'in ' + Math.round(sec / 3600) + 'h';
  return 'in ' + Math.round(sec / 86400) + 'd';
}

function leaseTime(n) {
  if (!n) return 'rack default';
  if (n % 86400 === 0) return n / 86400 + 'd';
  if (n % 3600 === 0) return n / 3600 + 'h';
  if (n % 60 === 0) return n / 60 + 'm';
  return n + 's';
}

// fields are the inputs of a subnet's settings, for the create and the
// edit forms; values(all) reads them as the API takes them (all: every
// setting, so that an emptied one is cleared).
function fields(prefix, s) {
  s = s || {};
  const input = (name, props) => el('input', { id: prefix + '-' + name, spellcheck: 'false', ...props });
  const f = {
    cidr: input('cidr', { placeholder: '10.20.0.0/24', size: 18, value: s.cidr || '' }),
    iface: input('interface', { placeholder: '(the rack\'s)', size: 10, value: s.interface || '' }),
    ranges: input('ranges', { placeholder: '10.20.0.100-10.20.0.199', size: 30, value: (s.ranges || []).map((r) => r.start + '-' + r.end).join(', ') }),
    router: input('router', { placeholder: '10.20.0.1', size: 14, value: s.router || '' }),
    dns: input('dns', { placeholder: '10.20.0.1', size: 20, value: (s.dns_servers || []).join(', ') }),
    domain: input('domain', { placeholder: 'lab.example', size: 20, value: s.domain || '' }),
    lease: input('lease', { type: 'number', min: '60', placeholder: 'default', size: 8, value: s.lease_seconds ? String(s.lease_seconds) : '' }),
  };
  return {
    f,
    labels: [el('label', {}, 'Interface', f.iface), el('label', {}, 'Dynamic ranges', f.ranges),
      el('label', {}, 'Router', f.router), el('label', {}, 'DNS servers', f.dns), el('label', {}, 'Domain', f.domain),
      el('label', {}, 'Lease seconds', f.lease)],
    values(all) {
      const v = {};
      const set = (k, x, empty) => { if (all || !empty) v[k] = x; };
      set('interface', f.iface.value.trim(), !f.iface.value.trim());
      set('ranges', parseRanges(f.ranges.value), !f.ranges.value.trim());
      set('router', f.router.value.trim(), !f.router.value.trim());
      set('dns_servers', words(f.dns.value), !f.dns.value.trim());
      set('domain', f.domain.value.trim(), !f.domain.value.trim());
      set('lease_seconds', Number(f.lease.value || 0), !f.lease.value.trim());
      return v;
    },
  };
}

function listView(view) {
  const gen = generation;
  let racks = {};
  const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const rack = el('select', { id: 'subnet-rack', required: true });
  const form = fields('subnet');
  const created = el('span', { id: 'subnet-created', class: 'notice', role: 'status' });
  const createForm = el('form', { class: 'inline', id: 'create-subnet', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    created.textContent = '';
    const body = { rack_id: rack.value, cidr: form.f.cidr.value.trim(), ...form.values(false) };
    try {
      const s = await api('POST', '/api/v1/subnets', body);
      if (!current(gen)) return;
      for (const i of Object.values(form.f)) i.value = '';
      created.textContent = 'Created subnet ' + s.cidr + '.';
      await load();
    } catch (e) { showError(e); }
  } },
  el('label', {}, 'Rack', rack), el('label', {}, 'CIDR', form.f.cidr), form.labels,
  el('button', { type: 'submit', id: 'subnet-create' }, 'Create subnet'), created);

  append(view, [el('h1', {}, 'Subnets'),
    el('p', { class: 'hint' }, 'The subnets racks serve in managed DHCP mode: each rack hands out addresses of its own subnets, ' +
      'and keeps serving them from its cache when the region is away.'),
    list, el('h2', {}, 'Create a subnet'), createForm]);

  async function load() {
    const [rs, data] = await Promise.all([api('GET', '/api/v1/racks'), api('GET', '/api/v1/subnets')]);
    if (!current(gen)) return;
    racks = Object.fromEntries(rs.racks.map((r) => [r.id, r]));
    if (!rack.options.length) {
      rack.replaceChildren(...rs.racks.map((r) => el('option', { value: r.id }, r.name + (r.online ? '' : ' (offline)'))));
      if (!rs.racks.length) rack.append(el('option', { value: '' }, 'no rack has joined'));
    }
    const rows = (data.subnets || []).map((s) => el('tr', { 'data-subnet-id': s.id },
      el('td', { class: 'mono' }, el('a', { href: '#/subnets/' + encodeURIComponent(s.id) }, s.cidr)),
      el('td', {}, racks[s.rack_id] ? el('a', { href: '#/racks/' + encodeURIComponent(s.rack_id) }, racks[s.rack_id].name) : el('span', { class: 'mono' }, s.rack_id)),
      el('td', { class: 'mono' }, s.interface || ''),
      el('td', { class: 'mono' }, rangesText(s)),
      el('td', { class: 'mono' }, s.router || ''),
      el('td', { class: 'mono' }, (s.dns_servers || []).join(', ')),
      el('td', {}, leaseTime(s.lease_seconds)),
      el('td', { class: 'num' }, String((s.reservations || []).length)),
      el('td', {}, el('a', { href: '#/subnets/' + encodeURIComponent(s.id), class: 'leases-link' }, 'Leases, edit…'))));
    list.replaceChildren(table(['CIDR', 'Rack', 'Interface', 'Dynamic ranges', 'Router', 'DNS', 'Lease time', 'Reservations', ''], rows,
      'No subnet yet: create one below for a rack in managed DHCP mode.'));
  }
  load().catch(showError);
}

function subnetView(view, id) {
  const gen = generation;
  const path = '/api/v1/subnets/' + encodeURIComponent(id);
  let subnet = null;
  let rackName = '';
  const title = el('h1', {}, 'Subnet');
  const details = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const editBox = el('div', {});
  const saved = el('span', { id: 'subnet-saved', class: 'notice', role: 'status' });
  const stale = el('p', { id: 'subnet-stale', class: 'error', role: 'alert', hidden: true });
  const leases = el('div', { id: 'subnet-leases' }, el('p', { class: 'muted' }, 'Loading…'));

  const confirmYes = el('button', { type: 'button', id: 'subnet-confirm-yes' }, 'Yes, delete it');
  const confirmNo = el('button', { type: 'button', id: 'subnet-confirm-no', class: 'secondary' }, 'Cancel');
  const confirmText = el('span', {});
  const confirmBox = el('div', { id: 'subnet-confirm', class: 'confirm', role: 'alertdialog', hidden: true }, confirmText, ' ', confirmYes, ' ', confirmNo);
  confirmNo.addEventListener('click', () => { confirmBox.hidden = true; });
  confirmYes.addEventListener('click', async () => {
    confirmBox.hidden = true;
    try {
      await api('DELETE', path, undefined, { 'If-Match': '"' + subnet.version + '"' });
      if (current(gen)) location.hash = '#/subnets';
    } catch (e) { if (current(gen)) { showError(e); await load(); } }
  });
  const deleteButton = el('button', { type: 'button', id: 'subnet-delete', class: 'secondary', onclick: () => {
    clearError();
    confirmText.textContent = 'Delete subnet ' + subnet.cidr + ' of rack ' + (rackName || subnet.rack_id) + '? The rack stops handing out ' +
      'its addresses; leases already given run until they expire.';
    confirmBox.hidden = false;
    confirmNo.focus();
  } }, 'Delete subnet…');

  append(view, [el('p', {}, el('a', { href: '#/subnets' }, '← Subnets')), title, details,
    el('h2', {}, 'Current leases'), leases,
    el('h2', {}, 'Edit'), stale, editBox,
    el('div', { class: 'toolbar' }, deleteButton), confirmBox]);

  function show(s) {
    subnet = s;
    title.textContent = 'Subnet ' + s.cidr;
    const rows = [
      ['CIDR', el('span', { class: 'mono' }, s.cidr)], ['ID', el('span', { class: 'mono' }, s.id)],
      ['Rack', el('a', { href: '#/racks/' + encodeURIComponent(s.rack_id) }, rackName || s.rack_id)],
      ['Interface', s.interface || '(the rack\'s DHCP interface)'], ['Dynamic ranges', el('span', { class: 'mono' }, rangesText(s) || 'none')],
      ['Router', s.router || ''], ['DNS servers', (s.dns_servers || []).join(', ')], ['Domain', s.domain || ''],
      ['Search domains', (s.search_domains || []).join(', ')], ['Lease time', leaseTime(s.lease_seconds)],
      ['Reservations', (s.reservations || []).map((r) => el('div', { class: 'mono' }, r.mac + ' → ' + r.ip + (r.hostname ? ' (' + r.hostname + ')' : '')))],
      ['Version', String(s.version)], ['Updated', fmtTime(s.updated_at)], ['Created', fmtTime(s.created_at)],
    ];
    const none = (v) => (v === '' || (Array.isArray(v) && v.length === 0) ? el('span', { class: 'muted' }, 'none') : v);
    details.replaceChildren(el('dl', { class: 'details', id: 'subnet-details' },
      rows.map(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, none(v))])));
    const form = fields('edit', s);
    const version = s.version;
    editBox.replaceChildren(el('form', { class: 'inline', id: 'edit-subnet', onsubmit: async (ev) => {
      ev.preventDefault();
      clearError();
      saved.textContent = '';
      stale.hidden = true;
      try {
        const after = await api('PATCH', path, form.values(true), { 'If-Match': '"' + version + '"' });
        if (!current(gen)) return;
        show(after);
        saved.textContent = 'Saved (version ' + after.version + ').';
      } catch (e) {
        if (!current(gen)) return;
        if (e.status === 412) {
          await load();
          stale.textContent = 'Not saved: the subnet changed since this page loaded it (' + e.message + '). ' +
            'The page now shows the current subnet: make your change again.';
          stale.hidden = false;
          return;
        }
        showError(e);
      }
    } }, form.labels, el('button', { type: 'submit', id: 'subnet-save' }, 'Save'), saved));
  }

  async function load() {
    const s = await api('GET', path);
    if (!current(gen)) return;
    if (!rackName) {
      try { rackName = (await api('GET', '/api/v1/racks/' + encodeURIComponent(s.rack_id))).name; } catch (e) { rackName = ''; }
      if (!current(gen)) return;
    }
    show(s);
  }

  // shown grows by 100 with each More; the API gives 1000 at most a
  // page, so past that the leases are read a page after the other.
  let shown = 100;
  async function loadLeases() {
    let list = [];
    let next = '';
    do {
      const q = new URLSearchParams({ limit: String(Math.min(shown - list.length, 1000)) });
      if (next) q.set('after', next);
      const data = await api('GET', path + '/leases?' + q);
      if (!current(gen)) return;
      list = list.concat(data.leases || []);
      next = data.next;
    } while (next && list.length < shown);
    const rows = list.map((l) => el('tr', { 'data-mac': l.mac },
      el('td', { class: 'mono' }, l.ip), el('td', { class: 'mono' }, l.mac), el('td', {}, l.hostname || ''),
      el('td', {}, l.machine_id ? el('a', { href: '#/machines/' + encodeURIComponent(l.machine_id) }, l.machine_hostname) : el('span', { class: 'muted' }, 'unknown')),
      el('td', { class: 'mono time', title: fmtTime(l.expires) }, until(l.expires)),
      timeCell(l.at), el('td', { class: 'num' }, String(l.count))));
    leases.replaceChildren(table(['Address', 'MAC', 'Hostname', 'Machine', 'Expires', 'Last given', 'Times given'], rows,
      'No current lease: the rack has reported none of this subnet\'s addresses, or they expired.'));
    if (next) {
      leases.append(el('button', { type: 'button', class: 'secondary', onclick: () => { shown += 100; loadLeases().catch(showError); } }, 'More'));
    }
  }

  load().catch(showError);
  // Racks report their leases as events: the list loads again on each.
  reloadOn({ type: 'rackplane.rack.dhcp_leases_changed.' }, loadLeases);
}
