// Rackplane operator UI: messages the region refused (#/rejected). A
// message on NATS that is no valid event (bad JSON, an unknown type, data
// its schema refuses, a rack speaking for another) is kept aside with why,
// not in the event log; GET /api/v1/rejected-events lists the newest
// first, up to a limit, with no cursor. No event announces a refusal, so
// the list is read again on a slow timer and on Reload.
import { api, append, current, el, every, generation, registerView, short, table, timeCell } from './core.js';

registerView('rejected', rejectedView);

const REJECTED_POLL_MS = 15000;
const LIMITS = [100, 1000]; // the API's default and its most

function rejectedView(view, query) {
  const gen = generation;
  const limit = LIMITS.includes(Number(query.get('limit'))) ? Number(query.get('limit')) : LIMITS[0];
  const list = el('div', { id: 'rejected-list' }, el('p', { class: 'muted' }, 'Loading…'));
  const note = el('p', { class: 'muted', role: 'status' });
  append(view, [el('h1', {}, 'Refused messages'),
    el('p', { class: 'hint' }, 'Messages on NATS the region did not take into the event log, newest first, with why. ',
      'A rack sending these runs another version or is misconfigured; they change nothing. ',
      el('a', { href: '#/events' }, 'The event log')),
    note, list]);

  async function load() {
    const d = await api('GET', '/api/v1/rejected-events?limit=' + limit);
    if (!current(gen)) return;
    const items = d.rejected_events || [];
    const rows = items.map((r) => el('tr', { 'data-rejected-id': String(r.id) },
      timeCell(r.received_at),
      el('td', {}, el('strong', { class: 'reason' }, r.reason), r.detail ? el('div', { class: 'small detail' }, short(r.detail, 400)) : null),
      el('td', { class: 'mono type' }, r.type || el('span', { class: 'muted' }, 'unknown')),
      el('td', { class: 'mono source' }, r.source || ''),
      el('td', { class: 'mono small' }, r.nats_subject),
      el('td', { class: 'mono small' }, r.event_id || '')));
    note.replaceChildren('The newest ' + limit + ' at most; read ' + new Date().toISOString().slice(11, 19) + 'Z. ',
      ...(items.length === limit && limit < LIMITS[LIMITS.length - 1]
        ? [el('a', { href: '#/rejected?limit=' + LIMITS[LIMITS.length - 1], id: 'rejected-more' }, 'Show up to ' + LIMITS[LIMITS.length - 1])] : []));
    list.replaceChildren(table(['Received', 'Reason', 'Type', 'Source', 'NATS subject', 'Event id'], rows,
      'The region has refused no message.'));
  }
  every(REJECTED_POLL_MS, load);
}
