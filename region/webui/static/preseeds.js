// Rackplane operator UI: preseeds. A preseed is a series of immutable
// versions; an edit saves a new version made from the one the editor read
// (If-Match), so two operators never silently undo each other: the second
// save is refused (412) and the page says so, keeping the text typed.
import {
  api, append, clearError, current, el, errorText, fmtTime, generation, registerView, showError, statusBadge, table, timeCell,
} from './core.js';
import { confirmTwice, diffView, etagVersion, field, request, say } from './kit.js';

registerView('preseeds', (view, query, parts) => {
  if (parts[0]) preseedView(view, parts[0]);
  else preseedsView(view);
});

// FORMATS are the formats the region knows (events.PreseedFormats); ''
// lets the region detect it from the content.
const FORMATS = ['cloud-config', 'autoinstall', 'd-i', 'kickstart', 'script', 'other'];

function formatSelect(id, selected, autoLabel) {
  return el('select', { id },
    el('option', { value: '' }, autoLabel || 'detect from the content'),
    FORMATS.map((f) => el('option', { value: f, selected: f === selected }, f)));
}

function scopeText(s) {
  if (!s || s.kind === 'global') return 'global';
  if (s.kind === 'machine') return 'machine ' + s.machine_id;
  return s.kind + ' ' + [s.os, s.release, s.arch].filter(Boolean).join('/');
}

const path = (name) => '/api/v1/preseeds/' + encodeURIComponent(name);

// ---- the list ----------------------------------------------------------

function preseedsView(view) {
  const gen = generation;
  const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const name = el('input', { id: 'new-preseed-name', required: true, placeholder: 'web-servers', spellcheck: 'false', size: 24 });
  const format = formatSelect('new-preseed-format', '');
  const content = el('textarea', { id: 'new-preseed-content', rows: 12, cols: 90, required: true, spellcheck: 'false',
    placeholder: '#cloud-config\npackages: [nginx]' });
  const form = el('form', { id: 'create-preseed', class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    const body = { name: name.value.trim(), content: content.value };
    if (format.value) body.format = format.value;
    try {
      await api('POST', '/api/v1/preseeds', body);
      if (current(gen)) location.hash = '#/preseeds/' + encodeURIComponent(body.name);
    } catch (e) { if (current(gen)) showError(e); }
  } },
  el('div', { class: 'toolbar' }, field('Name', name), field('Format', format)),
  field('Content', content, 'A Go template: {{.Machine.Hostname}}, {{.OS.Release}}, {{.URLs.Status}}… The region renders it with sample values before it saves it.'),
  el('div', {}, el('button', { type: 'submit' }, 'Create')));
  append(view, [el('h1', {}, 'Preseeds'), list, el('h2', {}, 'Create a preseed'), form]);

  (async () => {
    const data = await api('GET', '/api/v1/preseeds');
    if (!current(gen)) return;
    const ps = data.preseeds || [];
    // The list has no format: it is the current version's, one GET each.
    const formats = await Promise.all(ps.map((p) => api('GET', path(p.name)).then((d) => d.version.format, () => '')));
    if (!current(gen)) return;
    const rows = ps.map((p, i) => el('tr', { 'data-preseed': p.name },
      el('td', {}, el('a', { href: '#/preseeds/' + encodeURIComponent(p.name) }, p.name)),
      el('td', { class: 'version' }, String(p.current_version),
        p.latest_version !== p.current_version ? el('span', { class: 'muted' }, ' (newest ' + p.latest_version + ')') : null),
      el('td', { class: 'mono' }, formats[i]),
      el('td', {}, scopeText(p.scope)),
      timeCell(p.updated_at)));
    list.replaceChildren(table(['Name', 'Current version', 'Format', 'Scope', 'Updated'], rows,
      'No preseed yet. Racks ship their defaults; create one below.'));
  })().catch((e) => { if (current(gen)) showError(e); });
}

// ---- one preseed -------------------------------------------------------

