// The QLoRA workflow: prepareModelForKbitTraining (frozen base, checkpointing on), LoRA on the 4-bit
// base trains, the adapter is a plain LoRA file that loads on the unquantised base, and mergeAndUnload
// dequantises, merges and (requantizeModel) re-quantises with HF's rounding warning.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Linear, PeftModel, getPeftModel, parseSafetensors, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig, LoraLinear } from '@peftjs/lora';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { BitsAndBytesConfig, Linear4bit, MERGE_4BIT_WARNING, dequantizeModel, prepareModelForKbitTraining, requantizeModel } from './index';

const dir = tinyLlamaDir();
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-qlora-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const bnb = () => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true });
const ids = [[12, 400, 33, 901, 7, 56, 1022, 3, 77, 250, 19, 600]];

async function maxAbs(a: tf.Tensor, b: tf.Tensor) {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

async function trained() {
  const base = prepareModelForKbitTraining(await AutoModelForCausalLM.fromPretrained(dir, { quantizationConfig: bnb() }));
  expect(base.isGradientCheckpointing).toBe(true);
  expect(base.trainableParameters().length).toBe(0);
  const peft = getPeftModel(base, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], taskType: TaskType.CAUSAL_LM }));
  peft.train();
  const opt = tf.train.adam(1e-2);
  const losses: number[] = [];
  for (let i = 0; i < 6; i++) {
    const c = opt.minimize(() => {
      const o = peft.forward({ inputIds: ids, labels: ids });
      o.logits.dispose();
      return o.loss as tf.Scalar;
    }, true, peft.trainableParameters())!;
    losses.push((await c.data())[0]);
    c.dispose();
  }
  opt.dispose();
  peft.eval();
  return { peft, losses };
}

describe('QLoRA workflow', () => {
  it('trains under checkpointing; the adapter is a plain LoRA file and loads on the unquantised base', async () => {
    const { peft, losses } = await trained();
    expect(losses[5]).toBeLessThan(losses[0]);
    const out = join(tmp, 'adapter');
    await peft.savePretrained(out);
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg.peft_type).toBe('LORA');
    const file = parseSafetensors(new Uint8Array(readFileSync(join(out, 'adapter_model.safetensors'))));
    const names = Object.keys(file.tensors);
    expect(names.length).toBe(4 * 3 * 2);
    expect(names.every((n) => /^base_model\.model\.model\.layers\.\d\.(self_attn\.[qv]_proj|mlp\.down_proj)\.lora_[AB]\.weight$/.test(n))).toBe(true);
    expect(Object.values(file.tensors).every((t) => t.dtype === 'F32')).toBe(true);
    // on the fp32 base: the same adapter, the base's own (unquantised) weights under it
    const onFp = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out);
    const a = onFp.forward({ inputIds: ids }).logits;
    const b = peft.forward({ inputIds: ids }).logits;
    expect(await maxAbs(a, b)).toBeGreaterThan(0); // different bases
    expect(await maxAbs(a, b)).toBeLessThan(5);
    // on a fresh 4-bit base: the trained model's logits exactly
    const on4 = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir, { quantizationConfig: bnb() }), out);
    const c = on4.forward({ inputIds: ids }).logits;
    expect(await maxAbs(c, b)).toBe(0);
    tf.dispose([a, b, c]);
    on4.dispose();
    onFp.dispose();
    peft.dispose();
  });

  it('mergeAndUnload dequantises and merges (logits equal the adapted 4-bit model), requantizeModel warns and packs again', async () => {
    const { peft } = await trained();
    const adapted = peft.forward({ inputIds: ids }).logits;
    const merged = peft.mergeAndUnload();
    const layers = [...merged.namedModules()].filter(([, m]) => m instanceof Linear4bit) as [string, Linear4bit][];
    expect(layers.filter(([, l]) => !l.isQuantized).length).toBe(4 * 3); // the merged ones hold fp32 now
    expect([...merged.namedModules()].some(([, m]) => m instanceof LoraLinear)).toBe(false);
    const y = merged.forward({ inputIds: ids }).logits;
    expect(await maxAbs(y, adapted)).toBeLessThan(1e-4);
    const warnings: string[] = [];
    expect(await requantizeModel(merged, { onWarning: (w) => warnings.push(w) })).toBe(12);
    expect(warnings).toEqual([MERGE_4BIT_WARNING]);
    expect(layers.every(([, l]) => l.isQuantized)).toBe(true);
    const yq = merged.forward({ inputIds: ids }).logits;
    const err = await maxAbs(yq, adapted);
    expect(err).toBeGreaterThan(0); // rounding, as HF warns
    expect(err).toBeLessThan(5);
    // and transformers' dequantize(): fp32 Linear layers with the dequantised weights, same logits
    const deq = dequantizeModel(merged);
    expect([...deq.namedModules()].some(([, m]) => m instanceof Linear4bit)).toBe(false);
    expect(deq.getSubmodule('model.layers.0.mlp.up_proj')).toBeInstanceOf(Linear);
    const yd = deq.forward({ inputIds: ids }).logits;
    expect(await maxAbs(yd, yq)).toBe(0);
    tf.dispose([adapted, y, yq, yd]);
    deq.dispose();
  });
});
