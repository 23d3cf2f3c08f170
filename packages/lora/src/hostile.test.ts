// Hostile adapter names and interrupted saves at the PeftModel level (issue 14).
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftError, PeftModel, getPeftModel, TaskType, configFromHfJson } from '@peftjs/core';
import { PromptTuningConfig } from '@peftjs/prompt';
import { PromptEncoderConfig } from '@peftjs/ptuning';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';
import { peftErrorAsync as peftError } from '../../../tools/testing/errors';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-lora-hostile-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const base = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);

describe('adapter names', () => {
  it('Object.prototype names and 300-character names are refused; nothing is written', async () => {
    const peft = getPeftModel(await base(), new LoraConfig({ targetModules: ['q_proj'], r: 2 }));
    const cfg = new LoraConfig({ targetModules: ['v_proj'], r: 2 });
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'x'.repeat(300), '', '../up']) {
      expect((await peftError(() => peft.addAdapter(name, cfg))).code).toBe('INVALID_ARGUMENT');
      expect((await peftError(() => peft.deleteAdapter(name))).code).toBe('INVALID_ARGUMENT');
      expect((await peftError(() => peft.setAdapter(name))).code).toBe('INVALID_ARGUMENT');
      const out = join(tmp, `names-${Math.random().toString(36).slice(2)}`);
      expect((await peftError(peft.savePretrained(out, { selectedAdapters: [name] }))).code).toBe('INVALID_ARGUMENT');
      expect(existsSync(out)).toBe(false);
    }
    expect(Object.keys(peft.peftConfig)).toEqual(['default']);
    // a real second adapter still works after all that
    peft.addAdapter('second', cfg);
    expect(Object.keys(peft.peftConfig)).toEqual(['default', 'second']);
    const out = join(tmp, 'names-ok');
    await peft.savePretrained(out);
    expect(readdirSync(out).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'second']);
    await peftError(PeftModel.fromPretrained(await base(), out, { adapterName: 'x'.repeat(300) }));
  });
});

describe('interrupted savePretrained', () => {
  it('a folder left mid-commit loads as the new adapter; one left before the commit point as the old', async () => {
    const oldDir = `${hfCase('llama_lora_qv')}adapter`;
    const peft = await PeftModel.fromPretrained(await base(), oldDir, { isTrainable: true });
    // the "new" adapter: other weights and another lora_alpha
    for (const [, v] of peft.adapterTensorMap('default')) v.assign(tf.add(v, 0.5));
    (peft.peftConfig.default as any).loraAlpha = 3;
    const fresh = join(tmp, 'fresh');
    await peft.savePretrained(fresh);

    const sig = async (dir: string) => {
      const p = await PeftModel.fromPretrained(await base(), dir);
      const w = p.adapterTensorMap('default').values().next().value!;
      return `${(p.peftConfig.default as any).loraAlpha}:${(await w.data())[0]}`;
    };
    const sOld = await sig(oldDir);
    const sNew = await sig(fresh);
    expect(sOld).not.toBe(sNew);

    // stage by hand what commitFiles does, stopping at each point of the roll-forward
    const staging = '.peftjs-staging-test-1';
    const files = ['adapter_model.safetensors', 'adapter_config.json'];
    for (let moved = 0; moved <= files.length; moved++) {
      for (const journal of [false, true]) {
        const dir = join(tmp, `torn-${moved}-${journal}`);
        cpSync(oldDir, dir, { recursive: true });
        mkdirSync(join(dir, staging));
        for (const f of files) cpSync(join(fresh, f), join(dir, staging, f));
        if (journal) writeFileSync(join(dir, '.peftjs-commit.json'), JSON.stringify({ staging, files, remove: [] }));
        else if (moved > 0) continue; // without a journal nothing is moved
        for (const f of files.slice(0, moved)) renameSync(join(dir, staging, f), join(dir, f));
        expect(await sig(dir), `moved ${moved}, journal ${journal}`).toBe(journal ? sNew : sOld);
        // the next save finishes or drops it and leaves no leftovers
        const again = await PeftModel.fromPretrained(await base(), dir, { isTrainable: true });
        await again.savePretrained(dir);
        expect(readdirSync(dir).sort()).toEqual(readdirSync(oldDir).sort()); // no leftovers, the user's README kept
        expect(await sig(dir)).toBe(journal ? sNew : sOld);
      }
    }
    expect(readFileSync(join(fresh, 'adapter_config.json'), 'utf8')).toMatch(/"lora_alpha": 3/);
  });
});

