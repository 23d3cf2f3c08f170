import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { Module, PeftModel, ResidualAdd, getPeftModel, type PreTrainedModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { AdapterConfig, BottleneckLayer, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig, adapterConfigFromName } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const LLAMA = `${hfCase('llama_lora_qv')}base`;
const GPT2 = `${hfCase('gpt2_lora_cattn')}base`;
const batch = { inputIds: [[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6]], attentionMask: [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]] };

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

describe('bottleneck adapters: fresh adapters are the identity', () => {
  for (const [model, dir] of [['llama', LLAMA], ['gpt2', GPT2]] as const) {
    for (const [name, make] of [
      ['SeqBn', () => new SeqBnConfig()],
      ['DoubleSeqBn', () => new DoubleSeqBnConfig()],
      ['ParBn', () => new ParBnConfig()],
      ['gated + learned scaling + lnBefore', () => new SeqBnConfig({ useGating: true, scaling: 'learned', lnBefore: true })],
      ['channel scaling, lnAfter, residualBeforeLn false', () => new DoubleSeqBnConfig({ scaling: 'channel', lnAfter: true, adapterResidualBeforeLn: true, residualBeforeLn: false, originalLnBefore: true })],
    ] as const) {
      it(`${model} ${name}`, async () => {
        const base = await AutoModelForCausalLM.fromPretrained(dir);
        const before = base.forward(batch).logits;
        const peft = getPeftModel(base, make());
        const after = peft.forward(batch).logits;
        // a fresh adapter adds zero; with residualBeforeLn false and originalLnBefore the decoder's residual is added twice (AdapterHub's definition)
        const identity = name.includes('residualBeforeLn false') ? false : true;
        if (identity) expect(await maxAbsDiff(before, after)).toBeLessThan(1e-6);
        else expect(await maxAbsDiff(before, after)).toBeGreaterThan(1e-3);
        tf.dispose([before, after]);
        peft.unload().dispose();
      });
    }
  }
});
