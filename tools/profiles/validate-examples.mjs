// Validates the example referrals (examples/*.json) against the R4 base definitions and DAC Gateway's own
// profiles (profiles/StructureDefinition-*.json, which carry snapshots) with @medplum/core, an independent
// validator: cardinality, types, date formats, fixed values, slices, FHIRPath invariants (it checks no bindings).
//
//   node tools/profiles/validate-examples.mjs [FILE...]      (default: examples/*.json)
//   node tools/profiles/validate-examples.mjs --mutations    (the profiles' rules catch broken copies of examples)
//
// Prints one line per resource, OK or its errors (or, with --mutations, one line per broken copy: caught or
// MISSED), and exits 1 when any resource fails (or any broken copy passes).

import { OperationOutcomeError, validateResource } from '@medplum/core';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { indexDefinitions, root } from './definitions.mjs';

const ours = indexDefinitions();

/** The profile each resource type of a referral is checked against (none: R4 only). */
const profileOf = {
  Patient: 'dac-patient',
  PractitionerRole: 'dac-practitionerrole',
  ServiceRequest: 'dac-servicerequest',
  Consent: 'dac-consent',
  CareTeam: 'dac-careteam',
  Task: 'dac-task',
  MessageHeader: 'dac-messageheader',
};

function check(resource, profileId) {
  const profile = profileId ? ours.get(profileId) : undefined;
  if (profileId && !profile) {
    return [`profile ${profileId} not found under profiles/`];
  }
  try {
    const issues = validateResource(resource, profile ? { profile } : {});
    return issues.filter((issue) => issue.severity === 'error' || issue.severity === 'fatal').map(describe);
  } catch (error) {
    if (error instanceof OperationOutcomeError) {
      return (error.outcome.issue ?? [])
        .filter((issue) => issue.severity === 'error' || issue.severity === 'fatal')
        .map(describe);
    }
    throw error;
  }
}

function describe(issue) {
  const where = issue.expression?.join(', ') ?? '';
  return `${where}: ${issue.details?.text ?? issue.diagnostics ?? issue.code}`;
}

const mutationsMode = process.argv[2] === '--mutations';
const files = process.argv.length > 2 && !mutationsMode
  ? process.argv.slice(2).map((file) => resolve(file))
  : readdirSync(join(root, 'examples'))
      .filter((name) => name.endsWith('.json') && name !== 'expected.json') // expected.json: the kit's
      .sort()
      .map((name) => join(root, 'examples', name));

if (mutationsMode) {
  process.exit(runMutations());
}

let failures = 0;
let checked = 0;
function report(label, errors) {
  checked += 1;
  if (errors.length === 0) {
    console.log(`OK    ${label}`);
    return;
  }
  failures += 1;
  console.log(`FAIL  ${label}`);
  for (const error of errors) {
    console.log(`        ${error}`);
  }
}

/** dac-referral-message for the referral events; other messages (opposition) are checked against R4 only. */
function bundleProfile(bundle) {
  if (bundle.type !== 'message') {
    return undefined;
  }
  const event = bundle.entry?.[0]?.resource?.eventCoding?.code;
  return event === 'referral-request' || event === 'referral-update' ? 'dac-referral-message' : undefined;
}

for (const file of files) {
  const content = JSON.parse(readFileSync(file, 'utf8'));
  const name = relative(root, file) || basename(file);
  if (content.resourceType !== 'Bundle') {
    const profileId = profileOf[content.resourceType];
    report(`${name} ${content.resourceType} ${profileId ?? 'R4'}`, check(content, profileId));
    continue;
  }
  const profileId = bundleProfile(content);
  report(`${name} Bundle (${content.type}) ${profileId ?? 'R4'}`, check(content, profileId));
  (content.entry ?? []).forEach((entry, index) => {
    const resource = entry.resource;
    if (!resource) {
      return;
    }
    const entryProfile = profileOf[resource.resourceType];
    report(`${name} entry[${index}] ${resource.resourceType} ${entryProfile ?? 'R4'}`, check(resource, entryProfile));
  });
}

console.log(`${checked - failures} of ${checked} resources valid`);
process.exit(failures === 0 ? 0 : 1);

// ---------------------------------------------------------------------------------------------------------------
// --mutations: each rule of the profiles, broken on purpose in a copy of an example, must be caught.

