// The bundled model against HF transformers on the same weights: tokenizer ids, logits and greedy text.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadSafetensors } from '@peftjs/core';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import { tinyLlamaDir, TINY_LLAMA_INFO } from './index';
import { keptDiff } from '../../../tools/testing/fixtures';

const REF = fileURLToPath(new URL('../../../fixtures/tiny-llama/', import.meta.url));
const ref = JSON.parse(readFileSync(`${REF}reference.json`, 'utf8'));

describe('peftjs-tiny-llama matches HF transformers', () => {
  it('tokenizes as HF does', async () => {
    const tok = await AutoTokenizer.fromPretrained(tinyLlamaDir());
    const t = await loadSafetensors(`${REF}reference.safetensors`);
    expect(tok.encode(ref.sample, { addSpecialTokens: false })).toEqual(Array.from(t.sample_ids.dataSync()));
    const batch = tok.batchEncode(ref.prompts, { padding: true, paddingSide: 'left' });
    expect(batch.inputIds).toEqual(await t.input_ids.array());
    expect(batch.attentionMask).toEqual(await t.attention_mask.array());
    expect(tok.decode(tok.encode(ref.sample, { addSpecialTokens: false }))).toBe(ref.sample);
  });

  it('logits and greedy continuations equal HF (bf16 weights upcast to fp32)', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir());
    const [trainable] = [model.parameters().reduce((a, p) => a + p.size, 0)];
    expect(trainable).toBe(TINY_LLAMA_INFO.parameters);
    const t = await loadSafetensors(`${REF}reference.safetensors`);
    const logits = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask }).logits;
    const d = await keptDiff(logits, t.logits, t.attention_mask);
    expect(d.rel, `max diff ${d.diff} of ${d.scale}`).toBeLessThan(1e-4);
    const tok = await AutoTokenizer.fromPretrained(tinyLlamaDir());
    const prompt = tok.encode(ref.prompts[0], { addSpecialTokens: false });
    const gen = await model.generate({ inputIds: [prompt], maxNewTokens: 12 });
    expect(gen[0]).toEqual(Array.from(t.generated.dataSync()));
    expect(tok.decode(gen[0])).toBe(ref.decoded);
    const batch = await model.generate({ inputIds: t.input_ids, attentionMask: t.attention_mask, maxNewTokens: 8, padTokenId: 1 });
    expect(batch).toEqual(await t.generated_batch.array());
    tf.dispose([logits, ...Object.values(t)]);
  });
});
