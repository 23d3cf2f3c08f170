// The runnable examples of docs/composition.md run as written (the `peftjs` umbrella resolved to the sources).
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const doc = readFileSync(fileURLToPath(new URL('../../../docs/composition.md', import.meta.url)), 'utf8');
const examples = [...doc.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);

// trains on real text: on the plain cpu backend (the parity project) that takes minutes; wasm runs it
describe.skipIf(process.env.PEFTJS_TEST_BACKEND === 'cpu')('docs/composition.md examples', () => {
  it('there are runnable examples for every block and the mixed setups', () => {
    expect(examples.length).toBeGreaterThanOrEqual(6);
  });
  for (const [i, code] of examples.entries()) {
    it(`example ${i + 1} runs: ${code.split('\n').find((l) => /set|train/.test(l))?.trim().slice(0, 60)}`, async () => {
      const dir = mkdtempSync(join(fileURLToPath(new URL('.', import.meta.url)), '.doc-example-'));
      const file = join(dir, `example${i}.mjs`);
      // saved folders go to a temporary directory
      writeFileSync(file, code.replace(/savePretrained\('([^']+)'\)/g, (_, n) => `savePretrained('${dir}/${n}')`).replace(/fromPretrained\(await AutoModelForCausalLM\.fromPretrained\(dir\), '([^']+)'\)/g, (_, n) => `fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), '${dir}/${n}')`));
      try {
        await import(/* @vite-ignore */ file);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }, 300_000);
  }
});
