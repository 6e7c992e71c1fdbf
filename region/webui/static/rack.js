// Rackplane operator UI: a rack's page (#/racks/ID). What the rack is and
// can do, the machines that boot from it, and its image store: versions,
// imports with their progress, deletion, garbage collection (a dry run
// first) and scrub. The image store is asked through the region, which
// asks the rack: its actions are offered only while the rack is online.
import {
  RACK_EVENTS, ago, api, append, clearError, current, el, every, fmtBytes, fmtTime,
  generation, matches, registerView, reloadOn, showError, statusBadge, table, timeCell,
} from './core.js';
import { confirmTwice } from './kit.js';

const IMPORT_POLL_MS = 1000;

registerView('rack', rackView);

// imagePath is the address of a version of rack id: a version id has
// slashes, each part escaped on its own.
function imagePath(id, version) {
  return '/api/v1/racks/' + encodeURIComponent(id) + '/images/' + version.split('/').map(encodeURIComponent).join('/');
}

function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

// importBody is the request of an import of kind from the form's values.
function importBody(kind, source, arches, releases, versions) {
  const list = (s) => s.split(/[\s,]+/).filter(Boolean);
  switch (kind) {
    case 'dir': return { dir: source };
    case 'url': return { url: source };
    case 'debian_netboot': return { debian_netboot: list(arches).length ? { arches: list(arches) } : {} };
    case 'system_bootloaders': return { system_bootloaders: true };
    case 'simplestreams': {
      const ss = /^https?:\/\//.test(source) ? { url: source } : { dir: source };
      const filters = {};
      if (list(arches).length) filters.arch = list(arches);
      if (list(releases).length) filters.release = list(releases);
      if (Object.keys(filters).length) ss.filters = filters;
      if (versions) ss.versions = Number(versions);
      return { simplestreams: ss };
    }
  }
  return {};
}

// percent is how far an import is: by bytes, else by files.
function percent(im) {
  if (im.state === 'succeeded') return 100;
  if (im.bytes_total > 0) return Math.min(100, Math.floor(100 * im.bytes_done / im.bytes_total));
  if (im.files_total > 0) return Math.min(100, Math.floor(100 * im.files_done / im.files_total));
  return 0;
}

