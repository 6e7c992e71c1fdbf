// Rackplane operator UI: API tokens and rack join tokens. A token's
// secret is shown once, when it is made, in a read-only field; the page
// keeps it nowhere else and forgets it when the operator is done or
// leaves the screen. Revoking is asked twice; revoking the token this tab
// signed in with signs the tab out, saying why.
import { api, append, clearError, current, el, fmtTime, generation, registerView, showError, statusBadge, table, timeCell, token } from './core.js';
import { confirmTwice, field, say, secretBox, signedOutBy, tokenID } from './kit.js';

registerView('tokens', tokensView);

function tokensView(view) {
  const gen = generation;
  const apiList = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const apiSecret = el('div', { id: 'token-secret-slot' });
  const apiNote = el('p', { id: 'token-result', class: 'notice', role: 'status', hidden: true });
  const name = el('input', { id: 'new-token-name', required: true, placeholder: 'ci-deployer', spellcheck: 'false', size: 24 });
  const actor = el('input', { id: 'new-token-actor', placeholder: '(yours)', spellcheck: 'false', size: 20,
    title: 'who the audit log names for what the token does; empty: your own actor' });
  const apiForm = el('form', { id: 'create-token', class: 'inline', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    say(apiNote, '');
    const body = { name: name.value.trim() };
    if (actor.value.trim()) body.actor = actor.value.trim();
    try {
      const t = await api('POST', '/api/v1/tokens', body);
      if (!current(gen)) return;
      name.value = '';
      actor.value = '';
      apiSecret.replaceChildren(secretBox('new-token-secret', 'API token ' + t.name + ' (actor ' + t.actor + ')', t.token,
        'This is the only time the region shows this token: it keeps only a hash. Copy it now into where it will be used; ' +
        'anyone holding it acts as ' + t.actor + '.'));
      await loadAPI();
    } catch (e) { if (current(gen)) showError(e); }
  } }, field('Name', name), field('Actor', actor), el('button', { type: 'submit' }, 'Create token'));

  const joinList = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const joinSecret = el('div', { id: 'join-token-secret-slot' });
  const joinNote = el('p', { id: 'join-token-result', class: 'notice', role: 'status', hidden: true });
  const ttl = el('input', { id: 'new-join-token-ttl', placeholder: '24h', size: 8, spellcheck: 'false',
    title: 'a duration such as 30m or 24h; empty: 24h' });
  const joinForm = el('form', { id: 'create-join-token', class: 'inline', onsubmit: async (ev) => {
    ev.preventDefault();
    clearError();
    say(joinNote, '');
    const body = ttl.value.trim() ? { ttl: ttl.value.trim() } : {};
    try {
      const t = await api('POST', '/api/v1/join-tokens', body);
      if (!current(gen)) return;
      ttl.value = '';
      joinSecret.replaceChildren(secretBox('new-join-token-secret', 'Join token, valid until ' + fmtTime(t.expires_at), t.token,
        'This is the only time the region shows this join token. Put it in a file for rackd -join-token-file on the racks ' +
        'that should join; any rack holding it can join until it expires or is revoked.'));
      await loadJoin();
    } catch (e) { if (current(gen)) showError(e); }
  } }, field('Valid for (30m, 24h…)', ttl), el('button', { type: 'submit' }, 'Create join token'));

  append(view, [el('h1', {}, 'Tokens'),
    el('h2', {}, 'API tokens'),
    el('p', { class: 'hint' }, 'Bearer tokens for the API and this page. They do not expire: revoke one that is no longer needed. ' +
      'The region stores only a hash of each.'),
    apiNote, apiSecret, apiList, el('h3', {}, 'Create an API token'), apiForm,
    el('h2', {}, 'Rack join tokens'),
    el('p', { class: 'hint' }, 'A new rack joins NATS with a join token and is then given a credential of its own; ' +
      'revoking a join token stops further joins with it, not the racks that joined.'),
    joinNote, joinSecret, joinList, el('h3', {}, 'Create a join token'), joinForm]);

  const mine = tokenID(token());

  async function loadAPI() {
    const data = await api('GET', '/api/v1/tokens');
    if (!current(gen)) return;
    const rows = (data.tokens || []).map((t) => {
      const own = mine !== '' && t.id.replace(/-/g, '') === mine;
      return el('tr', { 'data-token-id': t.id, class: t.revoked_at ? 'revoked' : null },
        el('td', {}, t.name, own ? el('span', { class: 'muted' }, ' (this tab)') : null),
        el('td', {}, t.actor),
        timeCell(t.created_at),
        el('td', {}, t.created_by),
        timeCell(t.last_used_at),
        el('td', {}, t.revoked_at ? [statusBadge('revoked'), ' ', el('span', { class: 'small mono' }, fmtTime(t.revoked_at))] : statusBadge('active')),
        el('td', { class: 'mono small' }, t.id),
        el('td', {}, t.revoked_at ? null : confirmTwice('Revoke',
          own ? 'Revoke ' + t.name + '? It is the token this tab signed in with: the page signs out at once.'
            : 'Revoke ' + t.name + '? Whatever uses it is refused from now on.',
          () => revokeAPI(t, own), 'revoke-token')));
    });
    apiList.replaceChildren(table(['Name', 'Actor', 'Created', 'Created by', 'Last used', 'Status', 'ID', ''], rows, 'No API token.'));
  }

  async function revokeAPI(t, own) {
    clearError();
    try {
      await api('DELETE', '/api/v1/tokens/' + encodeURIComponent(t.id));
      if (own) {
        signedOutBy('You revoked the token this tab was signed in with (' + t.name + '). Sign in with another token.');
        return;
      }
      if (!current(gen)) return;
      say(apiNote, 'Token ' + t.name + ' revoked.');
      await loadAPI();
    } catch (e) { if (current(gen)) showError(e); }
  }

  async function loadJoin() {
    const data = await api('GET', '/api/v1/join-tokens');
    if (!current(gen)) return;
    const now = Date.now();
    const rows = (data.join_tokens || []).map((t) => {
      const expired = new Date(t.expires_at).getTime() <= now;
      const state = t.revoked_at ? 'revoked' : expired ? 'expired' : 'active';
      return el('tr', { 'data-join-token-id': t.id, class: state === 'active' ? null : state },
        el('td', { class: 'mono small' }, t.id),
        timeCell(t.created_at),
        el('td', {}, t.created_by),
        timeCell(t.expires_at),
        el('td', {}, statusBadge(state), t.revoked_at ? [' ', el('span', { class: 'small mono' }, fmtTime(t.revoked_at))] : null),
        el('td', {}, String(t.racks)),
        el('td', {}, state !== 'active' ? null : confirmTwice('Revoke',
          'Revoke this join token? No rack can join with it any more; racks that joined keep their credentials.',
          () => revokeJoin(t), 'revoke-join-token')));
    });
    joinList.replaceChildren(table(['ID', 'Created', 'Created by', 'Expires', 'Status', 'Racks joined', ''], rows, 'No join token.'));
  }

  async function revokeJoin(t) {
    clearError();
    try {
      await api('DELETE', '/api/v1/join-tokens/' + encodeURIComponent(t.id));
      if (!current(gen)) return;
      say(joinNote, 'Join token ' + t.id + ' revoked.');
      await loadJoin();
    } catch (e) { if (current(gen)) showError(e); }
  }

  loadAPI().catch((e) => { if (current(gen)) showError(e); });
  loadJoin().catch((e) => { if (current(gen)) showError(e); });
}
