// Rackplane operator UI: external storage. The storage providers racks
// report (usable or not, with why), machines' volumes with the actions
// their state allows, and a form to create one. The API lists volumes per
// machine only, so the storage screen reads them machine by machine; a
// machine's own page shows its volumes through volumesPanel.
import {
  api, append, clearError, current, el, fmtTime, generation, registerView, showError, statusBadge, table, timeCell,
} from './core.js';
import { confirmTwice, field, say } from './kit.js';

registerView('storage', storageView);

const MACHINE_PAGES = 1;      // pages of 1000 machines the storage screen reads
const VOLUME_READS = 4;       // machines' volume lists read at once

// fmtMiB is a volume size as the API counts it, in MiB, with a larger
// unit when it reads better.
function fmtMiB(n) {
  if (typeof n !== 'number') return '';
  if (n >= 1024 && n % 1024 === 0) return (n / 1024) + ' GiB';
  return n + ' MiB';
}

// actionsFor is what the page offers for a volume in its state: the
// rack's own checks (rack/storage precheck) refuse the rest anyway.
// optional is what the provider has scripts for on the volume's rack.
export function actionsFor(v, optional) {
  const snap = (optional || []).includes('snapshot');
  const close = (optional || []).includes('close');
  const out = new Set();
  switch (v.state) {
    case 'created':
    case 'detached':
      ['attach', 'grow', 'verify', 'remove'].forEach((a) => out.add(a));
      if (snap) out.add('snapshot');
      break;
    case 'attached':
      ['detach', 'grow', 'verify'].forEach((a) => out.add(a));
      if (snap) out.add('snapshot');
      break;
    case 'unknown':
      ['verify', 'detach', 'remove'].forEach((a) => out.add(a));
      break;
    case 'creating':
    case 'none':
      out.add('verify');
      break;
    default: // removed
  }
  // An open volume may be in use: it is closed before detach or remove.
  if (v.open) {
    out.delete('detach');
    out.delete('remove');
    if (close) out.add('close');
  }
  return out;
}

// fresher keeps the volumes the rack's replies returned. The region's
// list is its projection of the rack's events, which may arrive after the
// reply: until it has caught up, the reply is the newer word.
function fresher() {
  const seen = new Map();
  const newer = (a, b) => (b && new Date(b.updated_at) > new Date(a.updated_at) ? b : a);
  return {
    keep(v) { if (v && v.id) seen.set(v.id, v); },
    // merge lists vols with the replies' newer copies, and the volumes a
    // reply made for the machines listed that the list lacks yet.
    merge(vols, machineIDs, withRemoved) {
      const out = vols.map((v) => newer(v, seen.get(v.id)));
      const listed = new Set(vols.map((v) => v.id));
      for (const v of seen.values()) if (!listed.has(v.id) && machineIDs.has(v.machine_id)) out.push(v);
      return withRemoved ? out : out.filter((v) => v.state !== 'removed');
    },
  };
}

// providerIndex maps provider and rack to what that rack says of it.
async function providerIndex() {
  const data = await api('GET', '/api/v1/storage-providers');
  const byRack = {};
  for (const p of data.storage_providers || []) {
    for (const r of p.racks || []) byRack[p.name + '\n' + r.rack_id] = r;
  }
  return { list: data.storage_providers || [], byRack };
}

