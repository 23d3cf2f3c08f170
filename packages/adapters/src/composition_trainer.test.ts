// The Trainer with AdapterHub's fusion idiom: trainAdapterFusion, then Trainer.train() updates only the fusion
// layers (the adapters and base stay bit-identical), checkpoints and the final save hold the composed setup
// (adapter folders, fusion/<a,b>/, composition.json), and the saved folder loads back to the same logits.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fuse, PeftModel, getPeftModel, manualSeed } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { Trainer } from '@peftjs/trainer';
import { SeqBnConfig, addAdapterFusion } from './index';

const BASE = fileURLToPath(new URL('../../lora/fixtures/llama_mixed_batch/base', import.meta.url));

describe('Trainer + trainAdapterFusion', () => {
  it('trains only the fusion, saves the composed setup in checkpoints and at the end, and it loads back exactly', async () => {
    manualSeed(8);
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASE), new SeqBnConfig({ reductionFactor: 4, initWeights: 'bert' }), 'a');
    peft.addAdapter('b', new SeqBnConfig({ reductionFactor: 4, initWeights: 'bert' }));
    const fuse = Fuse('a', 'b');
    addAdapterFusion(peft, fuse);
    peft.trainAdapterFusion(fuse);
    const frozen = Object.fromEntries([...peft.namedParameters()].filter(([, p]) => !p.trainable).map(([k, p]) => [k, p.clone()]));
    const fusion = Object.fromEntries([...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k, p]) => [k, p.clone()]));
    expect(Object.keys(fusion).every((k) => k.includes('.adapter_fusion_layer.a,b.'))).toBe(true);

    const rows = Array.from({ length: 8 }, (_, i) => ({ inputIds: Array.from({ length: 6 }, (_, t) => (i * 31 + t * 7) % 300) }));
    const outputDir = mkdtempSync(join(tmpdir(), 'peftjs-fusion-trainer-'));
    const trainer = new Trainer({
      model: peft,
      args: { outputDir, learningRate: 1e-2, maxSteps: 4, perDeviceTrainBatchSize: 4, saveStrategy: 'steps', saveSteps: 2, loggingSteps: 1, progressBar: false, metricsLog: false, seed: 0 },
      trainDataset: rows,
    });
    await trainer.train();
    const now = Object.fromEntries(peft.namedParameters());
    const moved = async (t: Record<string, tf.Tensor>) => {
      let m = 0;
      for (const [k, v] of Object.entries(t)) {
        const d = tf.tidy(() => tf.max(tf.abs(tf.sub(v, now[k]))));
        m = Math.max(m, (await d.data())[0]);
        d.dispose();
      }
      return m;
    };
    expect(await moved(frozen)).toBe(0);
    expect(await moved(fusion)).toBeGreaterThan(1e-4);

    const ckpt = readdirSync(outputDir).filter((d) => d.startsWith('checkpoint-')).sort();
    expect(ckpt.length).toBeGreaterThan(0);
    expect(existsSync(join(outputDir, ckpt[0], 'composition.json'))).toBe(true);
    expect(existsSync(join(outputDir, ckpt[0], 'fusion', 'a,b', 'adapter_fusion.safetensors'))).toBe(true);

    const out = join(outputDir, 'final');
    await trainer.saveModel(out);
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(BASE), out);
    peft.eval();
    const ids = [[5, 17, 99, 3]];
    const [x, y] = [peft.forward({ inputIds: ids }).logits, again.forward({ inputIds: ids }).logits];
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(x, y))));
    expect((await d.data())[0]).toBe(0);
    expect(again.activeComposition?.type).toBe('Fuse');
    tf.dispose([x, y, d, ...Object.values(frozen), ...Object.values(fusion)]);
    again.dispose();
    peft.dispose();
  });
});
