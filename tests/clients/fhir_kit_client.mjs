// fhir-kit-client (Node) against a running gateway: what tests/clients/test_fhir_kit_client.py asks, answered as
// one JSON object on stdout. Input (argv[2], JSON): base, authorization (or null), a referral transaction, a
// message Bundle, two Consents with their identifiers, and a gp-validation Task (or null).
import { pathToFileURL } from 'node:url';

const input = JSON.parse(process.argv[2]);
const { Client } = await import(pathToFileURL(input.module).href);
const client = new Client({
  baseUrl: input.base,
  customHeaders: input.authorization ? { Authorization: input.authorization } : {},
});
const out = {};

// a transaction: posted to the base with a trailing slash (POST /fhir/)
const answer = await client.transaction({ body: input.referral });
out.transactionType = answer.type;
const patientId = answer.entry.find((e) => e.fullUrl.includes('/Patient/')).response.location.split('/')[1];

// read, and search with paging to the end
out.read = (await client.read({ resourceType: 'Patient', id: patientId })).id === patientId;
let page = await client.search({ resourceType: 'Patient', searchParams: { _count: 1 } });
const ids = [];
for (;;) {
  for (const entry of page.entry ?? []) ids.push(entry.resource.id);
  const next = client.nextPage({ bundle: page });
  if (!next) break;
  page = await next;
}
out.pagedIds = ids;

// conditional create both ways, each repeated
const header = { headers: { 'If-None-Exist': `identifier=${input.consentHeader.identifier}` } };
const h1 = await client.create({ resourceType: 'Consent', body: input.consentHeader.body, options: header });
const h2 = await client.create({ resourceType: 'Consent', body: input.consentHeader.body, options: header });
const url = `Consent?identifier=${encodeURIComponent(input.consentUrl.identifier)}`;
// (its create() takes no search parameters: the raw request, as fhirpy's create(identifier=…) sends it)
const raw = { method: 'POST', body: input.consentUrl.body, options: { headers: { 'Content-Type': 'application/fhir+json' } } };
const u1 = await client.request(url, raw);
const u2 = await client.request(url, raw);
out.conditional = { header: [h1.id, h2.id], url: [u1.id, u2.id] };
const counted = await client.search({
  resourceType: 'Consent',
  searchParams: { identifier: input.consentHeader.identifier },
});
out.matchingConsents = counted.total;

// history, $validate, $process-message
const history = await client.history({ resourceType: 'Consent', id: h1.id });
out.historyMethods = history.entry.map((e) => e.request.method);
out.typeHistory = (await client.history({ resourceType: 'Consent' })).type;
const validated = await client.operation({ name: '$validate', resourceType: 'Consent', input: input.consentUrl.body });
out.validate = validated.resourceType;
const message = await client.operation({ name: '$process-message', input: input.message });
out.message = message.entry[0].resource.response.code;

// update with a version, and PATCH (JSON Patch), on a Task
if (input.task) {
  const versioned = { headers: { 'If-Match': 'W/"1"' } };
  const accepted = await client.update({
    resourceType: 'Task', id: input.task.id, body: { ...input.task, status: 'accepted' }, options: versioned,
  });
  const patched = await client.patch({
    resourceType: 'Task', id: input.task.id, options: { headers: { 'If-Match': 'W/"2"' } },
    jsonPatch: [{ op: 'replace', path: '/status', value: 'in-progress' }],
  });
  out.task = [accepted.meta.versionId, patched.meta.versionId, patched.status];
  const taskHistory = await client.history({ resourceType: 'Task', id: input.task.id });
  out.taskHistoryMethods = taskHistory.entry.map((e) => e.request.method);
}

// errors: rejected with the response, whose data is the OperationOutcome
try {
  await client.read({ resourceType: 'Patient', id: 'no-such-patient' });
  out.notFound = null;
} catch (error) {
  out.notFound = [error.response.status, error.response.data.resourceType];
}
try {
  await client.create({ resourceType: 'Consent', body: { ...input.consentUrl.body, status: 'not-a-status' } });
  out.invalid = null;
} catch (error) {
  out.invalid = [error.response.status, error.response.data.issue[0].expression];
}
process.stdout.write(JSON.stringify(out));
