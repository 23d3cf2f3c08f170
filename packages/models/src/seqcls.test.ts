import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { AutoModelForSequenceClassification, type SeqClsBase } from '@peftjs/models';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';
import { arr, maxAbsDiff } from './test-helpers';

describe('sequence classification', () => {
  let model: SeqClsBase;
  beforeAll(async () => {
    model = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_lora')}base`);
  });
  afterAll(() => model.dispose());

  it('llama_seqcls_lora: logits [B, num_labels] match HF (left padding, pad id 0)', async () => {
    const t = await caseTensors('llama_seqcls_lora');
    const { logits } = model.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
    expect(logits.shape).toEqual([t.input_ids.shape[0], 3]);
    const r = await keptDiff(logits, t.logits_base);
    console.log(`llama_seqcls_lora: max relative logits difference ${r.rel.toExponential(2)} (max |diff| ${r.diff.toExponential(2)}, max |ref| ${r.scale.toFixed(4)})`);
    expect(r.rel).toBeLessThanOrEqual(1e-4);
    tf.dispose([logits, ...Object.values(t)]);
  });

  it('HF names and heads', () => {
    expect(model.outputHeadNames).toEqual(['score']);
    expect(model.taskType).toBe('SEQ_CLS');
    expect(model.getParameter('score.weight').shape).toEqual([3, model.config.hiddenSize]);
    expect(() => model.getParameter('score.bias')).toThrow();
    expect(model.classification.numLabels).toBe(3);
  });

  it('pools the last non-pad token: right padding gives the same logits as left padding', async () => {
    const body = [17, 42, 99, 3, 8];
    const left = model.forward({ inputIds: [[0, 0, ...body]], attentionMask: [[0, 0, 1, 1, 1, 1, 1]] }).logits;
    const right = model.forward({ inputIds: [[...body, 0, 0]], attentionMask: [[1, 1, 1, 1, 1, 0, 0]] }).logits;
    const plain = model.forward({ inputIds: [body] }).logits;
    expect(await maxAbsDiff(right, plain)).toBeLessThan(1e-5);
    // left padding shifts positions (HF does not derive them from the mask), so compare with explicit ones
    const leftPos = model.forward({ inputIds: [[0, 0, ...body]], attentionMask: [[0, 0, 1, 1, 1, 1, 1]], positionIds: [[0, 0, 0, 1, 2, 3, 4]] }).logits;
    expect(await maxAbsDiff(leftPos, plain)).toBeLessThan(1e-5);
    tf.dispose([left, right, plain, leftPos]);
  });

  it('inputsEmbeds with inputIds pools by the ids, shifted by extra leading embeddings (prompt tuning)', async () => {
    const ids = [[17, 42, 99, 0, 0]];
    const mask = [[1, 1, 1, 0, 0]];
    const byIds = model.forward({ inputIds: ids, attentionMask: mask }).logits;
    const emb = tf.tidy(() => model.getInputEmbeddings().forward(tf.tensor2d(ids, undefined, 'int32')));
    const byEmb = model.forward({ inputsEmbeds: emb, inputIds: ids, attentionMask: mask }).logits;
    expect(await maxAbsDiff(byIds, byEmb)).toBe(0);
    // two virtual tokens in front: the pooled position moves by two
    const virt = tf.tidy(() => tf.concat([tf.randomNormal([1, 2, model.config.hiddenSize], 0, 1, 'float32', 3), emb], 1));
    const shifted = model.forward({ inputsEmbeds: virt, inputIds: ids, attentionMask: [[1, 1, ...mask[0]]] });
    const lastOnly = model.forward({ inputsEmbeds: virt, attentionMask: [[1, 1, ...mask[0]]] });
    expect(await maxAbsDiff(shifted.logits, lastOnly.logits)).toBeGreaterThan(1e-6);
    tf.dispose([byIds, emb, byEmb, virt, shifted.logits, lastOnly.logits]);
  });

  it('loss: cross-entropy of the labels (single-label classification)', async () => {
    const ids = [[17, 42, 99, 3], [5, 6, 7, 8]];
    const { logits, loss } = model.forward({ inputIds: ids, labels: tf.tensor1d([2, 0], 'int32') });
    const L = (await arr(logits)) as number[][];
    const want = [2, 0].reduce((s: number, y: number, b: number) => {
      const mx = Math.max(...L[b]);
      return s + mx + Math.log(L[b].reduce((a, v) => a + Math.exp(v - mx), 0)) - L[b][y];
    }, 0) / 2;
    expect(Math.abs((await loss!.data())[0] - want)).toBeLessThan(1e-6);
    const again = model.forward({ inputIds: ids, labels: [[2], [0]] });
    expect((await again.loss!.data())[0]).toBeCloseTo(want, 6);
    tf.dispose([logits, loss!, again.logits, again.loss!]);
  });

  it('no tensor leaks', async () => {
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) {
      const out = model.forward({ inputIds: [[0, 1, 2], [3, 4, 5]], attentionMask: [[0, 1, 1], [1, 1, 1]], labels: [1, 2] });
      tf.dispose([out.logits, out.loss!]);
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('generate is refused with a clear error', async () => {
    await expect(model.generate({ inputIds: [[1]] })).rejects.toThrow(/AutoModelForCausalLM/);
  });

  it('from a causal LM checkpoint: score newly initialized (warned), lm_head ignored, num_labels option', async () => {
    const warnings: string[] = [];
    const m = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_lora_qv')}base`, { numLabels: 4, onWarning: (w) => warnings.push(w) });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/score\.weight/);
    expect(m.getParameter('score.weight').shape).toEqual([4, m.config.hiddenSize]);
    const { logits } = m.forward({ inputIds: [[1, 2, 3]] });
    expect(logits.shape).toEqual([1, 4]);
    tf.dispose(logits);
    m.dispose();
  });

  it('gpt2 sequence classification builds and pools', async () => {
    const m = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`, { onWarning: () => {} });
    expect(m.getParameter('score.weight').shape).toEqual([2, m.config.hiddenSize]);
    const { logits, loss } = m.forward({ inputIds: [[1, 2, 3], [4, 5, 6]], labels: [0, 1] });
    expect(logits.shape).toEqual([2, 2]);
    expect(Number.isFinite((await loss!.data())[0])).toBe(true);
    tf.dispose([logits, loss!]);
    m.dispose();
  });
});
