import { afterAll, describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, PROMPT_ENCODER_NAME, getPeftModel, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '@peftjs/models';
import { PromptEncoderConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';
import { TOL, checkPromptCase, checkSaveLoad, checkTrainingSteps } from '../../../tools/testing/prompt_learning';

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

describe('P-tuning: encoder checkpoint, training, SEQ_CLS', () => {
  it.each(['MLP', 'LSTM'] as const)('%s: a training step changes only the encoder; save → resume restores the encoder exactly; inference needs no encoder', async (kind) => {
    const dir = hfCase('llama_ptuning_mlp');
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const peft = getPeftModel(base, new PromptEncoderConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4, encoderHiddenSize: 8, encoderReparameterizationType: kind }));
    const names = [...peft.namedParameters()].map(([k]) => k).filter((k) => k.startsWith('prompt_encoder.'));
    expect(names).toContain(kind === 'MLP' ? 'prompt_encoder.default.mlp_head.4.weight' : 'prompt_encoder.default.lstm_head.weight_hh_l1_reverse');
    checkTrainingSteps(peft, (n) => n.startsWith('prompt_encoder.default.'));
    const out = join(tmp, `resume-${kind}`);
    await peft.savePretrained(out);
    expect(existsSync(join(out, PROMPT_ENCODER_NAME))).toBe(true);
    const ids = { inputIds: [[3, 4, 5, 6]] };
    const want = peft.forward(ids).logits;
    // resume: every encoder weight comes back
    const resumed = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out, { isTrainable: true });
    const a = peft.stateDict();
    const b = resumed.stateDict();
    for (const n of names) expect(tf.max(tf.abs(tf.sub(a[n], b[n]))).dataSync()[0], n).toBe(0);
    expect(tf.max(tf.abs(tf.sub(resumed.forward(ids).logits, want))).dataSync()[0]).toBe(0);
    expect(resumed.getNbTrainableParameters()[0]).toBe(peft.getNbTrainableParameters()[0]);
    // inference: the table only (HF's layout)
    const inf = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out);
    expect([...inf.namedParameters()].filter(([k]) => k.startsWith('prompt_encoder.')).map(([k]) => k)).toEqual(['prompt_encoder.default.embedding.weight']);
    expect(tf.max(tf.abs(tf.sub(inf.forward(ids).logits, want))).dataSync()[0]).toBeLessThan(1e-5);
    // trainable without our encoder file (an HF adapter): training continues on the table, with a warning
    rmSync(join(out, PROMPT_ENCODER_NAME));
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const table = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out, { isTrainable: true });
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/no peftjs_prompt_encoder.safetensors/));
    warn.mockRestore();
    expect(tf.max(tf.abs(tf.sub(table.forward(ids).logits, want))).dataSync()[0]).toBeLessThan(1e-5);
    expect(table.getNbTrainableParameters()[0]).toBe(4 * base.config.hiddenSize);
    expect(() => table.mergeAndUnload()).toThrow(/P-tuning prepends virtual-token embeddings.*no weight to merge/);
  });

  it('SEQ_CLS: the score head trains through modules_to_save and is saved under base_model.score.weight', async () => {
    const base = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_prompt')}base`);
    const peft = getPeftModel(base, new PromptEncoderConfig({ taskType: TaskType.SEQ_CLS, numVirtualTokens: 3, encoderHiddenSize: 8 }));
    const { logits } = peft.forward({ inputIds: [[4, 5, 6], [0, 7, 8]], attentionMask: [[1, 1, 1], [0, 1, 1]] });
    expect(logits.shape).toEqual([2, 3]);
    expect(Object.keys(peft.adapterStateDict()).sort()).toEqual(['base_model.score.weight', 'prompt_embeddings']);
    expect(peft.trainableParameters().length).toBe(8); // embedding, 3 × (weight, bias) of the MLP, the head's copy
  });
});