describe('configs that can only give NaN, deep values, huge sizes', () => {
  it('lora_alpha ±1e308 is refused naming the field', async () => {
    for (const a of [1e308, -1e308, 1e39]) {
      const e = await peftError(() => new LoraConfig({ targetModules: ['q_proj'], loraAlpha: a }));
      expect(e.code).toBe('INVALID_CONFIG');
      expect(e.message).toContain('loraAlpha');
    }
    const json = JSON.parse(readFileSync(`${hfCase('llama_lora_qv')}adapter/adapter_config.json`, 'utf8'));
    const e = await peftError(() => configFromHfJson(LoraConfig, { ...json, lora_alpha: 1e308 }, 'adapter_config.json'));
    expect(e.message).toContain('lora_alpha');
    expect(e.message).toContain('adapter_config.json');
  });

  it('a deep value in an HF-only field is a PeftError, not a stack overflow', async () => {
    const json = JSON.parse(readFileSync(`${hfCase('llama_lora_qv')}adapter/adapter_config.json`, 'utf8'));
    let deep: unknown = 1;
    for (let i = 0; i < 20_000; i++) deep = [deep];
    for (const field of ['loftq_config', 'megatron_config', 'rank_pattern']) {
      const e = await peftError(() => configFromHfJson(LoraConfig, { ...json, [field]: deep }, 'adapter_config.json'));
      expect(e.message).toContain('adapter_config.json');
    }
    const dir = join(tmp, 'deep-adapter');
    cpSync(`${hfCase('llama_lora_qv')}adapter`, dir, { recursive: true });
    const text = JSON.stringify({ ...json, loftq_config: 'DEEP' }).replace('"DEEP"', '['.repeat(100_000) + ']'.repeat(100_000));
    writeFileSync(join(dir, 'adapter_config.json'), text);
    expect((await peftError(PeftModel.fromPretrained(await base(), dir))).message).toContain('adapter_config.json');
  });

  it('huge r, num_virtual_tokens and encoder_hidden_size are typed errors before allocation; nothing leaks', async () => {
    const m = await base();
    const before = tf.memory().numTensors;
    for (const make of [
      () => getPeftModel(m, new LoraConfig({ targetModules: ['q_proj'], r: 1e9 })),
      () => getPeftModel(m, new PromptTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 1e9 })),
      () => getPeftModel(m, new PromptEncoderConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4, encoderHiddenSize: 1e9 })),
      () => getPeftModel(m, new PromptEncoderConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 1e8, encoderHiddenSize: 8 })),
      () => getPeftModel(m, new PromptEncoderConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4, encoderHiddenSize: 8, encoderReparameterizationType: 'LSTM', encoderNumLayers: 1e6 })),
    ]) {
      const e = await peftError(make);
      expect(['LIMIT_EXCEEDED', 'INVALID_CONFIG']).toContain(e.code);
      expect(tf.memory().numTensors, e.message).toBe(before);
    }
  });
});

describe('prompt tuning TEXT init with a broken tokenizer folder', () => {
  it('invalid JSON, a folder named tokenizer.json and a deep file are PeftErrors naming the file', async () => {
    const { loadPromptTuningInitText } = await import('@peftjs/prompt');
    for (const make of [
      (d: string) => writeFileSync(join(d, 'tokenizer.json'), '{"model": SECRET'),
      (d: string) => mkdirSync(join(d, 'tokenizer.json')),
      (d: string) => writeFileSync(join(d, 'tokenizer.json'), `{"model":${'['.repeat(50_000)}${']'.repeat(50_000)}}`),
    ]) {
      const d = mkdtempSync(join(tmp, 'tok-'));
      make(d);
      const cfg = new PromptTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4, promptTuningInit: 'TEXT', promptTuningInitText: 'hi', tokenizerNameOrPath: d });
      const e = await peftError(loadPromptTuningInitText(cfg));
      expect(e.message).toContain('tokenizer.json');
      expect(e.message).not.toContain('SECRET');
      // the synchronous path (getPeftModel without the preload) too
      const e2 = await peftError(async () => getPeftModel(await base(), cfg));
      expect(e2.message).toContain('tokenizer.json');
    }
  });
});