// volumeRows draws volumes with their actions; every action reloads
// through done. machines maps machine ids to hostnames when the table
// spans machines.
function volumeRows(vols, providers, gen, done, machines) {
  return vols.map((v) => {
    const onRack = providers.byRack[v.provider + '\n' + v.rack_id];
    const can = actionsFor(v, onRack ? onRack.optional_actions : []);
    const note = el('div', { class: 'small muted volume-note', role: 'status' });
    const buttons = [];
    const run = async (what, method, suffix, body, doneText) => {
      clearError();
      for (const b of buttons) b.disabled = true;
      note.textContent = 'Running ' + what + ' on the rack…';
      try {
        const nv = await api(method, '/api/v1/volumes/' + encodeURIComponent(v.id) + suffix, body);
        if (!current(gen)) return;
        note.textContent = doneText(nv);
        await done(note.textContent, nv);
      } catch (e) {
        if (!current(gen)) return;
        note.textContent = '';
        showError(e);
        for (const b of buttons) b.disabled = false;
      }
    };
    const plain = (a, label, doneText) => {
      const b = el('button', { type: 'button', class: 'secondary ' + a, onclick: () => run(a, 'POST', '/' + a, undefined, doneText) }, label);
      buttons.push(b);
      return b;
    };
    const acts = [];
    if (can.has('grow')) {
      const size = el('input', { type: 'number', class: 'grow-size', min: String(v.size_mib + 1), value: String(v.size_mib * 2),
        'aria-label': 'new size in MiB', size: 7 });
      const b = el('button', { type: 'button', class: 'secondary grow', onclick: () => {
        const n = Number(size.value);
        run('grow', 'POST', '/grow', { new_size_mib: n }, (nv) => 'Grown to ' + fmtMiB(nv.size_mib) + '.');
      } }, 'Grow');
      buttons.push(b);
      acts.push(el('span', { class: 'act' }, size, ' MiB ', b));
    }
    if (can.has('snapshot')) {
      const name = el('input', { class: 'snapshot-name', size: 12, placeholder: 'snapshot name', spellcheck: 'false',
        value: 'snap-' + new Date().toISOString().slice(0, 10), 'aria-label': 'snapshot name' });
      const b = el('button', { type: 'button', class: 'secondary snapshot', onclick: () => {
        run('snapshot', 'POST', '/snapshot', { name: name.value.trim() }, () => 'Snapshot ' + name.value.trim() + ' taken.');
      } }, 'Snapshot');
      buttons.push(b);
      acts.push(el('span', { class: 'act' }, name, ' ', b));
    }
    if (can.has('attach')) acts.push(plain('attach', 'Attach', (nv) => 'Attached' + (nv.device ? ' as ' + nv.device : '') + '.'));
    if (can.has('detach')) acts.push(plain('detach', 'Detach', () => 'Detached.'));
    if (can.has('close')) acts.push(plain('close', 'Close', () => 'Closed.'));
    if (can.has('verify')) acts.push(plain('verify', 'Verify', () => 'Verified.'));
    if (can.has('remove')) {
      acts.push(confirmTwice('Delete', 'Delete volume ' + (v.name || v.id) + '? The provider removes it and its data.',
        () => run('remove', 'DELETE', '', undefined, () => 'Deleted.'), 'delete-volume'));
    }
    const last = v.last_action
      ? el('div', {}, statusBadge(v.last_ok ? 'success' : 'failure'), ' ', v.last_action,
        v.last_error ? el('div', { class: 'bad small' }, v.last_error) : null,
        (v.last_output_tail || []).length ? el('pre', { class: 'output-tail small' }, v.last_output_tail.join('\n')) : null)
      : '';
    return el('tr', { 'data-volume-id': v.id, 'data-state': v.state },
      machines ? el('td', {}, el('a', { href: '#/machines/' + encodeURIComponent(v.machine_id) }, machines[v.machine_id] || v.machine_id)) : null,
      el('td', { class: 'mono' }, v.name || v.id),
      el('td', {}, v.provider, el('div', { class: 'small muted' }, onRack ? 'rack ' + onRack.rack_name : 'rack ' + v.rack_id)),
      el('td', { class: 'size' }, fmtMiB(v.size_mib)),
      el('td', { class: 'state' }, statusBadge(v.state), v.open ? ' open' + (v.open_exclusive ? ' (exclusive)' : '') : ''),
      el('td', { class: 'mono' }, v.device || '', (v.uris || []).map((u) => el('div', { class: 'small' }, u))),
      el('td', { class: 'snapshots' }, (v.snapshots || []).map((s) => el('div', { title: fmtTime(s.taken_at) }, s.name))),
      el('td', { class: 'last-action' }, last),
      timeCell(v.updated_at),
      el('td', { class: 'actions' }, acts.length ? el('div', { class: 'volume-actions' }, acts) : el('span', { class: 'muted' }, 'none'), note));
  });
}

const volumeHeaders = ['Volume', 'Provider', 'Size', 'State', 'Device', 'Snapshots', 'Last action', 'Updated', 'Actions'];

