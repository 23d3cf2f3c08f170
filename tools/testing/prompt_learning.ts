// Shared checks for the prompt-learning packages (prompt tuning, prefix tuning, P-tuning) against the
// HF PEFT fixtures: logits, greedy generation, config keys, save → load, training steps, leaks.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { PeftModel, parseSafetensors, type PreTrainedModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { caseTensors, hfCase, keptDiff } from './fixtures';

export const TOL = Number(process.env.PEFTJS_TOL ?? 1e-4);

/** The kept mask of HF's logits: the attention mask, prefixed with `nvt` ones when the logits include virtual tokens. */
export function keptMask(mask: tf.Tensor, nvt: number): tf.Tensor {
  return nvt ? tf.concat([tf.ones([mask.shape[0] as number, nvt], mask.dtype), mask], 1) : mask;
}

export interface CaseResult {
  rel: number;
  generated: number[][];
  expected: number[][];
}

/** Loads a fixture adapter onto its base; compares logits (and the virtual-token shape) and greedy generation. */
export async function checkPromptCase(name: string, virtualInLogits: boolean): Promise<CaseResult & { peft: PeftModel; base: PreTrainedModel }> {
  const dir = hfCase(name);
  const t = await caseTensors(name);
  const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
  const peft = await PeftModel.fromPretrained(base, `${dir}adapter`);
  const nvt = (peft.peftConfig.default as unknown as { numVirtualTokens: number }).numVirtualTokens;
  const { logits } = peft.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask });
  const expectedT = (t.input_ids.shape[1] as number) + (virtualInLogits ? nvt : 0);
  expect(logits.shape).toEqual([t.input_ids.shape[0], expectedT, t.logits_adapted.shape[2]]);
  const d = await keptDiff(logits, t.logits_adapted, keptMask(t.attention_mask, virtualInLogits ? nvt : 0));
  // the adapter switched off gives the base model's logits
  const off = peft.disableAdapter(() => peft.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask }).logits);
  const b = await keptDiff(off, t.logits_base, t.attention_mask);
  expect(b.rel, `disabled: ${b.diff}`).toBeLessThan(TOL);
  const gen = (await t.generated.array()) as number[][];
  const prompt = [gen[0].slice(0, t.input_ids.shape[1] as number)];
  const generated = await peft.generate({ inputIds: prompt, attentionMask: prompt.map((r) => r.map(() => 1)), maxNewTokens: gen[0].length - prompt[0].length });
  tf.dispose([logits, off, ...Object.values(t)]);
  return { rel: d.rel, generated, expected: gen, peft, base };
}

/** Saves `peft`, compares the files with HF's fixture, reloads on a fresh base: identical logits. */
export async function checkSaveLoad(name: string, peft: PeftModel, out: string): Promise<void> {
  const dir = hfCase(name);
  const t = await caseTensors(name);
  await peft.savePretrained(out);
  const hfCfg = JSON.parse(readFileSync(`${dir}adapter/adapter_config.json`, 'utf8'));
  const ourCfg = JSON.parse(readFileSync(`${out}/adapter_config.json`, 'utf8'));
  expect(Object.keys(ourCfg).sort()).toEqual(Object.keys(hfCfg).sort());
  for (const k of Object.keys(hfCfg)) if (k !== 'modules_to_save') expect(ourCfg[k], k).toEqual(hfCfg[k]);
  const hfFile = parseSafetensors(readFileSync(`${dir}adapter/adapter_model.safetensors`));
  const ourFile = parseSafetensors(readFileSync(`${out}/adapter_model.safetensors`));
  expect(ourFile.metadata).toEqual({ format: 'pt' });
  expect(Object.keys(ourFile.tensors).sort()).toEqual(Object.keys(hfFile.tensors).sort());
  for (const [k, v] of Object.entries(hfFile.tensors)) {
    expect(ourFile.tensors[k].shape, k).toEqual(v.shape);
    expect(Buffer.compare(Buffer.from(ourFile.tensors[k].bytes), Buffer.from(v.bytes)), k).toBe(0);
  }
  const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
  const before = peft.forward(inputs).logits;
  const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out);
  const after = again.forward(inputs).logits;
  expect(tf.max(tf.abs(tf.sub(before, after))).dataSync()[0]).toBe(0);
  tf.dispose([before, after, ...Object.values(t)]);
}

/** Copies of every parameter's values, by name. */
export function snapshot(m: PeftModel): Map<string, Float32Array | Int32Array | Uint8Array> {
  return new Map([...m.namedParameters()].map(([k, v]) => [k, v.dataSync().slice()]));
}

/**
 * One SGD step on the trainable variables only, through tf.variableGrads; returns the loss.
 * The caller compares snapshots: only the method's parameters may change.
 */
export function trainStep(peft: PeftModel, inputs: { inputIds: number[][]; attentionMask?: number[][]; labels: number[][] | tf.Tensor }, lr = 0.1): number {
  const vars = peft.trainableParameters();
  const opt = tf.train.sgd(lr);
  const loss = opt.minimize(() => peft.forward(inputs).loss!, true, vars)!;
  const v = loss.dataSync()[0];
  loss.dispose();
  opt.dispose();
  return v;
}

/** Asserts that only parameters whose name passes `isMethodParam` changed between two snapshots; returns how many changed. */
export function expectOnlyMethodChanged(before: Map<string, ArrayLike<number>>, after: Map<string, ArrayLike<number>>, isMethodParam: (name: string) => boolean): number {
  let changed = 0;
  for (const [k, a] of before) {
    const b = after.get(k)!;
    let same = a.length === b.length;
    for (let i = 0; same && i < a.length; i++) same = a[i] === b[i];
    if (isMethodParam(k)) {
      if (!same) changed++;
    } else {
      expect(same, `base parameter ${k} changed in a training step`).toBe(true);
    }
  }
  return changed;
}

/**
 * A training step through tf.variableGrads on the trainable variables changes only parameters for which
 * `isMethodParam` holds (the base stays bit-identical); repeated steps and forwards leave
 * tf.memory().numTensors unchanged. Returns the losses of the steps.
 */
export function checkTrainingSteps(peft: PeftModel, isMethodParam: (name: string) => boolean, steps = 3): number[] {
  peft.train();
  const batch = { inputIds: [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]], attentionMask: [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], labels: [[5, 6, 7, 8, 9], [-100, 2, 3, 4, 5]] };
  for (const [k, p] of peft.namedParameters()) expect(p.trainable, k).toBe(isMethodParam(k));
  const before = snapshot(peft);
  const losses = [trainStep(peft, batch)];
  expect(expectOnlyMethodChanged(before, snapshot(peft), isMethodParam)).toBeGreaterThan(0);
  const n0 = tf.memory().numTensors;
  for (let i = 1; i < steps; i++) losses.push(trainStep(peft, batch));
  for (let i = 0; i < 3; i++) {
    const o = peft.forward(batch);
    tf.dispose([o.logits, o.loss!]);
  }
  expect(tf.memory().numTensors).toBe(n0);
  expect(losses.every(Number.isFinite)).toBe(true);
  peft.eval();
  return losses;
}
