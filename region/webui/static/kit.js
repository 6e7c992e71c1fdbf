// Rackplane operator UI: helpers the configuration screens (preseeds,
// tokens, storage, commissioning scripts) share beyond core.js: requests
// that need headers both ways (If-Match, ETag) or a text body, a button
// that asks twice, a unified diff drawn line by line and a secret shown
// once.
import { $, el, onStop, signOut } from './core.js';

// request is core.js's, here too for the screens that import it from kit.js.
export { request } from './core.js';

// etagVersion reads the version out of an ETag such as "3".
export function etagVersion(etag) {
  const n = Number(String(etag || '').replace(/^W\//, '').replace(/"/g, ''));
  return Number.isInteger(n) && n > 0 ? n : 0;
}

// confirmTwice is a button that asks before it acts: the first click
// shows the question with Yes and Cancel beside it, and only Yes runs
// onYes. cls names the button (and the Yes button is cls + '-yes').
export function confirmTwice(label, question, onYes, cls) {
  const button = el('button', { type: 'button', class: 'secondary ' + (cls || '') }, label);
  const yes = el('button', { type: 'button', class: 'danger ' + (cls ? cls + '-yes' : '') }, 'Yes, ' + label.toLowerCase());
  const no = el('button', { type: 'button', class: 'secondary ' + (cls ? cls + '-no' : '') }, 'Cancel');
  const box = el('span', { class: 'confirm inline-confirm', role: 'alertdialog', hidden: true }, question, ' ', yes, ' ', no);
  const node = el('span', { class: 'confirm-twice' }, button, box);
  button.addEventListener('click', () => { button.hidden = true; box.hidden = false; no.focus(); });
  no.addEventListener('click', () => { box.hidden = true; button.hidden = false; });
  yes.addEventListener('click', async () => {
    box.hidden = true;
    button.hidden = false;
    button.disabled = true;
    try { await onYes(); } finally { button.disabled = false; }
  });
  return node;
}

// diffView draws a unified diff line by line: the two file lines, added,
// removed and unchanged lines each with its class, as text.
export function diffView(text, id) {
  const lines = text.replace(/\n$/, '').split('\n');
  const rows = lines.map((line, i) => {
    let cls = 'diff-ctx';
    if (i < 2 && (line.startsWith('--- ') || line.startsWith('+++ '))) cls = 'diff-file';
    else if (line.startsWith('@@')) cls = 'diff-hunk';
    else if (line.startsWith('+')) cls = 'diff-add';
    else if (line.startsWith('-')) cls = 'diff-del';
    return el('div', { class: 'diff-line ' + cls }, line === '' ? ' ' : line);
  });
  const changed = lines.slice(2).filter((l) => l.startsWith('+') || l.startsWith('-')).length;
  return el('div', { class: 'diff', id: id || null },
    el('div', { class: 'diff-lines mono' }, rows),
    changed === 0 ? el('p', { class: 'muted' }, 'The two versions have the same content.') : null);
}

// secretBox shows a secret once, in a read-only field with Copy and Done.
// The secret lives only in that field: Done, or leaving the screen
// (signing out included), empties it, and nothing else on the page keeps
// it. Call it while the screen is current (the box is forgotten with it).
export function secretBox(id, title, secret, warning) {
  const field = el('input', { id, type: 'text', readonly: true, class: 'secret mono', spellcheck: 'false', size: 80, 'aria-label': title });
  field.value = secret;
  const note = el('span', { class: 'notice', role: 'status' });
  const copy = el('button', { type: 'button', class: 'secondary copy-secret' }, 'Copy');
  const done = el('button', { type: 'button', class: 'done-secret' }, 'Done, I kept it');
  const box = el('div', { class: 'secret-box', role: 'status' },
    el('p', {}, el('strong', {}, title)), el('p', { class: 'warning' }, warning),
    el('div', { class: 'toolbar' }, field, copy, done, note));
  const forget = () => {
    field.value = '';
    box.remove();
  };
  copy.addEventListener('click', async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      note.textContent = 'Copied.';
    } catch (e) {
      // Without the clipboard API (an address that is not a secure
      // context), the field is selected for the operator to copy.
      note.textContent = 'Selected: copy it with Ctrl+C.';
    }
  });
  done.addEventListener('click', forget);
  onStop(forget);
  setTimeout(() => { field.focus(); field.select(); }, 0);
  return box;
}

// tokenID is the id inside an API token (rp_<id without dashes>_<secret>),
// so the page knows which listed token it signed in with.
export function tokenID(t) {
  const m = /^rp_([0-9a-f]{32})_/.exec(t || '');
  return m ? m[1] : '';
}

// signedOutBy signs out with a message of the page's own, not the
// region's refusal.
export function signedOutBy(message) {
  signOut('');
  const m = $('login-message');
  m.textContent = message;
  m.hidden = false;
}

// say puts a notice in node, or empties it.
export function say(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

// field is a labelled form control.
export function field(label, control, hint) {
  return el('label', {}, label, control, hint ? el('span', { class: 'small muted' }, hint) : null);
}