function rackView(view, query, parts) {
  const gen = generation;
  const id = parts[0];
  const base = '/api/v1/racks/' + encodeURIComponent(id);
  let rack = null;
  let imagesLoaded = false;
  let watchImports = true;  // look at the imports until none runs
  let running = new Set();  // imports running when last looked at

  const title = el('h1', {}, 'Rack');
  const details = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const caps = el('div', { id: 'rack-capabilities' }, el('p', { class: 'muted' }, 'Loading…'));
  const machines = el('div', { id: 'rack-machines' }, el('p', { class: 'muted' }, 'Loading…'));
  const offlineNote = el('p', { id: 'rack-offline-note', class: 'warning', hidden: true });
  const images = el('div', { id: 'rack-images' }, el('p', { class: 'muted' }, 'Loading…'));
  const imports = el('div', { id: 'rack-imports' });
  const result = el('div', { id: 'image-result', class: 'report', role: 'status', hidden: true });

  // One confirmation box for what is asked twice (delete, GC).
  const confirmText = el('span', {});
  const confirmYes = el('button', { type: 'button', id: 'image-confirm-yes' });
  const confirmNo = el('button', { type: 'button', id: 'image-confirm-no', class: 'secondary' }, 'Cancel');
  const confirmBox = el('div', { id: 'image-confirm', class: 'confirm', role: 'alertdialog', hidden: true },
    confirmText, ' ', confirmYes, ' ', confirmNo);
  let onConfirm = null;
  confirmYes.addEventListener('click', () => { const f = onConfirm; closeConfirm(); if (f) f(); });
  confirmNo.addEventListener('click', () => { closeConfirm(); say([el('p', {}, 'Cancelled.')]); });
  function ask(text, yes, f) {
    clearError();
    confirmText.textContent = text;
    confirmYes.textContent = yes;
    onConfirm = f;
    confirmBox.hidden = false;
    confirmNo.focus();
  }
  function closeConfirm() { onConfirm = null; confirmBox.hidden = true; }
  function say(children) { result.replaceChildren(...children); result.hidden = false; }

  const scrubButton = el('button', { type: 'button', id: 'image-scrub', class: 'secondary', onclick: () => scrub() }, 'Verify stored files');
  const gcButton = el('button', { type: 'button', id: 'image-gc', class: 'secondary', onclick: () => gcDryRun() }, 'Garbage collect…');

  const kind = el('select', { id: 'import-kind', onchange: () => showFields() },
    el('option', { value: 'dir' }, 'Directory on the rack, with a manifest'),
    el('option', { value: 'url' }, 'URL of a manifest'),
    el('option', { value: 'simplestreams' }, 'Simplestreams mirror (URL or directory)'),
    el('option', { value: 'debian_netboot' }, 'Debian 12 netboot installer (the rack\'s packages)'),
    el('option', { value: 'system_bootloaders' }, 'The rack\'s system bootloaders'));
  const source = el('input', { id: 'import-source', size: 44, spellcheck: 'false', placeholder: '/srv/images' });
  const arches = el('input', { id: 'import-arches', size: 14, spellcheck: 'false', placeholder: 'all' });
  const releases = el('input', { id: 'import-releases', size: 14, spellcheck: 'false', placeholder: 'all' });
  const versions = el('input', { id: 'import-versions', type: 'number', min: '1', max: '20', size: 4, placeholder: '1' });
  const sourceLabel = el('label', {}, 'Source', source);
  const archesLabel = el('label', {}, 'Arches', arches);
  const releasesLabel = el('label', {}, 'Releases', releases);
  const versionsLabel = el('label', {}, 'Newest versions', versions);
  const importButton = el('button', { type: 'submit', id: 'import-start' }, 'Import');
  const importForm = el('form', { class: 'inline', id: 'image-import', onsubmit: (ev) => { ev.preventDefault(); startImport(); } },
    el('label', {}, 'Kind', kind), sourceLabel, archesLabel, releasesLabel, versionsLabel, importButton);
  function showFields() {
    const k = kind.value;
    sourceLabel.hidden = !['dir', 'url', 'simplestreams'].includes(k);
    source.placeholder = k === 'url' ? 'http://images.example/manifest.json' : k === 'simplestreams' ? 'http://images.maas.io/ephemeral-v3/stable/' : '/srv/images';
    archesLabel.hidden = !['simplestreams', 'debian_netboot'].includes(k);
    releasesLabel.hidden = versionsLabel.hidden = k !== 'simplestreams';
  }
  showFields();

  const actions = [scrubButton, gcButton, importButton];
  // busy holds the actions under way: the rack's reloads offer the others
  // again, not these (a second scrub beside the first reads the whole
  // store again; a scrub waits up to two minutes for the rack).
  const busy = new Set();
  const credential = el('div', { id: 'rack-credential' }, el('p', { class: 'muted' }, 'Loading…'));
  const credentialResult = el('p', { id: 'credential-result', class: 'notice', role: 'status', hidden: true });
  append(view, [el('p', {}, el('a', { href: '#/racks' }, '← Racks')), title, details,
    el('h2', {}, 'NATS credential'), credential, credentialResult,
    el('h2', {}, 'Capabilities'), caps,
    el('h2', {}, 'Machines that boot from it'), machines,
    el('h2', {}, 'Images'), offlineNote,
    el('div', { class: 'toolbar' }, scrubButton, gcButton,
      el('span', { class: 'hint' }, 'Scrub reads every stored file and checks its sha256; GC shows what it would remove before it does.')),
    confirmBox, result, images,
    el('h2', {}, 'Import'), importForm, imports]);

  // setOnline offers the image store's actions while the rack is online,
  // and says why not otherwise.
  function setOnline(r) {
    const why = r.online ? null : 'Rack ' + r.name + ' is offline (last heartbeat ' + fmtTime(r.last_heartbeat) +
      '): its image store cannot be asked until it is back.';
    for (const b of [...actions, ...images.querySelectorAll('button.delete-image')]) {
      b.disabled = !r.online || busy.has(b);
      if (why) b.title = why; else b.removeAttribute('title');
    }
    offlineNote.textContent = why || '';
    offlineNote.hidden = !why;
  }

  function showRack(r) {
    rack = r;
    title.textContent = 'Rack ' + r.name;
    const dhcp = r.dhcp ? r.dhcp.mode + ((r.dhcp.interfaces || []).length ? ' on ' + r.dhcp.interfaces.join(', ') : '') : 'not reported';
    const rows = [
      ['Name', r.name], ['ID', el('span', { class: 'mono' }, r.id)],
      ['Status', [statusBadge(r.online ? 'online' : 'offline'), ' ', el('span', { class: 'muted' }, r.online
        ? 'last heartbeat ' + fmtTime(r.last_heartbeat) + ' (' + ago(r.last_heartbeat) + ')'
        : 'since ' + fmtTime(r.status_changed_at) + ' (' + ago(r.status_changed_at) + '); last heartbeat ' + fmtTime(r.last_heartbeat))]],
      ['Last seen', fmtTime(r.last_seen)], ['Version', r.version], ['Hostname', r.hostname || ''],
      ['Addresses', el('span', { class: 'mono' }, (r.addresses || []).join(', '))],
      ['Boot URL', el('span', { class: 'mono' }, r.boot_url || '')],
      ['TFTP', el('span', { class: 'mono' }, (r.tftp || []).join(', '))], ['HTTP', el('span', { class: 'mono' }, (r.http || []).join(', '))],
      ['DHCP', dhcp], ['Started', fmtTime(r.started_at)], ['First seen', fmtTime(r.first_seen)],
    ];
    details.replaceChildren(el('dl', { class: 'details', id: 'rack-details' },
      rows.map(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, v)])));
    setOnline(r);
  }

  async function loadRack() {
    const r = await api('GET', base);
    if (!current(gen)) return;
    const was = rack && rack.online;
    showRack(r);
    if (r.online && (!imagesLoaded || !was)) await loadImages();
    if (!r.online && !imagesLoaded) {
      images.replaceChildren(el('p', { class: 'muted' }, 'The rack is offline: its image store cannot be listed now.'));
    }
  }

  async function loadCapabilities() {
    let v;
    try {
      v = await api('GET', base + '/capabilities');
    } catch (e) {
      if (e.status === 404) {
        caps.replaceChildren(el('p', { class: 'muted' }, 'The rack has reported no capabilities yet.'));
        return;
      }
      throw e;
    }
    if (!current(gen)) return;
    const c = v.capabilities || {};
    const oses = [];
    for (const o of c.oses || []) {
      for (const r of o.releases || []) {
        oses.push(el('li', {}, (r.title || (o.title || o.name) + ' ' + r.name), ' ',
          el('span', { class: 'muted mono' }, o.name + '/' + r.name + ': ' + (r.arches || []).map((a) => a.arch + '/' + a.subarch).join(', '))));
      }
    }
    const bootloaders = (c.bootloaders || []).map((b) => el('li', {}, b.name + ' ', el('span', { class: 'muted mono' }, b.arch + ' ' + b.version)));
    const drivers = (c.power_drivers || []).map((d) => el('li', {}, d.name + ' ', statusBadge(d.available ? 'available' : 'unavailable'),
      d.detail ? el('span', { class: 'muted' }, ' ' + d.detail) : null));
    const providers = (c.storage_providers || []).map((p) => el('li', {}, p.name + ' ', statusBadge(p.valid ? 'available' : 'unavailable'),
      p.reason ? el('span', { class: 'muted' }, ' ' + p.reason) : null));
    const list = (items, none) => (items.length ? el('ul', { class: 'plain' }, items) : el('span', { class: 'muted' }, none));
    const rows = [
      ['OSes', list(oses, 'none')], ['Bootloaders', list(bootloaders, 'none')],
      ['Power drivers', list(drivers, 'none')], ['Storage providers', list(providers, 'none')],
      ['Reported', [fmtTime(v.reported_at), v.available ? '' : el('span', { class: 'muted' }, ' — the rack is offline: this is what it last reported')]],
    ];
    caps.replaceChildren(el('dl', { class: 'details' },
      rows.map(([k, val]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, val)])));
  }

  // loadMachines finds the machines that name this rack as the one they
  // boot or deploy from (the API has no rack filter: a page at a time).
  async function loadMachines() {
    let all = [];
    let after = '';
    for (let page = 0; page < 20; page++) {
      const q = new URLSearchParams({ limit: '1000' });
      if (after) q.set('after', after);
      const data = await api('GET', '/api/v1/machines?' + q);
      if (!current(gen)) return;
      all = all.concat((data.machines || []).filter((m) => m.boot_rack_id === id || m.deploy_rack_id === id));
      after = data.next;
      if (!after) break;
    }
    const rows = all.map((m) => el('tr', { 'data-machine-id': m.id },
      el('td', {}, el('a', { href: '#/machines/' + encodeURIComponent(m.id) }, m.hostname)),
      el('td', {}, statusBadge(m.status)),
      el('td', { class: 'mono' }, (m.macs || []).join(', ')),
      el('td', {}, [m.boot_rack_id === id ? 'boots from it' : '', m.deploy_rack_id === id ? (m.boot_rack_id === id ? '; ' : '') + 'deployed through it' : ''].join(''))));
    machines.replaceChildren(table(['Hostname', 'Status', 'MACs', 'How'], rows,
      'No machine names this rack as its boot or deploy rack.'));
  }

  async function loadImages() {
    const data = await api('GET', base + '/images');
    if (!current(gen)) return;
    imagesLoaded = true;
    const rows = (data.versions || []).map((v) => el('tr', { 'data-version': v.id },
      el('td', { class: 'mono' }, v.id),
      el('td', {}, statusBadge(v.usable ? 'usable' : 'unusable'), v.problem ? el('div', { class: 'small bad' }, v.problem) : null),
      el('td', { class: 'num' }, fmtBytes(v.size)),
      el('td', { class: 'small' }, (v.files || []).map((f) => f.name).join(', ')),
      el('td', { class: 'small' }, (v.references || []).join(', ') || el('span', { class: 'muted' }, 'none')),
      timeCell(v.last_handed_out),
      el('td', {}, el('button', { type: 'button', class: 'secondary delete-image', onclick: () => askDelete(v) }, 'Delete'))));
    images.replaceChildren(table(['Version', 'State', 'Size', 'Files', 'Referenced by', 'Last handed out', ''], rows,
      'The rack holds no image yet: import one below.'));
    if (rack) setOnline(rack);
  }

  function askDelete(v) {
    ask('Delete image version ' + v.id + ' from rack ' + (rack ? rack.name : id) + '? Its files go unless another version uses them; ' +
      'the rack refuses while a machine references it or it was handed out recently.', 'Yes, delete it', async () => {
      try {
        const rep = await api('DELETE', imagePath(id, v.id));
        if (!current(gen)) return;
        say([el('p', { id: 'delete-report' }, 'Deleted ' + (rep.versions || []).join(', ') + '; ' + plural((rep.blobs || []).length, 'file', 'files') +
          ' removed, ' + fmtBytes(rep.bytes_freed || 0) + ' freed.')]);
        await loadImages();
      } catch (e) { if (current(gen)) showError(e); }
    });
  }

  // gcReport shows what a GC removed, or would remove, and what it kept.
  function gcReport(rep) {
    const n = (rep.versions || []).length;
    const head = rep.dry_run
      ? (n ? 'A garbage collection would remove ' + plural(n, 'version', 'versions') + ' and ' + plural((rep.blobs || []).length, 'file', 'files') +
        ', freeing ' + fmtBytes(rep.bytes_freed) + ':' : 'Nothing to collect: every version is kept.')
      : 'Removed ' + plural(n, 'version', 'versions') + ' and ' + plural((rep.blobs || []).length, 'file', 'files') + ', freeing ' + fmtBytes(rep.bytes_freed) + '.';
    const kept = (rep.kept || []).map((k) => el('tr', { 'data-version': k.id }, el('td', { class: 'mono' }, k.id), el('td', {}, k.reason)));
    return [
      el('p', { id: rep.dry_run ? 'gc-dry-run-report' : 'gc-report' }, head),
      n ? el('ul', { class: 'mono', id: rep.dry_run ? 'gc-would-remove' : 'gc-removed' }, rep.versions.map((v) => el('li', {}, v))) : null,
      kept.length ? el('details', {}, el('summary', {}, 'Kept: ' + plural(kept.length, 'version', 'versions')),
        table(['Version', 'Kept because'], kept, '')) : null,
    ];
  }

  async function gcDryRun() {
    clearError();
    closeConfirm();
    busy.add(gcButton);
    gcButton.disabled = true;
    try {
      const rep = await api('POST', base + '/images/gc?dry_run=true');
      if (!current(gen)) return;
      const parts = gcReport(rep);
      if ((rep.versions || []).length) {
        parts.push(el('div', { class: 'toolbar' },
          el('button', { type: 'button', id: 'gc-run', onclick: () => gcRun() }, 'Remove ' + plural(rep.versions.length, 'version', 'versions') + ' now'),
          el('button', { type: 'button', id: 'gc-cancel', class: 'secondary', onclick: () => say([el('p', {}, 'Cancelled: nothing was removed.')]) }, 'Cancel')));
      }
      say(parts);
    } catch (e) { if (current(gen)) showError(e); }
    busy.delete(gcButton);
    if (current(gen) && rack) gcButton.disabled = !rack.online;
  }

  async function gcRun() {
    clearError();
    for (const b of result.querySelectorAll('button')) b.disabled = true;
    try {
      const rep = await api('POST', base + '/images/gc?dry_run=false');
      if (!current(gen)) return;
      say(gcReport(rep));
      await loadImages();
    } catch (e) { if (current(gen)) showError(e); }
  }

  async function scrub() {
    clearError();
    closeConfirm();
    busy.add(scrubButton);
    scrubButton.disabled = true;
    say([el('p', {}, 'Verifying every stored file…')]);
    try {
      const rep = await api('POST', base + '/images/scrub');
      if (!current(gen)) return;
      const bad = rep.corrupt || [];
      const head = el('p', { id: 'scrub-report', class: bad.length ? 'bad' : '' }, 'Checked ' + plural(rep.checked, 'file', 'files') +
        ' (' + fmtBytes(rep.bytes) + '): ' + (bad.length ? plural(bad.length, 'file is', 'files are') + ' corrupt, now quarantined on the rack.' : 'none is corrupt.'));
      // A sha256 shows its first 16 digits, all of it on hover.
      const sha = (h) => el('td', { class: 'mono small nowrap', title: h, 'data-sha256': h }, String(h).slice(0, 16) + '…');
      const rows = bad.map((c) => el('tr', { 'data-sha256': c.sha256 }, sha(c.sha256), sha(c.actual_sha256),
        el('td', { class: 'num' }, fmtBytes(c.size)),
        el('td', { class: 'mono small' }, (c.versions || []).map((v) => el('div', { class: 'nowrap' }, v))),
        el('td', { class: 'mono small' }, c.quarantine)));
      say([head, bad.length ? table(['Expected sha256', 'Found', 'Size', 'Versions (now unusable)', 'Quarantined as'], rows, '') : null]);
      if (bad.length) await loadImages();
    } catch (e) { if (current(gen)) { say([el('p', {}, 'The scrub did not finish.')]); showError(e); } }
    busy.delete(scrubButton);
    if (current(gen) && rack) scrubButton.disabled = !rack.online;
  }

  async function startImport() {
    clearError();
    const k = kind.value;
    if (['dir', 'url', 'simplestreams'].includes(k) && !source.value.trim()) {
      source.focus();
      return;
    }
    try {
      const st = await api('POST', base + '/images/imports',
        importBody(k, source.value.trim(), arches.value, releases.value, versions.value.trim()));
      if (!current(gen)) return;
      source.value = '';
      if (st && st.id) running.add(st.id);
      watchImports = true;
      await loadImports();
    } catch (e) { if (current(gen)) showError(e); }
  }

  // loadImports shows every import of the rack's since it started, the
  // newest first; while one runs it is looked at every second, and the
  // images are listed again when one ends.
  async function loadImports() {
    const data = await api('GET', base + '/images/imports');
    if (!current(gen)) return;
    const list = (data.imports || []).slice().sort((a, b) => String(b.started_at).localeCompare(String(a.started_at)));
    const now = new Set(list.filter((im) => im.state === 'running').map((im) => im.id));
    const ended = [...running].some((i) => !now.has(i));
    running = now;
    watchImports = now.size > 0;
    const rows = list.map((im) => {
      const p = percent(im);
      return el('tr', { 'data-import': im.id },
        timeCell(im.started_at),
        el('td', { class: 'mono small source' }, im.source),
        el('td', {}, statusBadge(im.state)),
        el('td', { class: 'progress' }, el('progress', { max: 100, value: p, title: p + '%' }), ' ', el('span', { class: 'percent' }, p + '%'),
          el('div', { class: 'small muted' }, fmtBytes(im.bytes_done) + ' of ' + fmtBytes(im.bytes_total) + ', ' +
            im.files_done + ' of ' + im.files_total + ' files' + (im.bytes_per_sec ? ', ' + fmtBytes(im.bytes_per_sec) + '/s' : ''))),
        el('td', { class: 'small' }, im.error ? el('span', { class: 'bad' }, im.error + (im.code ? ' (' + im.code + ')' : ''))
          : im.unchanged ? 'unchanged' : (im.versions || []).map((v) => el('div', { class: 'mono' }, v))),
        timeCell(im.finished_at));
    });
    imports.replaceChildren(table(['Started', 'Source', 'State', 'Progress', 'Versions or error', 'Finished'], rows,
      'No import since the rack started.'));
    if (ended) await loadImages();
  }

  // loadCredential shows the nkey the rack joined NATS with: its public
  // key, when it joined and with which join token, and whether it was
  // revoked. A rack that joined without one (a region without its auth
  // callout, racks on -insecure-nats) has none to show or revoke.
  let shownCredential = '';
  async function loadCredential() {
    let c;
    try {
      c = await api('GET', base + '/credential');
    } catch (e) {
      if (e.status !== 404) throw e;
      if (current(gen)) {
        shownCredential = '';
        credential.replaceChildren(el('p', { class: 'muted', id: 'credential-none' },
          'No credential: the rack did not join with a join token (a region without its NATS auth callout takes racks as the NATS server lets them in).'));
      }
      return;
    }
    if (!current(gen)) return;
    // The rack's events bring the credential again; unchanged, the panel
    // stays as it is, an open question included.
    const key = JSON.stringify(c);
    if (key === shownCredential) return;
    shownCredential = key;
    const rows = [
      ['Public key', el('span', { class: 'mono' }, c.nkey)],
      ['Joined', el('span', { title: ago(c.joined_at) }, fmtTime(c.joined_at))],
      ['Join token', c.join_token_id ? el('span', { class: 'mono' }, c.join_token_id) : el('span', { class: 'muted' }, 'none recorded')],
      ['State', c.revoked_at
        ? [statusBadge('revoked'), ' ', el('span', { class: 'muted' }, fmtTime(c.revoked_at) + (c.revoked_by ? ' by ' + c.revoked_by : '') +
          ': the rack must join again with a join token')]
        : statusBadge('valid')],
    ];
    credential.replaceChildren(el('dl', { class: 'details', id: 'credential-details' },
      rows.map(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase() }, v)])),
    ...(c.revoked_at ? [] : [el('div', { class: 'toolbar' }, confirmTwice('Revoke credential',
      'Revoke the NATS credential of rack ' + (rack ? rack.name : id) + '? It is disconnected now and refused from then on: ' +
      'the rack must join again with a join token (rackd -join-token-file) to come back.', revoke, 'revoke-credential'))]));
  }

  async function revoke() {
    clearError();
    credentialResult.hidden = true;
    try {
      const rv = await api('DELETE', base + '/credential');
      if (!current(gen)) return;
      credentialResult.textContent = 'Credential revoked; ' + plural(rv.disconnected || 0, 'connection', 'connections') + ' closed.' +
        (rv.warning ? ' ' + rv.warning : '');
      credentialResult.hidden = false;
      await loadCredential();
    } catch (e) { if (current(gen)) showError(e); }
  }

  // The rack's own events (online, offline, capabilities, images) bring
  // its page up to date; an import's progress is not an event, so it is
  // asked for every second, and only while an import runs.
  reloadOn((e) => e === null || e.subject === 'rack/' + id || matches({ type: RACK_EVENTS }, e), loadRack);
  every(IMPORT_POLL_MS, async () => {
    if (!watchImports || !rack || !rack.online) return;
    await loadImports();
  });
  loadCapabilities().catch((e) => { if (current(gen)) showError(e); });
  reloadOn((e) => e === null || e.subject === 'rack/' + id, loadCredential);
  loadMachines().catch((e) => { if (current(gen)) showError(e); });
}