function preseedView(view, name) {
  const gen = generation;
  let base = 0; // the version the editor's text was read at (the ETag)
  let unchanged = ''; // the editor's text as read or saved: anything else is the operator's, unsaved
  let preseed = null;
  let versions = [];

  const title = el('h1', {}, 'Preseed ' + name);
  const summary = el('p', { id: 'preseed-summary', class: 'muted' });
  const saved = el('p', { id: 'preseed-saved', class: 'notice', role: 'status', hidden: true });
  const conflict = el('div', { id: 'preseed-conflict', class: 'error', role: 'alert', hidden: true });
  const editor = el('textarea', { id: 'preseed-content', rows: 18, cols: 100, spellcheck: 'false' });
  const format = formatSelect('preseed-format', '', 'detect from the content');
  const comment = el('input', { id: 'preseed-comment', size: 50, placeholder: 'what changed and why', spellcheck: 'false' });
  const save = el('button', { type: 'submit', id: 'preseed-save' }, 'Save as a new version');
  const form = el('form', { id: 'preseed-editor', class: 'stack', onsubmit: (ev) => { ev.preventDefault(); saveEdit(); } },
    editor, el('div', { class: 'toolbar' }, field('Format', format), field('Comment', comment), save));

  const history = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const versionShown = el('div', { id: 'preseed-version-view' });
  // The diff compares the two newest versions until the operator
  // chooses others.
  let diffChosen = false;
  const chosen = () => { diffChosen = true; };
  const diffFrom = el('select', { id: 'diff-from', 'aria-label': 'from version', onchange: chosen });
  const diffTo = el('select', { id: 'diff-to', 'aria-label': 'to version', onchange: chosen });
  const diffOut = el('div', { id: 'preseed-diff-out' });
  const diffForm = el('form', { id: 'preseed-diff', class: 'toolbar', onsubmit: (ev) => { ev.preventDefault(); showDiff(); } },
    field('From', diffFrom), field('To', diffTo), el('button', { type: 'submit', id: 'diff-show', class: 'secondary' }, 'Show the diff'));
  const rolled = el('p', { id: 'preseed-rolled', class: 'notice', role: 'status', hidden: true });
  const pinned = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));

  append(view, [el('p', {}, el('a', { href: '#/preseeds' }, '← Preseeds')), title, summary,
    el('h2', {}, 'Edit'), conflict, saved, form,
    el('h2', {}, 'Versions'), rolled, history, versionShown,
    el('h2', {}, 'Compare versions'), diffForm, diffOut,
    el('h2', {}, 'Machines deployed with it'), pinned]);

  // load reads the preseed and its history; the editor's text is
  // replaced only when asked (first load, Reload), never under the
  // operator's typing.
  async function load(intoEditor) {
    const got = await request('GET', path(name));
    if (!current(gen)) return;
    preseed = got.data.preseed;
    const cur = got.data.version;
    if (intoEditor) {
      base = etagVersion(got.etag) || preseed.latest_version;
      editor.value = cur.content || '';
      unchanged = editor.value;
      format.value = '';
      format.options[0].textContent = 'detect from the content (now ' + cur.format + ')';
      comment.value = '';
      say(conflict, '');
    }
    summary.textContent = 'Current version ' + preseed.current_version + ' (' + cur.format + ', by ' + cur.author + ', ' +
      fmtTime(cur.created_at) + '); scope ' + scopeText(preseed.scope) + '.' +
      (preseed.latest_version !== preseed.current_version
        ? ' The newest version, ' + preseed.latest_version + ', is not the current one: a save is made from the newest.' : '');
    const vs = await api('GET', path(name) + '/versions');
    if (!current(gen)) return;
    versions = vs.versions || [];
    renderHistory();
  }

  function renderHistory() {
    const rows = versions.slice().reverse().map((v) => el('tr', { 'data-version': String(v.version) },
      el('td', {}, String(v.version), v.version === preseed.current_version ? [' ', statusBadge('current')] : null),
      el('td', {}, v.author),
      timeCell(v.created_at),
      el('td', { class: 'mono' }, v.format),
      el('td', {}, v.origin),
      // A version made from an older one than the one before it (a
      // rollback) says which, unless its comment does.
      el('td', {}, v.comment || '', v.based_on && v.based_on !== v.version - 1 && !(v.comment || '').includes('version ' + v.based_on)
        ? el('span', { class: 'muted' }, ' (from version ' + v.based_on + ')') : null),
      el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'secondary view-version', onclick: () => viewVersion(v.version) }, 'View'),
        v.version === preseed.current_version ? null
          : confirmTwice('Roll back', 'Make version ' + v.version + '\'s content current again, as version ' + (preseed.latest_version + 1) + '?',
            () => rollback(v.version), 'rollback'))));
    history.replaceChildren(table(['Version', 'Author', 'Saved', 'Format', 'Origin', 'Comment', ''], rows, 'No versions.'));
    const opts = (sel, want) => {
      const keep = sel.value;
      sel.replaceChildren(...versions.map((v) => el('option', { value: String(v.version) }, 'version ' + v.version)));
      sel.value = diffChosen && versions.some((v) => String(v.version) === keep) ? keep : String(want);
    };
    const newest = versions.length ? versions[versions.length - 1].version : 1;
    opts(diffFrom, Math.max(1, newest - 1));
    opts(diffTo, newest);
  }

  async function viewVersion(v) {
    clearError();
    try {
      const pv = await api('GET', path(name) + '/versions/' + v);
      if (!current(gen)) return;
      const text = el('textarea', { id: 'preseed-version-content', rows: 14, cols: 100, readonly: true, spellcheck: 'false' });
      text.value = pv.content || '';
      versionShown.replaceChildren(el('h3', {}, 'Version ' + pv.version + ' (' + pv.format + ', by ' + pv.author + ', ' + fmtTime(pv.created_at) + ')'),
        text, el('div', {}, el('button', { type: 'button', class: 'secondary', onclick: () => versionShown.replaceChildren() }, 'Close')));
    } catch (e) { if (current(gen)) showError(e); }
  }

  async function showDiff() {
    clearError();
    try {
      const q = new URLSearchParams({ from: diffFrom.value, to: diffTo.value });
      const got = await request('GET', path(name) + '/diff?' + q, { accept: 'text/x-diff' });
      if (!current(gen)) return;
      diffOut.replaceChildren(diffView(got.text, 'preseed-diff-lines'));
    } catch (e) { if (current(gen)) showError(e); }
  }

  async function saveEdit() {
    clearError();
    say(saved, '');
    say(rolled, '');
    const body = { content: editor.value };
    if (format.value) body.format = format.value;
    if (comment.value.trim()) body.comment = comment.value.trim();
    save.disabled = true;
    try {
      const got = await request('PUT', path(name), { body, headers: { 'If-Match': '"' + base + '"' } });
      if (!current(gen)) return;
      base = etagVersion(got.etag) || got.data.version.version;
      unchanged = body.content;
      say(conflict, '');
      comment.value = '';
      await load(false);
      // Said once the page is ready for the next save.
      say(saved, 'Saved as version ' + got.data.version.version + ' (' + got.data.version.format + ').');
    } catch (e) {
      if (!current(gen)) return;
      if (e.status === 412) showConflict(e);
      else showError(e);
    } finally { save.disabled = false; }
  }

  // showConflict says that someone saved meanwhile. The typed text stays
  // in the editor; Reload replaces it with the newest version.
  function showConflict(e) {
    const reload = el('button', { type: 'button', id: 'preseed-reload' }, 'Reload the newest version (discards your text)');
    reload.addEventListener('click', () => { load(true).then(() => say(saved, 'Reloaded the newest version.')).catch(showError); });
    const compare = el('button', { type: 'button', class: 'secondary', id: 'preseed-compare' }, 'Compare version ' + base + ' with the newest');
    compare.addEventListener('click', async () => {
      try {
        await load(false);
        diffChosen = true;
        diffFrom.value = String(base);
        diffTo.value = String(versions.length ? versions[versions.length - 1].version : base);
        await showDiff();
        diffOut.scrollIntoView();
      } catch (err) { showError(err); }
    });
    conflict.replaceChildren(
      el('strong', {}, 'Not saved: someone else saved a new version of ' + name + ' after you opened version ' + base + '.'),
      el('div', {}, errorText(e)),
      el('div', {}, 'Your text is still in the editor. Copy what you need, then reload and edit the newest version.'),
      el('div', { class: 'toolbar' }, reload, compare));
    conflict.hidden = false;
    load(false).catch(showError);
  }

  // rollback makes version v's content current again, and shows it in
  // the editor; text typed there and not saved is not thrown away
  // unasked.
  async function rollback(v, discard) {
    clearError();
    say(rolled, '');
    rolled.classList.remove('bad');
    if (!discard && editor.value !== unchanged) {
      say(saved, '');
      rolled.classList.add('bad');
      const go = el('button', { type: 'button', class: 'danger', id: 'rollback-discard' }, 'Discard my text and roll back to version ' + v);
      go.addEventListener('click', () => rollback(v, true));
      rolled.replaceChildren(el('strong', {}, 'Not rolled back: the editor holds text you have not saved. '),
        'Save it first, or ', go, '.');
      rolled.hidden = false;
      return;
    }
    try {
      // A rollback is a save too: from the newest version.
      const latest = preseed ? preseed.latest_version : base;
      const got = await request('POST', path(name) + '/rollback', { body: { version: v }, headers: { 'If-Match': '"' + latest + '"' } });
      if (!current(gen)) return;
      say(rolled, 'Rolled back: version ' + got.data.version.version + ' has the content of version ' + v + '.');
      await load(true);
    } catch (e) { if (current(gen)) showError(e); }
  }

  // pinnedMachines lists the machines whose deployment pinned a version
  // of this preseed: the machine list carries preseed_name and
  // preseed_version, so the page reads it (a site's first 5,000).
  async function pinnedMachines() {
    const found = [];
    let after = '';
    for (let page = 0; page < 5; page++) {
      const q = new URLSearchParams({ limit: '1000' });
      if (after) q.set('after', after);
      const data = await api('GET', '/api/v1/machines?' + q);
      if (!current(gen)) return;
      for (const m of data.machines || []) if (m.preseed_name === name) found.push(m);
      after = data.next;
      if (!after) break;
    }
    const rows = found.map((m) => el('tr', { 'data-machine-id': m.id },
      el('td', {}, el('a', { href: '#/machines/' + encodeURIComponent(m.id) }, m.hostname)),
      el('td', {}, String(m.preseed_version)), el('td', {}, statusBadge(m.status))));
    pinned.replaceChildren(table(['Machine', 'Version pinned', 'Status'], rows,
      'No machine is deployed with this preseed. A deployment pins the version current when it starts.'));
  }

  load(true).catch((e) => { if (current(gen)) showError(e); });
  pinnedMachines().catch((e) => { if (current(gen)) showError(e); });
}
