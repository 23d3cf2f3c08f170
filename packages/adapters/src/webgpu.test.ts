// peftjs.BottleneckAdapter's webgpu fast path (./webgpu.ts, on core's WGSL matmul) against its tfjs reference
// with checkConformance (forward and every input's gradient), and the adapted model against the AdapterHub
// fixtures on webgpu. In CI this runs on Mesa's lavapipe; without a WebGPU adapter the suite is skipped.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { PeftModel, checkConformance, initBackend } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { fileURLToPath } from 'node:url';
import { bottleneckAdapterOp } from './index';
import { keptDiff } from '../../../tools/testing/fixtures';
import { loadSafetensors } from '@peftjs/core';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const onGpu = !(report instanceof Error) && tf.getBackend() === 'webgpu';
const FIXTURES = fileURLToPath(new URL('../fixtures/adapterhub/', import.meta.url));

describe.skipIf(!onGpu)(`peftjs.BottleneckAdapter on webgpu ${onGpu ? '' : `(skipped: ${(report as Error).message})`}`, () => {
  it('has a webgpu fast path', () => {
    expect(bottleneckAdapterOp.fastPathBackends()).toContain('webgpu');
  });

  it.each([
    { name: 'relu, scaling 1 (residual in the matmul epilogue)', x: [2, 5, 12], r: 3, activation: 'relu', scaling: 1 },
    { name: 'swish, scaling 4, 2-D', x: [7, 16], r: 8, activation: 'swish', scaling: 4 },
    { name: 'gelu, learned scalar', x: [2, 3, 8], r: 4, activation: 'gelu', scaling: 1, scale: [1] },
    { name: 'tanh, per-channel scale', x: [3, 4, 10], r: 5, activation: 'tanh', scaling: 1, scale: [10] },
    { name: 'silu, gate [B, 1, 1] × 2', x: [2, 6, 9], r: 2, activation: 'silu', scaling: 2, scale: [2, 1, 1] },
    { name: 'relu, gate × channels [B, 1, d], rank 4', x: [2, 2, 3, 8], r: 4, activation: 'relu', scaling: 1, scale: [2, 1, 1, 8] },
    { name: 'more rows than a tile', x: [70, 20], r: 6, activation: 'gelu', scaling: 0.5 },
  ])('matches its reference: $name', async ({ x, r, activation, scaling, scale }) => {
    const d = x[x.length - 1];
    const rep = await checkConformance(
      bottleneckAdapterOp,
      () => ({
        x: tf.randomNormal(x),
        residual: tf.randomNormal(x),
        downWeight: tf.randomNormal([r, d], 0, 0.5),
        downBias: tf.randomNormal([r]),
        upWeight: tf.randomNormal([d, r], 0, 0.5),
        upBias: tf.randomNormal([d]),
        scale: scale ? tf.randomNormal(scale) : undefined,
      }),
      { activation, scaling },
    );
    expect(rep.ok, JSON.stringify(rep)).toBe(true);
  });

  it('forwards and gradients do not leak', async () => {
    const up = tf.variable(tf.randomNormal([8, 3]));
    const ins = { x: tf.randomNormal([2, 4, 8]), residual: tf.randomNormal([2, 4, 8]), downWeight: tf.randomNormal([3, 8]), downBias: tf.zeros([3]), upBias: tf.zeros([8]), scale: tf.ones([8]) };
    const once = async () => {
      const { value, grads } = tf.variableGrads(() => tf.sum(bottleneckAdapterOp({ ...ins, upWeight: up }, { activation: 'relu', scaling: 2 })) as tf.Scalar, [up]);
      await value.data();
      tf.dispose([value, ...Object.values(grads)]);
    };
    await once();
    const n = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) await once();
    expect(tf.memory().numTensors).toBe(n);
    tf.dispose([up, ...Object.values(ins)]);
  });

  it.each(['llama_gated_learned', 'gpt2_par_bn'])('%s: the adapted model matches the AdapterHub fixture on webgpu', async (name) => {
    const dir = `${FIXTURES}${name}/`;
    const t = await loadSafetensors(`${dir}tensors.safetensors`);
    const inputIds = (await t.input_ids.array()) as number[][];
    const attentionMask = (await t.attention_mask.array()) as number[][];
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter`);
    const logits = peft.forward({ inputIds, attentionMask }).logits;
    const d = await keptDiff(logits, t.logits_adapted, t.attention_mask);
    console.log(`${name} on webgpu: adapted logits rel diff ${d.rel.toExponential(2)}`);
    expect(d.rel).toBeLessThan(1e-4);
    tf.dispose([logits, ...Object.values(t)]);
    peft.dispose();
  });
});