// createForm makes a volume for the machine machineSelect names, with a
// provider some rack can use now and that provider's parameters.
function createForm(providers, machineSelect, gen, done) {
  const usable = (p) => (p.racks || []).some((r) => r.online && r.valid);
  const provider = el('select', { id: 'new-volume-provider', required: true },
    providers.list.map((p) => el('option', { value: p.name, disabled: !usable(p) },
      p.name + (usable(p) ? '' : ' — ' + (p.racks || []).map((r) => r.rack_name + ': ' + (r.online ? r.reason || 'not usable' : 'offline')).join('; ')))));
  const size = el('input', { id: 'new-volume-size', type: 'number', min: '1', required: true, value: '1024', size: 8 });
  const params = el('div', { class: 'toolbar params', id: 'new-volume-params' });
  const showParams = () => {
    const p = providers.list.find((x) => x.name === provider.value);
    const seen = new Set();
    const inputs = [];
    for (const r of p ? p.racks || [] : []) {
      for (const pa of r.parameters || []) {
        if (seen.has(pa.name)) continue;
        seen.add(pa.name);
        inputs.push(field(pa.name, el('input', { name: pa.name, class: 'volume-param', 'data-param': pa.name, spellcheck: 'false', size: 24 }),
          pa.description));
      }
    }
    params.replaceChildren(...inputs);
  };
  provider.addEventListener('change', showParams);
  const firstUsable = providers.list.find(usable);
  if (firstUsable) provider.value = firstUsable.name;
  showParams();
  const submit = el('button', { type: 'submit', id: 'create-volume-submit', disabled: !firstUsable }, 'Create volume');
  const note = el('span', { class: 'notice', role: 'status' });
  const form = el('form', { id: 'create-volume', class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    const machine = machineSelect.value;
    if (!machine) return;
    const body = { provider: provider.value, size_mib: Number(size.value) };
    const ps = {};
    for (const i of params.querySelectorAll('input.volume-param')) if (i.value.trim()) ps[i.dataset.param] = i.value.trim();
    if (Object.keys(ps).length) body.parameters = ps;
    submit.disabled = true;
    note.textContent = 'The rack is creating the volume…';
    try {
      const v = await api('POST', '/api/v1/machines/' + encodeURIComponent(machine) + '/volumes', body);
      if (!current(gen)) return;
      note.textContent = 'Created ' + (v.name || v.id) + ' (' + fmtMiB(v.size_mib) + ').';
      await done('', v);
    } catch (e) {
      if (!current(gen)) return;
      note.textContent = '';
      showError(e);
    } finally { submit.disabled = !firstUsable; }
  } },
  el('div', { class: 'toolbar' }, machineSelect.tagName === 'SELECT' ? field('Machine', machineSelect) : null,
    field('Provider', provider), field('Size (MiB)', size)),
  params, el('div', { class: 'toolbar' }, submit, note));
  if (!firstUsable) {
    append(form, [el('p', { class: 'muted' }, providers.list.length
      ? 'No online rack can use any of its providers now; see the providers above.'
      : 'No rack reports a storage provider. Install one under a rack\'s -storage-search-path.')]);
  }
  return form;
}

// volumesPanel is a machine's volumes and a form to create one, for the
// machine's page.
export function volumesPanel(machineID, gen) {
  const node = el('div', { id: 'machine-volumes' }, el('p', { class: 'muted' }, 'Loading…'));
  const list = el('div', {});
  const formSlot = el('div', {});
  const fixed = el('input', { type: 'hidden', value: machineID });
  const result = el('p', { class: 'notice', role: 'status', hidden: true });
  const fresh = fresher();
  let providers = { list: [], byRack: {} };
  async function load(message) {
    const data = await api('GET', '/api/v1/machines/' + encodeURIComponent(machineID) + '/volumes');
    if (!current(gen)) return;
    const vols = fresh.merge(data.volumes || [], new Set([machineID]), false);
    list.replaceChildren(table(volumeHeaders, volumeRows(vols, providers, gen, acted), 'No volumes.'));
    if (message !== undefined) say(result, message);
  }
  // acted shows what the rack answered (fresher).
  async function acted(message, v) {
    fresh.keep(v);
    await load(message);
  }
  (async () => {
    providers = await providerIndex();
    if (!current(gen)) return;
    node.replaceChildren(result, list, el('h3', {}, 'Create a volume'), formSlot);
    formSlot.replaceChildren(createForm(providers, fixed, gen, acted));
    await load();
  })().catch((e) => { if (current(gen)) showError(e); });
  return node;
}

