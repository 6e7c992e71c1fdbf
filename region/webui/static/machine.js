// Rackplane operator UI: what a machine's page offers beyond its state and
// actions (app.js machineView): the edit of its descriptive fields, its
// deletion and the results of its commissioning scripts.
import { APIError, TELEMETRY, api, can, clearError, current, el, rackNames, reloadOn, showError, statusBadge, table, timeCell } from './core.js';
import { confirmTwice, say } from './kit.js';

// editPanel is the form that changes a machine's hostname, MACs and boot
// rack: PATCH /api/v1/machines/{id} with If-Match carrying the version the
// form was filled from, so that a change made meanwhile (through the API,
// by a rack adopting the machine) is refused with 412 instead of undone.
// While the operator types, the form keeps what was typed and the version
// it started from; otherwise it follows the machine. update(m) takes the
// machine as the page last read it; reload() asks the page to read it.
export function editPanel(id, gen, reload) {
  const hostname = el('input', { id: 'edit-hostname', name: 'hostname', required: true, spellcheck: 'false', size: 24 });
  const macs = el('input', { id: 'edit-macs', name: 'macs', required: true, spellcheck: 'false', size: 40 });
  const rack = el('select', { id: 'edit-boot-rack', name: 'boot_rack_id' });
  const save = el('button', { type: 'submit', id: 'edit-save' }, 'Save changes');
  const saved = el('span', { class: 'notice', role: 'status', id: 'edit-saved', hidden: true });
  let m = null;        // the machine the form was filled from
  let typed = false;   // the operator changed the form since
  let racks = [];

  const splitMACs = (s) => s.split(/[\s,]+/).filter(Boolean);
  const form = el('form', { class: 'inline', id: 'edit-form', autocomplete: 'off', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    say(saved, '');
    saved.className = 'notice';
    if (!m) return;
    const req = {};
    const h = hostname.value.trim();
    if (h !== m.hostname) req.hostname = h;
    const ms = splitMACs(macs.value);
    if (ms.join(',') !== (m.macs || []).join(',')) req.macs = ms;
    if (rack.value !== (m.boot_rack_id || '')) req.boot_rack_id = rack.value;
    if (Object.keys(req).length === 0) { say(saved, 'Nothing changed.'); return; }
    save.disabled = true;
    try {
      const after = await api('PATCH', '/api/v1/machines/' + encodeURIComponent(id), req, { 'If-Match': '"' + m.version + '"' });
      if (!current(gen)) return;
      typed = false;
      fill(after);
      say(saved, 'Saved.');
      reload();
    } catch (e) {
      if (!current(gen)) return;
      if (e instanceof APIError && e.status === 412) {
        // Changed meanwhile: show it as it is now; what was typed goes,
        // as it was made on what is no longer there.
        typed = false;
        saved.className = 'warning';
        say(saved, 'Not saved: the machine was changed meanwhile (it was at version ' + m.version +
          '). It is shown again as it is now; make the edit again.');
        reload();
      } else {
        showError(e);
      }
    } finally {
      if (current(gen)) save.disabled = false;
    }
  } },
  el('label', {}, 'Hostname', hostname), el('label', {}, 'MACs (comma or space separated)', macs),
  el('label', {}, 'Boot rack', rack), save, saved);
  for (const c of [hostname, macs, rack]) c.addEventListener('input', () => { typed = true; });
  rack.addEventListener('change', () => { typed = true; });

  function rackOptions() {
    const want = m ? m.boot_rack_id || '' : '';
    const opts = [el('option', { value: '' }, 'any: the rack it boots on')];
    for (const r of racks) opts.push(el('option', { value: r.id }, r.name + (r.online ? '' : ' (offline)')));
    // A rack not in service (retired) stays shown while the machine names it.
    if (want && !racks.some((r) => r.id === want)) opts.push(el('option', { value: want }, 'rack ' + want));
    const keep = typed ? rack.value : want;
    rack.replaceChildren(...opts);
    rack.value = keep;
  }

  function fill(machine) {
    m = machine;
    hostname.value = m.hostname;
    macs.value = (m.macs || []).join(', ');
    rackOptions();
  }

  rackNames().then((byID) => {
    if (!current(gen)) return;
    racks = [...byID.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    rackOptions();
  }).catch(showError);

  return {
    node: el('div', { id: 'edit' }, form),
    update(machine) { if (!typed) fill(machine); },
  };
}

