import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { PeftError } from '@peftjs/core';
import { AutoModelForCausalLM, AutoModelForSequenceClassification, parseModelConfig } from '@peftjs/models';
import { hfCase } from '../../../tools/testing/fixtures';
import { editJson, folderInMemory, memoryFs } from './test-helpers';

async function peftError(p: Promise<unknown> | (() => unknown)): Promise<PeftError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(PeftError.isInstance(e)).toBe(true);
    return e as PeftError;
  }
  throw new Error('expected a PeftError');
}

const llamaDir = () => folderInMemory(`${hfCase('llama_lora_qv')}base`);

describe('fromPretrained errors name the file, field or tensor', () => {
  it('missing config.json', async () => {
    const e = await peftError(AutoModelForCausalLM.fromPretrained('/no/such/model'));
    expect(e.code).toBe('FILE_NOT_FOUND');
    expect(e.message).toContain('/no/such/model/config.json');
  });

  it('unknown model_type lists the supported ones', async () => {
    const { files, dir } = llamaDir();
    editJson(files, `${dir}/config.json`, (j) => (j.model_type = 'falcon'));
    const e = await peftError(AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) }));
    expect(e.code).toBe('UNKNOWN_MODEL_TYPE');
    expect(e.message).toContain('"falcon"');
    for (const t of ['llama', 'mistral', 'qwen2', 'gpt2']) expect(e.message).toContain(t);
  });

  it('invalid config.json (not JSON, bad field)', async () => {
    const { files, dir } = llamaDir();
    files.set(`${dir}/config.json`, new TextEncoder().encode('{ "model_type": '));
    const e = await peftError(AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) }));
    expect(e.code).toBe('INVALID_FILE');
    expect(e.message).toContain('config.json');
    const g = llamaDir();
    editJson(g.files, `${g.dir}/config.json`, (j) => (j.hidden_size = 'big'));
    const e2 = await peftError(AutoModelForCausalLM.fromPretrained(g.dir, { fs: memoryFs(g.files) }));
    expect(e2.code).toBe('INVALID_CONFIG');
    expect(e2.message).toContain('hidden_size');
  });

  it('truncated weights file', async () => {
    const { files, dir } = llamaDir();
    const w = files.get(`${dir}/model.safetensors`)!;
    files.set(`${dir}/model.safetensors`, w.slice(0, Math.floor(w.length / 2)));
    const before = tf.memory().numTensors;
    const e = await peftError(AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) }));
    expect(e.code).toBe('INVALID_FILE');
    expect(e.message).toContain('model.safetensors');
    expect(e.message).toMatch(/truncated/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('no weights file', async () => {
    const { files, dir } = llamaDir();
    files.delete(`${dir}/model.safetensors`);
    const e = await peftError(AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) }));
    expect(e.code).toBe('FILE_NOT_FOUND');
    expect(e.message).toContain('model.safetensors');
  });

  it('a weight of the wrong shape names the tensor and both shapes; nothing leaks', async () => {
    const { files, dir } = llamaDir();
    let inter = 0;
    editJson(files, `${dir}/config.json`, (j) => {
      inter = j.intermediate_size as number;
      j.intermediate_size = inter + 8;
    });
    const before = tf.memory().numTensors;
    const e = await peftError(AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) }));
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.message).toMatch(/model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight/);
    expect(e.message).toContain(String(inter));
    expect(e.message).toContain(String(inter + 8));
    expect(e.message).toContain('model.safetensors');
    expect(tf.memory().numTensors).toBe(before);
  });

  it('missing and unexpected tensors are named (strict loading)', async () => {
    const { files, dir } = llamaDir();
    let n = 0;
    editJson(files, `${dir}/config.json`, (j) => {
      n = j.num_hidden_layers as number;
      j.num_hidden_layers = n + 1;
    });
    const e = await peftError(AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) }));
    expect(e.code).toBe('INVALID_FILE');
    expect(e.message).toContain(`missing tensors model.layers.${n}.`);
    const g = llamaDir();
    editJson(g.files, `${g.dir}/config.json`, (j) => (j.num_hidden_layers = n - 1));
    const e2 = await peftError(AutoModelForCausalLM.fromPretrained(g.dir, { fs: memoryFs(g.files) }));
    expect(e2.message).toContain(`unexpected tensors model.layers.${n - 1}.`);
    // a sequence-classification checkpoint is not a causal LM
    const e3 = await peftError(AutoModelForCausalLM.fromPretrained(`${hfCase('llama_seqcls_lora')}base`));
    expect(e3.message).toContain('lm_head.weight');
    expect(e3.message).toContain('score.weight');
  });

  it('untied checkpoint loaded with tie_word_embeddings: lm_head.weight is dropped, embedding used', async () => {
    const { files, dir } = llamaDir();
    editJson(files, `${dir}/config.json`, (j) => (j.tie_word_embeddings = true));
    const m = await AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) });
    expect(m.getParameter('lm_head.weight')).toBe(m.getParameter('model.embed_tokens.weight'));
    m.dispose();
  });

  it('unsupported config features are named', () => {
    const raw = { model_type: 'llama', vocab_size: 10, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16 };
    expect(() => parseModelConfig({ ...raw, rope_scaling: { rope_type: 'yarn', factor: 2 } })).toThrow(/rope_scaling\.rope_type.*yarn/);
    expect(() => parseModelConfig({ ...raw, hidden_act: 'mish' })).toThrow(/hidden_act.*mish/);
    expect(() => parseModelConfig({ ...raw, num_key_value_heads: 3 })).toThrow(/num_key_value_heads/);
    expect(() => parseModelConfig({ ...raw, vocab_size: undefined })).toThrow(/vocab_size/);
    expect(() => parseModelConfig({ vocab_size: 3 })).toThrow(/model_type/);
  });
});

