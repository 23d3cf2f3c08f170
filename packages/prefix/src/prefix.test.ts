import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, PROMPT_ENCODER_NAME, getPeftModel, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { PrefixTuningConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';
import { TOL, checkPromptCase, checkSaveLoad, checkTrainingSteps } from '../../../tools/testing/prompt_learning';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-prefix-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.each(['llama_prefix_tuning', 'llama_prefix_projection'])('prefix tuning parity with HF PEFT: %s', (name) => {
  it('logits, greedy generation (the prefix in the KV cache), files and save → load', async () => {
    const r = await checkPromptCase(name, false);
    console.log(`${name}: max rel diff ${r.rel.toExponential(3)}; generated ${JSON.stringify(r.generated)}`);
    expect(r.rel).toBeLessThan(TOL);
    expect(r.generated).toEqual(r.expected);
    await checkSaveLoad(name, r.peft, join(tmp, name));
  });
});

describe('prefix tuning: encoder checkpoint, training, GQA shapes', () => {
  it.each([false, true])('projection %s: training changes only the prefix encoder; save → resume is exact; inference uses the saved prefix', async (projection) => {
    const dir = hfCase('llama_prefix_tuning');
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const peft = getPeftModel(base, new PrefixTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 3, prefixProjection: projection, encoderHiddenSize: 8 }));
    const cfg = peft.peftConfig.default as PrefixTuningConfig;
    // grouped-query attention: the prefix has the shape of the kv heads, as HF
    expect(cfg.tokenDim).toBe(base.config.numKeyValueHeads * base.config.headDim);
    expect(cfg.numAttentionHeads).toBe(base.config.numKeyValueHeads);
    expect(peft.adapterStateDict().prompt_embeddings.shape).toEqual([3, 2 * base.config.numHiddenLayers * cfg.tokenDim!]);
    checkTrainingSteps(peft, (n) => n.startsWith('prompt_encoder.default.'));
    const out = join(tmp, `resume-${projection}`);
    await peft.savePretrained(out);
    expect(existsSync(join(out, PROMPT_ENCODER_NAME))).toBe(projection);
    const ids = { inputIds: [[3, 4, 5, 6], [7, 8, 9, 10]], attentionMask: [[0, 1, 1, 1], [1, 1, 1, 1]] };
    const want = peft.forward(ids).logits;
    const resumed = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out, { isTrainable: true });
    const a = peft.stateDict();
    const b = resumed.stateDict();
    for (const n of Object.keys(a).filter((k) => k.startsWith('prompt_encoder.'))) expect(tf.max(tf.abs(tf.sub(a[n], b[n]))).dataSync()[0], n).toBe(0);
    expect(tf.max(tf.abs(tf.sub(resumed.forward(ids).logits, want))).dataSync()[0]).toBe(0);
    const inf = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out);
    expect(tf.max(tf.abs(tf.sub(inf.forward(ids).logits, want))).dataSync()[0]).toBeLessThan(1e-5);
    expect(() => inf.mergeAndUnload()).toThrow(/prefix tuning feeds learned past keys\/values.*no weight to merge/);
    // generation: the prefix lives in the KV cache (batch with left padding)
    const gen = await inf.generate({ inputIds: ids.inputIds, attentionMask: ids.attentionMask, maxNewTokens: 3 });
    expect(gen.map((r) => r.length)).toEqual([7, 7]);
  });

  it('explicit position ids are offset by the prefix length, as HF', async () => {
    const r = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_prefix_tuning')}base`), `${hfCase('llama_prefix_tuning')}adapter`);
    const ids = [[3, 4, 5, 6]];
    const a = r.forward({ inputIds: ids }).logits;
    const b = r.forward({ inputIds: ids, positionIds: [[0, 1, 2, 3]] }).logits;
    expect(tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]).toBeLessThan(1e-6);
  });
});
