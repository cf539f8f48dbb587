// The DAC Gateway console: plain JavaScript, no library. It calls the gateway's own FHIR API (/fhir) and the
// console's thin layer (/console/data/…). The operator's token, when authentication is on, is kept in this tab's
// sessionStorage (gone when the tab closes) and sent as an Authorization header: never in a URL, never in a cookie.
// Everything shown is set as text (textContent), never parsed as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'dac-gateway-console-token';
  const DAC_ISSUE = 'https://fhir.dac-gateway.org/CodeSystem/dac-issue';
  const DELIVERY_ID_SYSTEM = 'https://fhir.dac-gateway.org/delivery-id';
  const GATEWAY_AGENT = 'https://fhir.dac-gateway.org/client-id|dac-gateway';
  const page = document.body.dataset.page;
  const authOn = document.body.dataset.auth === 'on';

  // --- small helpers ---
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') element.className = value;
      else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
      else element.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }
  const $ = (selector) => document.querySelector(selector);
  function table(headings, rows, className) {
    return h('table', { class: className },
      h('thead', {}, h('tr', {}, headings.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((cell) => h('td', {}, cell))))));
  }
  const when = (text) => (text ? text.replace('T', ' ').replace(/\.\d+/, '').replace(/Z$/, ' UTC') : '—');
  const status = (code) => h('span', { class: `status s${String(code)[0]}xx` }, String(code));

  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  async function call(method, url, body, contentType) {
    const headers = { Accept: 'application/fhir+json, application/json' };
    if (contentType) headers['Content-Type'] = contentType;
    const current = token();
    if (current) headers.Authorization = `Bearer ${current}`;
    const response = await fetch(url, { method, headers, body, credentials: 'omit', cache: 'no-store' });
    const text = await response.text();
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
    return { status: response.status, ok: response.ok, json, text };
  }
  function problem(answer) {
    if (answer.status === 401) return 'This needs an operator token: paste one above (authentication is on).';
    if (answer.status === 403) return 'This token is not allowed to do that (an operator token is needed).';
    const issue = answer.json && answer.json.issue && answer.json.issue[0];
    return `HTTP ${answer.status}${issue ? `: ${issue.diagnostics || issue.code}` : ''}`;
  }
  function say(selector, text, isError) {
    const element = $(selector);
    if (!element) return;
    element.textContent = text;
    element.classList.toggle('error', Boolean(isError));
  }
  const entries = (bundle) => ((bundle && bundle.entry) || []).map((entry) => entry.resource).filter(Boolean);
  const code = (concept) => ((concept && concept.coding) || []).map((c) => c.code).join(', ') || (concept && concept.text) || '';
  const issueCode = (issue) => ((issue.details && issue.details.coding) || []).filter((c) => c.system === DAC_ISSUE).map((c) => c.code)[0] || issue.code;

  // --- the token (authentication on) ---
  const tokenForm = $('#token-form');
  if (tokenForm) {
    const show = () => say('#token-state', token() ? 'token set for this tab' : 'no token yet');
    tokenForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = $('#token').value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      $('#token').value = '';
      show();
      document.dispatchEvent(new Event('console-token'));
    });
    $('#token-forget').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); show(); });
    show();
  }

  // --- Examples ---
  function serviceRequestOf(answer) {
    for (const entry of (answer && answer.entry) || []) {
      const location = entry.response && entry.response.location;
      if (location && location.startsWith('ServiceRequest/')) return location.split('/_history')[0];
      const header = entry.resource;
      if (header && header.resourceType === 'MessageHeader' && header.focus && header.focus[0]) {
        const reference = header.focus[0].reference || '';
        const at = reference.indexOf('ServiceRequest/');
        if (at >= 0) return reference.slice(at);
      }
    }
    return null;
  }
  async function postExample(button) {
    const name = button.dataset.name;
    const box = document.querySelector(`.answer[data-for="${CSS.escape(name)}"]`);
    box.closest('tr').hidden = false;
    box.replaceChildren(h('p', {}, 'Posting…'));
    const file = await fetch(`/console/examples/file/${name}`, { cache: 'no-store' });
    const answer = await call('POST', button.dataset.endpoint, await file.text(), button.dataset.type);
    const parts = [h('p', { class: 'answer-status' }, 'Answer ', status(answer.status), answer.ok ? '' : ` — ${problem(answer)}`)];
    if (answer.json && answer.json.resourceType === 'OperationOutcome') {
      parts.push(h('ul', { class: 'issues' }, answer.json.issue.map((issue) =>
        h('li', {}, h('code', {}, issueCode(issue)), ' at ', h('code', {}, (issue.expression || []).join(', ') || '—'), ': ', issue.diagnostics || ''))));
    }
    const acknowledged = /(?:^|[\r\n])MSA\|([^|\r\n]*)\|[^|\r\n]*\|(ServiceRequest\/[^|\r\n]+)/.exec(answer.text);
    const reference = answer.ok ? serviceRequestOf(answer.json) || (acknowledged && acknowledged[2]) : null;
    if (reference) {
      const [request, tasks] = await Promise.all([
        call('GET', `/fhir/${reference}`),
        call('GET', `/fhir/Task?focus=${encodeURIComponent(reference)}&_count=100`),
      ]);
      const sr = request.json || {};
      const identifier = (sr.identifier || [])[0];
      const created = ((answer.json && answer.json.entry) || []).map((entry) => entry.response || {})
        .find((response) => (response.location || '').startsWith('ServiceRequest/'));
      parts.push(h('p', {}, 'ServiceRequest ', created ? [h('span', { class: 'entry-status' }, created.status), ', now '] : '',
        h('b', { class: 'sr-status' }, sr.status || '?'),
        identifier ? [' · ', h('a', { href: `/console/referral#${encodeURIComponent(identifier.value)}` }, 'its timeline')] : ''));
      parts.push(table(['Task', 'status', 'business status', 'owner'], entries(tasks.json).map((task) =>
        [code(task.code), task.status, code(task.businessStatus) || '—', (task.owner && (task.owner.display || task.owner.reference)) || '—']), 'tasks'));
    }
    parts.push(h('details', {}, h('summary', {}, 'Full answer'), h('pre', {}, answer.json ? JSON.stringify(answer.json, null, 2) : answer.text.replace(/\r\n?/g, '\n'))));
    box.replaceChildren(...parts);
    box.focus();
  }
  if (page === 'examples') {
    document.querySelectorAll('button.post').forEach((button) => button.addEventListener('click', () => postExample(button)));
    document.querySelectorAll('.answer').forEach((box) => box.setAttribute('tabindex', '-1'));
  }

  // --- Validate ---
  function isXml(text) { return text.trimStart().startsWith('<'); }
  function goTo(line) {
    const target = document.getElementById(`L${line}`);
    if (!target) return;
    document.querySelectorAll('#source li.current').forEach((li) => li.classList.remove('current'));
    target.classList.add('current');
    target.scrollIntoView({ block: 'center' });
    target.focus({ preventScroll: true });
  }
  async function validate(event) {
    event.preventDefault();
    const text = $('#document').value;
    if (!text.trim()) { say('#validate-state', 'Paste or upload a document first.', true); return; }
    say('#validate-state', 'Validating…');
    const profile = $('#profile').value.trim();
    const url = `/fhir/$validate${profile ? `?profile=${encodeURIComponent(profile)}` : ''}`;
    const answer = await call('POST', url, text, isXml(text) ? 'application/fhir+xml' : 'application/fhir+json');
    const outcome = answer.json && answer.json.resourceType === 'OperationOutcome' ? answer.json : null;
    if (!outcome) { say('#validate-state', problem(answer), true); return; }
    const issues = outcome.issue.filter((issue) => issue.code !== 'informational' || issue.severity !== 'information');
    const located = await call('POST', '/console/data/locate', JSON.stringify({
      document: text, issues: issues.map((issue) => ({ expression: (issue.expression || [])[0] || null, location: (issue.location || [])[0] || null })),
    }), 'application/json');
    const lines = (located.json && located.json.lines) || issues.map(() => null);
    const flagged = new Map();
    lines.forEach((line, index) => { if (line) flagged.set(line, [...(flagged.get(line) || []), issues[index]]); });
    $('#source').replaceChildren(...text.split(/\r\n|\r|\n/).map((content, index) => {
      const number = index + 1;
      const here = flagged.get(number);
      return h('li', { id: `L${number}`, tabindex: '-1', class: here ? `flagged ${here[0].severity}` : null,
        title: here ? here.map((issue) => `${issueCode(issue)}: ${issue.diagnostics || ''}`).join('\n') : null },
      h('span', { class: 'n', 'aria-hidden': 'true' }, number), h('code', {}, content || ' '));
    }));
    $('#issues').replaceChildren(...(issues.length ? issues.map((issue, index) => {
      const line = lines[index];
      const label = [h('span', { class: `severity ${issue.severity}` }, issue.severity), ' ', h('code', {}, issueCode(issue)),
        line ? ` (line ${line})` : '', ' ', issue.diagnostics || '',
        issue.expression ? [' ', h('code', { class: 'expression' }, issue.expression.join(', '))] : ''];
      return h('li', {}, line ? h('button', { type: 'button', class: 'issue', 'data-line': line, onclick: () => goTo(line) }, label) : h('span', { class: 'issue' }, label));
    }) : [h('li', { class: 'clear' }, 'No issue: the document is valid.')]));
    document.querySelector('.validation').hidden = false;
    const errors = issues.filter((issue) => issue.severity === 'error' || issue.severity === 'fatal').length;
    say('#validate-state', errors ? `${errors} error(s)` : 'valid');
    if (lines.find(Boolean)) goTo(lines.find(Boolean));
  }
  if (page === 'validate') {
    $('#validate-form').addEventListener('submit', validate);
    $('#document-file').addEventListener('change', async (event) => {
      const file = event.target.files[0];
      if (file) $('#document').value = await file.text();
    });
  }

  // --- Referral timeline ---
  function who(agent) {
    const party = agent.who || {};
    const identifier = party.identifier ? `${party.identifier.value}` : '';
    return [party.display, identifier, party.reference].filter(Boolean).join(' · ') || '—';
  }
  async function showReferral(event) {
    if (event) event.preventDefault();
    const identifier = $('#identifier').value.trim();
    if (!identifier) return;
    history.replaceState(null, '', `#${encodeURIComponent(identifier)}`);
    say('#referral-state', 'Loading…');
    const search = await call('GET', `/fhir/ServiceRequest?identifier=${encodeURIComponent(identifier)}`);
    if (!search.ok) { say('#referral-state', problem(search), true); return; }
    const request = entries(search.json).find((resource) => resource.resourceType === 'ServiceRequest');
    if (!request) { say('#referral-state', 'No referral with this identifier.', true); $('#referral').hidden = true; return; }
    const reference = `ServiceRequest/${request.id}`;
    const [versions, taskSearch, deciding] = await Promise.all([
      call('GET', `/fhir/${reference}/_history`),
      call('GET', `/fhir/Task?focus=${encodeURIComponent(reference)}&_count=100`),
      call('GET', `/fhir/Provenance?target=${encodeURIComponent(reference)}&_count=100`),
    ]);
    const tasks = entries(taskSearch.json).filter((resource) => resource.resourceType === 'Task');
    const [histories, provenances, deliveries, audits] = await Promise.all([
      Promise.all(tasks.map((task) => call('GET', `/fhir/Task/${task.id}/_history`))),
      Promise.all(tasks.map((task) => call('GET', `/fhir/Provenance?target=${encodeURIComponent(`Task/${task.id}`)}&_count=100`))),
      call('GET', `/console/data/deliveries?service_request=${encodeURIComponent(request.id)}&task=${encodeURIComponent(tasks.map((t) => t.id).join(','))}`),
      // Each delivery attempt leaves an AuditEvent (the gateway as requestor, the delivery id as entity, its answer
      // in outcomeDesc): they make each delivery's list of attempts.
      call('GET', `/fhir/AuditEvent?entity=${encodeURIComponent(reference)}&agent=${encodeURIComponent(GATEWAY_AGENT)}&_count=200`),
    ]);
    const attempts = new Map();
    for (const audit of entries(audits.json)) {
      if (audit.resourceType !== 'AuditEvent') continue;
      const delivery = (audit.entity || []).map((e) => e.what && e.what.identifier).find((i) => i && i.system === DELIVERY_ID_SYSTEM);
      if (!delivery) continue;
      if (!attempts.has(delivery.value)) attempts.set(delivery.value, []);
      attempts.get(delivery.value).push(audit);
    }
    const attemptList = (id) => {
      // The audit trail is granted by name (system/AuditEvent.rs): a token without it sees the count alone.
      if (!audits.ok) return h('span', { class: 'muted' }, 'not shown: needs system/AuditEvent.rs');
      const seen = (attempts.get(id) || []).sort((a, b) => String(a.recorded).localeCompare(String(b.recorded)));
      return seen.length ? h('ol', { class: 'attempts' }, seen.map((a) => h('li', { class: `attempt outcome-${a.outcome}` },
        h('span', { class: 'when' }, when(a.recorded)), ' ', a.outcomeDesc || (a.outcome === '0' ? 'delivered' : '—')))) : '—';
    };
    const byVersion = (a, b) => Number(a.meta.versionId) - Number(b.meta.versionId);
    $('#service-request').replaceChildren(
      h('p', {}, 'Status ', h('b', { class: 'sr-status' }, request.status), ` · ${code(request.code)} · authored ${when(request.authoredOn)}`,
        request.performer ? ` · routed to ${request.performer.map((p) => p.display || p.reference).join(', ')}` : ' · not routed'),
      table(['version', 'updated', 'status'], entries(versions.json).sort(byVersion).map((v) => [v.meta.versionId, when(v.meta.lastUpdated), v.status]), 'versions'));
    $('#tasks').replaceChildren(...tasks.map((task, index) => h('div', { class: 'task', 'data-task': code(task.code) },
      h('h3', {}, code(task.code), ' ', h('small', {}, `Task/${task.id} · owner ${(task.owner && (task.owner.display || task.owner.reference)) || '—'}`)),
      h('ol', { class: 'timeline' }, entries(histories[index].json).sort(byVersion).map((version) => h('li', { 'data-version': version.meta.versionId },
        h('span', { class: 'when' }, when(version.meta.lastUpdated)), ' ',
        h('span', { class: `task-status ${version.status}` }, version.status),
        code(version.businessStatus) ? ` · ${code(version.businessStatus)}` : '',
        version.statusReason ? ` · reason: ${code(version.statusReason)}` : '',
        ` · version ${version.meta.versionId}`))))));
    if (!tasks.length) $('#tasks').replaceChildren(h('p', {}, 'No Task.'));
    const seen = new Map();
    for (const answer of [deciding, ...provenances]) for (const resource of entries(answer.json)) if (resource.resourceType === 'Provenance') seen.set(resource.id, resource);
    const decisions = [...seen.values()].sort((a, b) => String(a.recorded).localeCompare(String(b.recorded)));
    $('#provenance').replaceChildren(decisions.length ? table(['recorded', 'what', 'who', 'about'], decisions.map((p) => [
      when(p.recorded), (p.activity && (p.activity.text || code(p.activity))) || (p.reason || []).map(code).join(', ') || '—',
      (p.agent || []).map(who).join('; '), (p.target || []).map((t) => t.reference).join(', ')]), 'provenance') : h('p', {}, 'No Provenance.'));
    const rows = (deliveries.json && deliveries.json.deliveries) || [];
    $('#deliveries').replaceChildren(!deliveries.ok ? h('p', { class: 'error' }, problem(deliveries)) : rows.length
      ? table(['queued', 'event', 'destination', 'status', 'attempts since queued', 'each attempt: when, answer', 'delivered / next attempt'], rows.map((d) => [
        when(d.created_at), d.event, d.destination, h('span', { class: `delivery ${d.status}` }, d.status), String(d.attempts), attemptList(d.id),
        when(d.delivered_at || d.next_attempt_at)]), 'deliveries') : h('p', {}, 'No delivery.'));
    $('#referral').hidden = false;
    $('#referral-refresh').disabled = false;
    say('#referral-state', `as of ${new Date().toLocaleTimeString()}`);
  }
  if (page === 'referral') {
    $('#referral-form').addEventListener('submit', showReferral);
    $('#referral-refresh').addEventListener('click', () => showReferral());
    if (location.hash.length > 1) { $('#identifier').value = decodeURIComponent(location.hash.slice(1)); showReferral(); }
  }

  // --- Outbox ---
  async function replay(id) {
    const answer = await call('POST', `/console/data/outbox/${encodeURIComponent(id)}/replay`);
    await loadOutbox();
    say('#outbox-state', answer.ok ? `Delivery ${id} queued again.` : problem(answer), !answer.ok);
  }
  async function loadOutbox() {
    const answer = await call('GET', '/console/data/outbox');
    if (!answer.ok) { say('#outbox-state', problem(answer), true); return; }
    const age = (seconds) => (seconds === null || seconds === undefined ? '—' : seconds < 120 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`);
    const destinations = answer.json.destinations;
    $('#destinations').replaceChildren(destinations.length ? table(['destination', 'waiting', 'oldest waiting', 'delivered', 'dead letters'],
      destinations.map((d) => [d.destination, String(d.pending), age(d.oldest_age_seconds), String(d.delivered), String(d.dead)]), 'destinations') : h('p', {}, 'Nothing sent yet.'));
    const dead = answer.json.dead_letters;
    $('#dead-letters').replaceChildren(dead.length ? table(['queued', 'delivery id', 'destination', 'event', 'attempts', 'last answer', ''], dead.map((d) => [
      when(d.created_at), h('code', {}, d.id), d.destination, d.event, String(d.attempts), d.last_error || '—',
      h('button', { type: 'button', class: 'replay', 'data-id': d.id, 'aria-label': `Replay delivery ${d.id}`, onclick: () => replay(d.id) }, 'Replay')]), 'dead') : h('p', {}, 'No dead letter.'));
    say('#outbox-state', `as of ${new Date().toLocaleTimeString()}`);
  }
  if (page === 'outbox') {
    $('#outbox-refresh').addEventListener('click', loadOutbox);
    document.addEventListener('console-token', loadOutbox);
    loadOutbox();
  }

  // --- Subscriptions ---
  const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
  const extensionValues = (element, name) => ((element && element.extension) || [])
    .filter((extension) => extension.url === `${BACKPORT}/${name}`).map((extension) => extension.valueString || extension.valueCode || extension.valueUnsignedInt);
  const topicName = (topic) => String(topic || '').split('/').pop() || '—';
  const parameter = (parameters, name) => ((parameters && parameters.parameter) || []).find((p) => p.name === name);
  const valueOf = (p) => (p ? p.valueString || p.valueCode || p.valueInstant || p.valueCanonical || (p.valueReference && p.valueReference.reference) || '' : '');
  let subscriptionsShown = new Map();
  async function showSubscription(id) {
    const subscription = subscriptionsShown.get(id);
    if (!subscription) { say('#subscriptions-state', `No Subscription ${id}.`, true); return; }
    history.replaceState(null, '', `#${encodeURIComponent(id)}`);
    document.querySelectorAll('#subscriptions tr[aria-current]').forEach((row) => row.removeAttribute('aria-current'));
    const row = document.querySelector(`#subscriptions tr[data-id="${CSS.escape(id)}"]`);
    if (row) row.setAttribute('aria-current', 'true');
    const statusAnswer = await call('GET', `/fhir/Subscription/${encodeURIComponent(id)}/$status`);
    const parameters = entries(statusAnswer.json).find((resource) => resource.resourceType === 'Parameters');
    const since = Number(valueOf(parameter(parameters, 'events-since-subscription-start')) || 0);
    const eventsAnswer = await call('GET', `/fhir/Subscription/${encodeURIComponent(id)}/$events?eventsSinceNumber=${Math.max(1, since - 19)}&content=id-only`);
    const notification = entries(eventsAnswer.json).find((resource) => resource.resourceType === 'Parameters');
    const events = ((notification && notification.parameter) || []).filter((p) => p.name === 'notification-event')
      .map((p) => Object.fromEntries((p.part || []).map((part) => [part.name, valueOf(part)])))
      .sort((a, b) => Number(b['event-number']) - Number(a['event-number']));
    $('#subscription-heading').textContent = `Subscription ${id}`;
    $('#subscription-status').replaceChildren(!statusAnswer.ok ? h('p', { class: 'error' }, problem(statusAnswer)) : h('dl', { class: 'facts' },
      h('dt', {}, '$status'), h('dd', {}, h('span', { class: `sub-status ${valueOf(parameter(parameters, 'status'))}` }, valueOf(parameter(parameters, 'status')) || '?')),
      h('dt', {}, 'events since start'), h('dd', { class: 'events-since' }, String(since)),
      h('dt', {}, 'topic'), h('dd', {}, h('code', {}, valueOf(parameter(parameters, 'topic')) || subscription.topic)),
      h('dt', {}, 'owner'), h('dd', {}, subscription.owner),
      h('dt', {}, 'outbox destination'), h('dd', {}, h('code', {}, `subscription/${id}`)),
      subscription.resource.error ? [h('dt', {}, 'error'), h('dd', { class: 'error' }, subscription.resource.error)] : ''));
    $('#subscription-events').replaceChildren(!eventsAnswer.ok ? h('p', { class: 'error' }, problem(eventsAnswer)) : events.length
      ? table(['event', 'occurred', 'focus'], events.map((event) => [event['event-number'], when(event.timestamp),
        h('code', {}, String(event.focus || '—').replace(/^.*\/fhir\//, ''))]), 'events')
      : h('p', {}, since ? 'No event kept (events are kept 7 days).' : 'No event yet.'));
    $('#subscription').hidden = false;
    $('#subscription').focus();
  }
  async function loadSubscriptions() {
    say('#subscriptions-state', 'Loading…');
    const [search, owners] = await Promise.all([call('GET', '/fhir/Subscription?_count=1000'), call('GET', '/console/data/subscriptions')]);
    if (!search.ok) { say('#subscriptions-state', problem(search), true); return; }
    if (!owners.ok) { say('#subscriptions-state', problem(owners), true); return; }
    const known = new Map(((owners.json && owners.json.subscriptions) || []).map((s) => [s.id, s]));
    const found = entries(search.json).filter((resource) => resource.resourceType === 'Subscription');
    subscriptionsShown = new Map(found.map((resource) => {
      const line = known.get(resource.id) || {};
      return [resource.id, { resource, owner: line.owner || '—', topic: resource.criteria, events: line.events_count }];
    }));
    $('#subscriptions').replaceChildren(found.length ? h('table', { class: 'subscriptions' },
      h('thead', {}, h('tr', {}, ['id', 'owner client', 'topic', 'filters', 'channel endpoint', 'payload', 'status', 'events', ''].map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, found.map((resource) => {
        const shown = subscriptionsShown.get(resource.id);
        const channel = resource.channel || {};
        const filters = extensionValues(resource._criteria, 'backport-filter-criteria');
        const content = extensionValues(channel._payload, 'backport-payload-content')[0];
        return h('tr', { 'data-id': resource.id },
          h('td', {}, h('code', {}, resource.id)),
          h('td', { class: 'owner' }, shown.owner),
          h('td', { title: resource.criteria }, topicName(resource.criteria)),
          h('td', { class: 'filters' }, filters.length ? filters.map((filter) => h('code', { class: 'filter' }, filter)) : '—'),
          h('td', { class: 'endpoint' }, h('code', {}, channel.endpoint || '—')),
          h('td', {}, `${content || '—'} · ${channel.payload || '—'}`),
          h('td', {}, h('span', { class: `sub-status ${resource.status}` }, resource.status), resource.error ? h('div', { class: 'error' }, resource.error) : ''),
          h('td', { class: 'events-count' }, shown.events === undefined ? '—' : String(shown.events)),
          h('td', {}, h('button', { type: 'button', class: 'show', 'aria-label': `Show Subscription ${resource.id}`, onclick: () => showSubscription(resource.id) }, 'Show')));
      }))) : h('p', {}, 'No Subscription.'));
    say('#subscriptions-state', `${found.length} Subscription(s) as of ${new Date().toLocaleTimeString()}`);
    const selected = decodeURIComponent(location.hash.slice(1));
    if (selected && subscriptionsShown.has(selected)) await showSubscription(selected);
  }
  if (page === 'subscriptions') {
    $('#subscriptions-refresh').addEventListener('click', loadSubscriptions);
    document.addEventListener('console-token', loadSubscriptions);
    loadSubscriptions();
  }
})();