function storageView(view, query) {
  const gen = generation;
  const only = query.get('machine') || '';
  const removed = query.get('removed') === 'true';
  const provList = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const volList = el('div', { id: 'volumes' }, el('p', { class: 'muted' }, 'Loading…'));
  const result = el('p', { id: 'storage-result', class: 'notice', role: 'status', hidden: true });
  const formSlot = el('div', {});
  const machineSelect = el('select', { id: 'new-volume-machine', required: true });
  const showRemoved = el('input', { type: 'checkbox', id: 'show-removed', checked: removed, onchange: () => {
    const q = new URLSearchParams();
    if (only) q.set('machine', only);
    if (showRemoved.checked) q.set('removed', 'true');
    location.hash = '#/storage' + (q.toString() ? '?' + q : '');
  } });
  append(view, [el('h1', {}, 'Storage'),
    el('h2', {}, 'Storage providers'), provList,
    el('h2', {}, 'Volumes'),
    el('div', { class: 'toolbar' }, el('label', { class: 'check' }, showRemoved, ' show removed volumes'),
      only ? el('a', { href: '#/storage' }, 'All machines') : null),
    result, volList,
    el('h2', {}, 'Create a volume'), formSlot]);

  let providers = { list: [], byRack: {} };
  let machines = [];
  const fresh = fresher();

  function renderProviders() {
    const rows = [];
    for (const p of providers.list) {
      for (const r of p.racks || []) {
        rows.push(el('tr', { 'data-provider': p.name, 'data-rack-id': r.rack_id },
          el('td', {}, p.name), el('td', {}, r.rack_name),
          el('td', {}, statusBadge(r.online ? 'online' : 'offline')),
          el('td', {}, r.valid ? statusBadge('available') : [statusBadge('unavailable'), el('div', { class: 'small bad' }, r.reason || '')]),
          el('td', {}, (r.parameters || []).map((pa) => el('div', {}, el('span', { class: 'mono' }, pa.name), pa.description ? ' — ' + pa.description : ''))),
          el('td', { class: 'mono' }, (r.optional_actions || []).join(', ') || 'none'),
          el('td', {}, String(r.volumes))));
      }
    }
    provList.replaceChildren(table(['Provider', 'Rack', 'Rack status', 'Usable', 'Parameters', 'Optional actions', 'Volumes'], rows,
      'No rack reports a storage provider. A provider is a directory of ExtStorage scripts under a rack\'s -storage-search-path.'));
  }

  async function loadVolumes(message) {
    const names = Object.fromEntries(machines.map((m) => [m.id, m.hostname]));
    const wanted = only ? machines.filter((m) => m.id === only) : machines;
    const all = [];
    let i = 0;
    const worker = async () => {
      while (i < wanted.length) {
        const m = wanted[i++];
        const data = await api('GET', '/api/v1/machines/' + encodeURIComponent(m.id) + '/volumes' + (removed ? '?removed=true' : ''));
        all.push(...(data.volumes || []));
      }
    };
    await Promise.all(Array.from({ length: VOLUME_READS }, worker));
    if (!current(gen)) return;
    const vols = fresh.merge(all, new Set(wanted.map((m) => m.id)), removed);
    vols.sort((a, b) => (names[a.machine_id] || '').localeCompare(names[b.machine_id] || '') || (a.created_at < b.created_at ? -1 : 1));
    volList.replaceChildren(table(['Machine', ...volumeHeaders], volumeRows(vols, providers, gen, acted, names),
      only ? 'This machine has no volumes.' : 'No machine has a volume.'));
    if (message !== undefined) say(result, message);
  }

  async function reload(message) {
    providers = await providerIndex();
    if (!current(gen)) return;
    renderProviders();
    await loadVolumes(message);
  }

  // acted shows what the rack answered (fresher).
  async function acted(message, v) {
    fresh.keep(v);
    await reload(message);
  }

  (async () => {
    providers = await providerIndex();
    if (!current(gen)) return;
    renderProviders();
    let after = '';
    for (let page = 0; page < MACHINE_PAGES; page++) {
      const q = new URLSearchParams({ limit: '1000' });
      if (after) q.set('after', after);
      const data = await api('GET', '/api/v1/machines?' + q);
      if (!current(gen)) return;
      machines = machines.concat(data.machines || []);
      after = data.next;
      if (!after) break;
    }
    machineSelect.replaceChildren(...machines.map((m) => el('option', { value: m.id, selected: m.id === only }, m.hostname)));
    formSlot.replaceChildren(machines.length ? createForm(providers, machineSelect, gen, acted)
      : el('p', { class: 'muted' }, 'There is no machine to give a volume to yet.'));
    await loadVolumes('');
  })().catch((e) => { if (current(gen)) showError(e); });
}
