// Rackplane operator UI: commissioning scripts, which the ephemeral agent
// runs on every machine it commissions, in name order. A save replaces a
// script whole; the region keeps each change as an event.
import { api, append, clearError, current, el, fmtTime, generation, registerView, showError, table, timeCell } from './core.js';
import { confirmTwice, field, say } from './kit.js';

registerView('scripts', (view, query, parts) => {
  if (parts[0]) scriptView(view, parts[0]);
  else scriptsView(view);
});

const path = (name) => '/api/v1/commissioning-scripts/' + encodeURIComponent(name);

function fmtSize(n) {
  return n < 1024 ? n + ' B' : (n / 1024).toFixed(1) + ' KiB';
}

// scriptFields are the inputs of a script, filled from sc when editing.
function scriptFields(sc) {
  const description = el('input', { id: 'script-description', size: 60, spellcheck: 'false', placeholder: 'one line: what it collects' });
  const timeout = el('input', { id: 'script-timeout', type: 'number', min: '0', size: 6, placeholder: '(default)' });
  const content = el('textarea', { id: 'script-content', rows: 16, cols: 100, spellcheck: 'false', required: true,
    placeholder: '#!/bin/sh\nlsblk --json' });
  if (sc) {
    description.value = sc.description || '';
    timeout.value = String(sc.timeout_seconds || '');
    content.value = sc.content || '';
  }
  const body = () => {
    const b = { content: content.value, description: description.value.trim() };
    if (timeout.value.trim()) b.timeout_seconds = Number(timeout.value);
    return b;
  };
  return { description, timeout, content, body };
}

function scriptsView(view) {
  const gen = generation;
  const list = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const name = el('input', { id: 'new-script-name', required: true, size: 24, spellcheck: 'false', placeholder: '10-lsblk' });
  const f = scriptFields(null);
  const form = el('form', { id: 'create-script', class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    try {
      const sc = await api('POST', '/api/v1/commissioning-scripts', Object.assign({ name: name.value.trim() }, f.body()));
      if (current(gen)) location.hash = '#/scripts/' + encodeURIComponent(sc.name);
    } catch (e) { if (current(gen)) showError(e); }
  } },
  el('div', { class: 'toolbar' }, field('Name (they run in name order)', name), field('Timeout (s)', f.timeout), field('Description', f.description)),
  field('Content', f.content), el('div', {}, el('button', { type: 'submit' }, 'Create script')));
  append(view, [el('h1', {}, 'Commissioning scripts'),
    el('p', { class: 'hint' }, 'The agent runs these on every machine it commissions, in name order, after the hardware inventory; ' +
      'their output and exit codes are on each machine\'s page.'),
    list, el('h2', {}, 'Add a script'), form]);

  (async () => {
    const data = await api('GET', '/api/v1/commissioning-scripts');
    if (!current(gen)) return;
    const rows = (data.scripts || []).map((sc) => {
      // The list has no content: a script's opens on demand.
      const shown = el('pre', { class: 'script-content mono' }, 'Loading…');
      const details = el('details', { class: 'script-details' }, el('summary', {}, 'content'), shown);
      details.addEventListener('toggle', () => {
        if (!details.open || details.dataset.loaded) return;
        details.dataset.loaded = '1';
        api('GET', path(sc.name)).then((full) => { shown.textContent = full.content; }, (e) => { shown.textContent = ''; showError(e); });
      });
      return el('tr', { 'data-script': sc.name },
        el('td', {}, el('a', { href: '#/scripts/' + encodeURIComponent(sc.name) }, sc.name)),
        el('td', {}, sc.description || ''),
        el('td', {}, fmtSize(sc.size)),
        el('td', {}, sc.timeout_seconds + ' s'),
        el('td', { class: 'mono small' }, (sc.sha256 || '').slice(0, 12)),
        timeCell(sc.updated_at),
        el('td', {}, details));
    });
    list.replaceChildren(table(['Name', 'Description', 'Size', 'Timeout', 'SHA-256', 'Updated', ''], rows, 'No commissioning script.'));
  })().catch((e) => { if (current(gen)) showError(e); });
}

function scriptView(view, name) {
  const gen = generation;
  const summary = el('p', { id: 'script-summary', class: 'muted' });
  const saved = el('p', { id: 'script-saved', class: 'notice', role: 'status', hidden: true });
  const slot = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  append(view, [el('p', {}, el('a', { href: '#/scripts' }, '← Commissioning scripts')), el('h1', {}, 'Script ' + name), summary, saved, slot]);

  function describe(sc) {
    summary.textContent = fmtSize(sc.size) + ', sha256 ' + sc.sha256 + ', created ' + fmtTime(sc.created_at) + ', updated ' + fmtTime(sc.updated_at) + '.';
  }

  (async () => {
    const sc = await api('GET', path(name));
    if (!current(gen)) return;
    describe(sc);
    const f = scriptFields(sc);
    const save = el('button', { type: 'submit', id: 'script-save' }, 'Save');
    const form = el('form', { id: 'edit-script', class: 'stack', onsubmit: async (ev) => {
      ev.preventDefault();
      clearError();
      say(saved, '');
      save.disabled = true;
      try {
        const nsc = await api('PUT', path(name), f.body());
        if (!current(gen)) return;
        describe(nsc);
        say(saved, 'Saved.');
      } catch (e) { if (current(gen)) showError(e); } finally { save.disabled = false; }
    } },
    el('div', { class: 'toolbar' }, field('Timeout (s)', f.timeout), field('Description', f.description)),
    field('Content', f.content),
    el('div', { class: 'toolbar' }, save, confirmTwice('Delete', 'Delete script ' + name + '? Machines commissioned from now on do not run it; past results stay.',
      async () => {
        try {
          await api('DELETE', path(name));
          if (current(gen)) location.hash = '#/scripts';
        } catch (e) { if (current(gen)) showError(e); }
      }, 'delete-script')));
    slot.replaceChildren(form);
  })().catch((e) => { if (current(gen)) showError(e); });
}
