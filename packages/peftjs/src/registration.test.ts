import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { BitFitConfig, DiffPruningConfig, LNTuningConfig, getPeftMethod, listPeftMethods, readAdapterConfig } from 'peftjs';

describe('the umbrella registers every built-in method', () => {
  it('LN_TUNING, BITFIT and DIFF_PRUNING are registered on import, with their config classes', async () => {
    const types = listPeftMethods().map((m) => m.peftType);
    expect(types).toEqual(expect.arrayContaining(['LORA', 'IA3', 'PROMPT_TUNING', 'PREFIX_TUNING', 'P_TUNING', 'LN_TUNING', 'BITFIT', 'DIFF_PRUNING']));
    expect(getPeftMethod('LN_TUNING').configClass).toBe(LNTuningConfig);
    expect(getPeftMethod('BITFIT').configClass).toBe(BitFitConfig);
    expect(getPeftMethod('DIFF_PRUNING').configClass).toBe(DiffPruningConfig);
    const dir = fileURLToPath(new URL('../../ln-tuning/fixtures/llama_ln_tuning/adapter', import.meta.url));
    expect(await readAdapterConfig(dir)).toBeInstanceOf(LNTuningConfig);
  });
});