function runMutations() {
  const load = (file) => JSON.parse(readFileSync(join(root, 'examples', file), 'utf8'));
  const entry = (bundle, type) => bundle.entry.find((item) => item.resource.resourceType === type).resource;
  const INS_NIR = 'urn:oid:1.2.250.1.213.1.4.8';
  const task = () => ({
    resourceType: 'Task',
    status: 'requested',
    intent: 'order',
    code: {
      coding: [{ system: 'https://fhir.dac-gateway.org/CodeSystem/dac-task-type', code: 'gp-validation' }],
    },
    businessStatus: {
      coding: [{ system: 'https://fhir.dac-gateway.org/CodeSystem/dac-task-business-status', code: 'created' }],
    },
    focus: { reference: 'ServiceRequest/1' },
    for: { reference: 'Patient/1' },
    authoredOn: '2025-03-10T10:15:00+01:00',
    owner: { reference: 'PractitionerRole/1' },
    restriction: { period: { end: '2025-03-17T10:15:00+01:00' } },
  });
  const patient = () => entry(load('referral-gp.json'), 'Patient');
  const serviceRequest = () => entry(load('referral-gp.json'), 'ServiceRequest');
  const consent = () => entry(load('referral-gp.json'), 'Consent');
  const birthPlace = 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace';
  const cases = [
    ['valid Task (as the gateway builds it)', 'dac-task', task, null],
    ['Task rejected without statusReason', 'dac-task', () => ({ ...task(), status: 'rejected' }), 'dac-task-1'],
    ['Task cancelled with statusReason', 'dac-task', () => ({ ...task(), status: 'cancelled', statusReason: { text: 'x' } }), null],
    ['Task without owner', 'dac-task', () => ({ ...task(), owner: undefined }), 'owner'],
    ['Task without focus', 'dac-task', () => ({ ...task(), focus: undefined }), 'focus'],
    ['INS without birth place', 'dac-patient', () => {
      const p = patient();
      p.extension = p.extension.filter((e) => e.url !== birthPlace);
      return p;
    }, 'dac-patient-1'],
    ['INS with a birth place without INSEE code', 'dac-patient', () => {
      const p = patient();
      p.extension.find((e) => e.url === birthPlace).valueAddress = { city: 'Brest' };
      return p;
    }, 'dac-patient-1'],
    ['INS with a birth place giving the INSEE code in district', 'dac-patient', () => {
      const p = patient();
      p.extension.find((e) => e.url === birthPlace).valueAddress = { city: 'Brest', district: '29019' };
      return p;
    }, null],
    ['INS without an official name', 'dac-patient', () => ({ ...patient(), name: [{ use: 'usual', family: 'X', given: ['Y'] }] }), 'dac-patient-1'],
    ['INS without birth date', 'dac-patient', () => ({ ...patient(), birthDate: undefined }), 'dac-patient-1'],
    ['INS without gender', 'dac-patient', () => ({ ...patient(), gender: undefined }), 'dac-patient-1'],
    ['INS of the wrong shape', 'dac-patient', () => {
      const p = patient();
      p.identifier[0].value = '1410629019087';
      return p;
    }, 'dac-patient-3'],
    ['INS-NIR without value', 'dac-patient', () => {
      const p = patient();
      p.identifier[0].value = undefined;
      return p;
    }, ['value', 'dac-patient-3']],
    ['local identifier, no INS, no birth date', 'dac-patient', () => ({
      ...patient(),
      identifier: [{ system: 'https://hopital.example.org/ipp', value: '42' }],
      birthDate: undefined,
    }), 'dac-patient-2'],
    ['local identifier, no INS, no birth place: fine', 'dac-patient', () => ({
      ...patient(),
      identifier: [{ system: 'https://hopital.example.org/ipp', value: '42' }],
      extension: [],
    }), null],
    ['patient without identifier', 'dac-patient', () => ({ ...patient(), identifier: undefined }), 'identifier'],
    ['patient without address', 'dac-patient', () => ({ ...patient(), address: undefined }), 'address'],
    ['address with neither INSEE code nor postal code', 'dac-patient', () => ({ ...patient(), address: [{ city: 'Nantes' }] }), 'dac-patient-4'],
    ['ServiceRequest intent plan', 'dac-servicerequest', () => ({ ...serviceRequest(), intent: 'plan' }), 'intent'],
    ['ServiceRequest without identifier', 'dac-servicerequest', () => ({ ...serviceRequest(), identifier: undefined }), 'identifier'],
    ['ServiceRequest identifier without system', 'dac-servicerequest', () => ({ ...serviceRequest(), identifier: [{ value: 'X' }] }), 'system'],
    ['ServiceRequest without code', 'dac-servicerequest', () => ({ ...serviceRequest(), code: undefined }), 'code'],
    ['ServiceRequest without requester', 'dac-servicerequest', () => ({ ...serviceRequest(), requester: undefined }), 'requester'],
    ['ServiceRequest dac-gp-validation without date', 'dac-servicerequest', () => ({
      ...serviceRequest(),
      extension: [{
        url: 'https://fhir.dac-gateway.org/StructureDefinition/dac-gp-validation',
        extension: [{ url: 'validator', valueReference: { reference: 'Practitioner/1' } }],
      }],
    }), 'date', 'it does not check extensions against their definitions'],
    ['Consent not citing L1110-12', 'dac-consent', () => ({ ...consent(), policyRule: { text: 'RGPD' } }), 'dac-consent-1'],
    ['Consent citing L1110-12 by policy.uri', 'dac-consent', () => ({
      ...consent(),
      policyRule: undefined,
      policy: [{ uri: 'https://www.legifrance.gouv.fr/codes/article_lc/L1110-12' }],
    }), null],
    ['Consent without provision.type', 'dac-consent', () => ({ ...consent(), provision: {} }), 'provision'],
    ['Consent without dateTime', 'dac-consent', () => ({ ...consent(), dateTime: undefined }), 'dateTime'],
    ['CareTeam participant without member', 'dac-careteam', () => {
      const careTeam = entry(load('referral-social-worker.json'), 'CareTeam');
      careTeam.participant[0].member = undefined;
      return careTeam;
    }, 'member', "it checks a profile's backbone elements against the base definition"],
    ['PractitionerRole without practitioner', 'dac-practitionerrole', () => ({
      ...entry(load('referral-gp.json'), 'PractitionerRole'),
      practitioner: undefined,
    }), 'practitioner'],
    ['MessageHeader event of another system', 'dac-messageheader', () => {
      const header = entry(load('message-referral-gp.json'), 'MessageHeader');
      header.eventCoding.system = 'http://example.org/events';
      return header;
    }, 'system'],
    ['MessageHeader without focus', 'dac-messageheader', () => ({
      ...entry(load('message-referral-gp.json'), 'MessageHeader'),
      focus: undefined,
    }), 'focus'],
    ['referral message not starting with its MessageHeader', 'dac-referral-message', () => {
      const bundle = load('message-referral-gp.json');
      bundle.entry.push(bundle.entry.shift());
      return bundle;
    }, ['dac-message-1', 'bdl-12']],
    ['referral message without ServiceRequest', 'dac-referral-message', () => {
      const bundle = load('message-referral-gp.json');
      bundle.entry = bundle.entry.filter((item) => item.resource.resourceType !== 'ServiceRequest');
      return bundle;
    }, 'dac-message-2'],
    ['referral message of type collection', 'dac-referral-message', () => ({ ...load('message-referral-gp.json'), type: 'collection' }), 'type'],
  ];
  // A case with a fourth item is a rule @medplum/core cannot check (the reason): reported, not counted.
  let missed = 0;
  let limits = 0;
  for (const [label, profileId, make, expected, limit] of cases) {
    const errors = check(make(), profileId);
    const wanted = expected === null ? [] : [expected].flat();
    const caught = expected === null ? errors.length === 0 : errors.some((e) => wanted.some((w) => e.includes(w)));
    const tag = expected === null ? 'valid ' : 'caught';
    if (!caught && limit) {
      limits += 1;
      console.log(`n/a    ${label} (${profileId}, expects ${wanted.join(' or ')}): @medplum/core limit, ${limit}`);
      continue;
    }
    if (!caught) {
      missed += 1;
    }
    console.log(`${caught ? tag : 'MISSED'} ${label} (${profileId}${wanted.length ? `, expects ${wanted.join(' or ')}` : ''})`);
    if (!caught) {
      for (const error of errors) {
        console.log(`         ${error}`);
      }
    }
  }
  console.log(`${cases.length - missed - limits} of ${cases.length} cases as expected, ${limits} beyond @medplum/core`);
  return missed === 0 ? 0 : 1;
}