// deleteButton deletes the machine, asked twice, and goes back to the
// list; it is shown while the machine's actions include delete.
export function deleteButton(id, gen) {
  let name = '';
  // The deletion is of the machine as the page showed it: a change the
  // page has not heard of yet makes the region refuse it (412), and the
  // operator looks again.
  let version = null;
  const node = el('span', { id: 'delete-machine', hidden: true });
  const question = el('span', {});
  const button = confirmTwice('Delete', question, async () => {
    clearError();
    try {
      await api('DELETE', '/api/v1/machines/' + encodeURIComponent(id), undefined,
        version === null ? undefined : { 'If-Match': '"' + version + '"' });
      if (current(gen)) location.hash = '#/machines';
    } catch (e) { if (current(gen)) showError(e); }
  }, 'delete-machine');
  node.append(button);
  return {
    node,
    update(m) {
      name = m.hostname;
      version = m.version;
      question.textContent = 'Delete machine ' + name + '? Its record, power parameters and history go; ' +
        'if it boots again it is discovered as a new machine.';
      node.hidden = !can(m, 'delete');
    },
  };
}

// commissioningPanel lists what the commissioning scripts did on the
// machine's latest commissioning that ran any: each script's exit code,
// how long it ran, and its output a click away. It loads again on the
// machine's events (a script's result is one).
export function commissioningPanel(id, gen) {
  const node = el('div', { id: 'commissioning-results' }, el('p', { class: 'muted' }, 'Loading…'));
  reloadOn({ subject: 'machine/' + id, not: TELEMETRY }, async () => {
    let d;
    try {
      d = await api('GET', '/api/v1/machines/' + encodeURIComponent(id) + '/commissioning');
    } catch (e) {
      if (e instanceof APIError && (e.status === 404 || e.status === 503)) {
        if (current(gen)) node.replaceChildren(el('p', { class: 'muted' }, e.message));
        return;
      }
      throw e;
    }
    if (!current(gen)) return;
    const rows = (d.results || []).map((r) => el('tr', { 'data-script': r.name },
      el('td', { class: 'mono' }, r.name),
      el('td', {}, statusBadge(r.exit_code === 0 ? 'success' : 'failure'), ' ', el('span', { class: 'mono exit-code' }, 'exit ' + r.exit_code)),
      el('td', { class: 'num' }, fmtDuration(r.duration_ms)),
      timeCell(r.reported_at),
      el('td', { class: 'data-cell' }, el('details', { class: 'data script-output' },
        el('summary', {}, r.output ? lines(r.output) + (r.truncated ? ', cut short' : '') : 'no output'),
        el('pre', { class: 'mono' }, r.output + (r.truncated ? '\n… (cut short: the agent keeps the first part only)' : ''))))));
    node.replaceChildren(...[
      d.operation_id ? el('p', { class: 'muted small' }, 'The latest commissioning that ran scripts: ', el('span', { class: 'mono' }, d.operation_id), '.') : null,
      table(['Script', 'Exit code', 'Duration', 'Reported', 'Output'], rows,
        'No commissioning script has reported a result: the machine was not commissioned since scripts were added, or none ran.'),
    ].filter(Boolean));
  });
  return node;
}

function lines(s) {
  const n = s.replace(/\n$/, '').split('\n').length;
  return n + (n === 1 ? ' line' : ' lines');
}

function fmtDuration(ms) {
  if (typeof ms !== 'number') return '';
  if (ms < 1000) return ms + ' ms';
  if (ms < 120000) return (ms / 1000).toFixed(1) + ' s';
  return Math.round(ms / 60000) + ' min';
}
