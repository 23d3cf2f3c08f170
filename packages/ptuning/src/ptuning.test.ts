import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import './index';
import { TOL, checkPromptCase, checkSaveLoad } from '../../../tools/testing/prompt_learning';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-ptuning-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.each(['llama_ptuning_mlp', 'llama_ptuning_lstm'])('P-tuning parity with HF PEFT: %s', (name) => {
  it('logits (virtual positions included), greedy generation, files and save → load', async () => {
    const r = await checkPromptCase(name, true);
    console.log(`${name}: max rel diff ${r.rel.toExponential(3)}; generated ${JSON.stringify(r.generated)}`);
    expect(r.rel).toBeLessThan(TOL);
    expect(r.generated).toEqual(r.expected);
    await checkSaveLoad(name, r.peft, join(tmp, name));
  });
});