describe('forward input errors', () => {
  it('bad inputs give PeftErrors naming the input and the expected shape', async () => {
    const m = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    const before = tf.memory().numTensors;
    expect((await peftError(() => m.forward({}))).message).toMatch(/inputIds or inputsEmbeds/);
    expect((await peftError(() => m.forward({ inputIds: [[1, 2, 3]], attentionMask: [[1, 1]] }))).message).toMatch(/attentionMask must be \[1, 3\]/);
    expect((await peftError(() => m.forward({ inputIds: [[1, 2, 3]], positionIds: [[0, 1]] }))).message).toMatch(/positionIds must be \[1, 3\]/);
    expect((await peftError(() => m.forward({ inputIds: [[1, 2, 3]], labels: [[1, 2]] }))).message).toMatch(/labels must be \[1, 3\]/);
    const emb = tf.zeros([1, 3, 5]);
    expect((await peftError(() => m.forward({ inputsEmbeds: emb }))).message).toContain(`inputsEmbeds must be [batch, seq, ${m.config.hiddenSize}]`);
    emb.dispose();
    expect(() => m.forward({ inputIds: [[1, 2], [3]] })).toThrow(/same length/);
    expect(() => m.forward({ inputIds: [[1, m.config.vocabSize]] })).toThrow(`token id ${m.config.vocabSize} in inputIds is outside the vocabulary (vocab_size ${m.config.vocabSize})`);
    expect(() => m.forward({ inputIds: [[1, -1]] })).toThrow(/token id -1/);
    await expect(m.generate({ inputIds: [[1, 2]], maxNewTokens: -1 })).rejects.toThrow(/maxNewTokens/);
    await expect(m.generate({ inputIds: [[1, 2]], doSample: true, temperature: 0 })).rejects.toThrow(/temperature/);
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });

  it('mistral: sequences longer than sliding_window are refused with the field named', async () => {
    const { files, dir } = llamaDir();
    editJson(files, `${dir}/config.json`, (j) => {
      j.model_type = 'mistral';
      j.sliding_window = 4;
    });
    const m = await AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) });
    expect(m.config.modelType).toBe('mistral');
    const ok = m.forward({ inputIds: [[1, 2, 3, 4]] });
    ok.logits.dispose();
    expect(() => m.forward({ inputIds: [[1, 2, 3, 4, 5]] })).toThrow(/sliding_window \(4\)/);
    m.dispose();
  });

  it('gpt2: more positions than n_positions are refused', async () => {
    const { files, dir } = folderInMemory(`${hfCase('gpt2_lora_cattn')}base`);
    editJson(files, `${dir}/config.json`, (j) => (j.n_positions = 4));
    // wpe is [n_positions, n_embd]: shrink it in the checkpoint as well
    const m = AutoModelForCausalLM.fromConfig(JSON.parse(new TextDecoder().decode(files.get(`${dir}/config.json`))));
    const ok = m.forward({ inputIds: [[1, 2, 3, 4]] });
    ok.logits.dispose();
    expect(() => m.forward({ inputIds: [[1, 2, 3, 4, 5]] })).toThrow(/5 positions exceed the config's n_positions \(4\)/);
    m.dispose();
  });

  it('sequence classification: labels of the wrong size', async () => {
    const m = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_lora')}base`);
    expect(() => m.forward({ inputIds: [[1, 2], [3, 4]], labels: [1, 2, 0] })).toThrow(/one class id per row/);
    m.dispose();
  });
});
