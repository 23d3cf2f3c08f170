import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, getPeftModel, parseSafetensors, TaskType } from '@peftjs/core';
import { AutoModelForSequenceClassification } from '@peftjs/models';
import { LoraConfig } from './index';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';

const TOL = Number(process.env.LORA_TOL ?? 1e-4);

describe('LoRA SEQ_CLS parity with HF PEFT: llama_seqcls_lora', () => {
  it('LoRA + the trained score head (modules_to_save) match HF; save → load is exact', async () => {
    const name = 'llama_seqcls_lora';
    const dir = hfCase(name);
    const t = await caseTensors(name);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const peft = await PeftModel.fromPretrained(await AutoModelForSequenceClassification.fromPretrained(`${dir}base`), `${dir}adapter`);
    const { logits } = peft.forward(inputs);
    const d = await keptDiff(logits, t.logits_adapted);
    console.log(`${name}: max rel diff ${d.rel.toExponential(3)}`);
    expect(d.rel).toBeLessThan(TOL);
    const off = peft.disableAdapter(() => peft.forward(inputs).logits);
    expect((await keptDiff(off, t.logits_base)).rel).toBeLessThan(TOL);
    const tmp = mkdtempSync(join(tmpdir(), 'peftjs-lora-seqcls-'));
    try {
      await peft.savePretrained(tmp);
      const hf = parseSafetensors(readFileSync(`${dir}adapter/adapter_model.safetensors`));
      const ours = parseSafetensors(readFileSync(join(tmp, 'adapter_model.safetensors')));
      expect(Object.keys(ours.tensors).sort()).toEqual(Object.keys(hf.tensors).sort());
      for (const k of Object.keys(hf.tensors)) expect(Buffer.compare(Buffer.from(ours.tensors[k].bytes), Buffer.from(hf.tensors[k].bytes)), k).toBe(0);
      const again = await PeftModel.fromPretrained(await AutoModelForSequenceClassification.fromPretrained(`${dir}base`), tmp);
      expect(tf.max(tf.abs(tf.sub(again.forward(inputs).logits, logits))).dataSync()[0]).toBe(0);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    // merged: the head copy stays, the LoRA update goes into the weights
    const merged = peft.mergeAndUnload();
    expect((await keptDiff(merged.forward(inputs).logits, t.logits_adapted)).rel).toBeLessThan(TOL);
  });

  it('a new SEQ_CLS LoRA trains the score head too', async () => {
    const base = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_lora')}base`);
    const peft = getPeftModel(base, new LoraConfig({ taskType: TaskType.SEQ_CLS, r: 2, targetModules: ['q_proj'] }));
    const trainable = [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
    expect(trainable).toContain('base_model.model.score.modules_to_save.default.weight');
    expect(Object.keys(peft.adapterStateDict())).toContain('base_model.model.score.weight');
  });
});
