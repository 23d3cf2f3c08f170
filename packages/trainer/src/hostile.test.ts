// Trainer robustness (issue 14): loadBestModelAtEnd across a resume, leftovers of killed runs, labels out of range.
import { afterAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftError, getPeftModel, parseSafetensors, rawToArray, type PeftModel } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer, dataCollatorWithPadding } from './index';
import { randomExamples, tinyLlama } from './__fixtures__/tiny';
import { peftErrorAsync as peftError } from '../../../tools/testing/errors';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-trainer-hostile-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirN = 0;
const outDir = () => join(tmp, `run${dirN++}`);
const lora = () => getPeftModel(tinyLlama(1), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }));

async function adapterValues(m: PeftModel): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of m.adapterTensorMap('default')) out[k] = Array.from(await v.data());
  return out;
}

describe('loadBestModelAtEnd across a resume', () => {
  it('a run resumed after its best evaluation ends with the best checkpoint’s weights', async () => {
    const dir = outDir();
    const args = {
      outputDir: dir, progressBar: false, metricsLog: false, perDeviceTrainBatchSize: 2, learningRate: 1e-2,
      evalStrategy: 'steps', evalSteps: 2, saveStrategy: 'steps', saveSteps: 2, loadBestModelAtEnd: true, metricForBestModel: 'score', greaterIsBetter: true,
    } as const;
    const data = randomExamples(8);
    const evalSet = randomExamples(2, 77);
    const make = (maxSteps: number, resume: boolean) => {
      const t: Trainer = new Trainer({
        model: lora(), args: { ...args, maxSteps, resumeFromCheckpoint: resume }, trainDataset: data, evalDataset: evalSet,
        // best at step 4, every later evaluation worse
        computeMetrics: () => ({ score: t.state.globalStep === 4 ? 10 : t.state.globalStep }),
      });
      return t;
    };
    await make(6, false).train(); // evaluations at 2, 4 (best), 6; then "killed"
    const resumed = make(10, true);
    await resumed.train(); // resumes at 6: evaluations at 8, 10, none better
    expect(resumed.state.bestGlobalStep).toBe(4);
    const best = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'checkpoint-4', 'adapter_model.safetensors'))));
    const last = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'checkpoint-10', 'adapter_model.safetensors'))));
    const now = await adapterValues(resumed.model as PeftModel);
    let differsFromLast = false;
    for (const [k, raw] of Object.entries(best.tensors)) {
      expect(now[k], k).toEqual(Array.from(rawToArray(raw), Math.fround));
      if (Array.from(rawToArray(last.tensors[k]), Math.fround).some((v, i) => v !== now[k][i])) differsFromLast = true;
    }
    expect(differsFromLast).toBe(true);
  });
});

describe('leftovers of a killed run', () => {
  it('train start puts back a checkpoint caught between its renames and removes temp folders and files', async () => {
    const dir = outDir();
    const args = { outputDir: dir, progressBar: false, metricsLog: false, perDeviceTrainBatchSize: 2, maxSteps: 2, saveStrategy: 'steps', saveSteps: 2 } as const;
    await new Trainer({ model: lora(), args, trainDataset: randomExamples(4) }).train();
    expect(existsSync(join(dir, 'checkpoint-2'))).toBe(true);
    // a kill between `rename(final, old)` and `rename(tmp, final)`: only the old copy is left
    renameSync(join(dir, 'checkpoint-2'), join(dir, '.tmp-checkpoint-2-abc123-old'));
    mkdirSync(join(dir, '.tmp-checkpoint-4-dead01')); // a checkpoint cut short while written
    writeFileSync(join(dir, '.tmp-checkpoint-4-dead01', 'optimizer.safetensors'), 'partial');
    writeFileSync(join(dir, 'metrics.jsonl.tmp-m1abc2-x9y8z7'), 'partial');
    writeFileSync(join(dir, 'my-notes.txt'), 'mine');
    const t = new Trainer({ model: lora(), args: { ...args, maxSteps: 4, resumeFromCheckpoint: true }, trainDataset: randomExamples(4) });
    await t.train();
    expect(t.state.globalStep).toBe(4);
    const names = readdirSync(dir).sort();
    expect(names.filter((n) => n.includes('.tmp-') || n.startsWith('.peftjs'))).toEqual([]);
    expect(names).toContain('checkpoint-2');
    expect(names).toContain('checkpoint-4');
    expect(names).toContain('my-notes.txt');
  });
});

describe('labels out of range', () => {
  it('labels < -100, other negatives and ≥ vocab are refused naming the position, before any GPU work', async () => {
    const collate = dataCollatorWithPadding({ vocabSize: 64 });
    for (const labels of [[-5, 1, 2], [1, 64, 2], [1, 2, 1.5], [-101, 1, 2]]) {
      const e = await peftError(() => collate([{ inputIds: [1, 2, 3], labels }]));
      expect(e.code).toBe('INVALID_ARGUMENT');
      expect(e.message).toMatch(/labels\[0\]\[\d\]/);
    }
    expect((await peftError(() => collate([{ inputIds: [1, 99, 3] }]))).message).toMatch(/inputIds\[0\]\[1\] = 99/);
    expect(collate([{ inputIds: [1, 2, 3], labels: [-100, 63, 0] }]).labels).toEqual([[-100, 63, 0]]);
    for (const labels of [[-5, 1, 2, 3, 4], [1, 2, 3, 4, 100]]) {
      const t = new Trainer({ model: lora(), args: { outputDir: outDir(), progressBar: false, metricsLog: false, saveStrategy: 'no', maxSteps: 1, perDeviceTrainBatchSize: 1 }, trainDataset: [{ inputIds: [1, 2, 3, 4, 5], labels }] });
      expect((await peftError(t.train())).message).toMatch(/labels\[0\]/);
    }
  });
});
