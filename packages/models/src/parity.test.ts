import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from '@peftjs/models';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';

const CAUSAL = ['llama_lora_qv', 'qwen2_lora', 'gpt2_lora_cattn', 'llama_bf16_weights'];

describe('base logits match HF transformers', () => {
  for (const name of CAUSAL) {
    it(name, async () => {
      const model = await AutoModelForCausalLM.fromPretrained(`${hfCase(name)}base`);
      const t = await caseTensors(name);
      const { logits } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
      const r = await keptDiff(logits, t.logits_base, t.attention_mask);
      console.log(`${name}: max rel diff ${r.rel.toExponential(2)} (diff ${r.diff.toExponential(2)}, scale ${r.scale.toFixed(3)})`);
      expect(r.rel).toBeLessThan(1e-4);
      logits.dispose();
      tf.dispose(Object.values(t));
      model.dispose();
    });
  }
  it('llama_seqcls_lora', async () => {
    const name = 'llama_seqcls_lora';
    const model = await AutoModelForSequenceClassification.fromPretrained(`${hfCase(name)}base`);
    const t = await caseTensors(name);
    const { logits } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
    const r = await keptDiff(logits, t.logits_base);
    console.log(`${name}: max rel diff ${r.rel.toExponential(2)} (diff ${r.diff.toExponential(2)}, scale ${r.scale.toFixed(3)})`);
    expect(r.rel).toBeLessThan(1e-4);
    logits.dispose();
    tf.dispose(Object.values(t));
    model.dispose();
  });
});
