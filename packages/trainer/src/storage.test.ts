// The Trainer and savePretrained without a disk: the in-memory file system, a read-only one, and an
// adapter as one downloadable ZIP (what a browser tab or Web Worker has; OPFS and IndexedDB are tested
// in Chromium by examples/browser).
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  PeftModel,
  adapterBlob,
  adapterFiles,
  adapterZip,
  fetchFileSystem,
  getPeftModel,
  memoryFileSystem,
  unzipFiles,
  type FileSystem,
} from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer } from './index';
import { randomExamples, tinyLlama } from './__fixtures__/tiny';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-storage-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const lora = () => getPeftModel(tinyLlama(1), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }));
// a constant rate: a run cut at step 2 then resumed to step 4 follows the same schedule as one of 4 steps
const args = { progressBar: false, perDeviceTrainBatchSize: 2, maxSteps: 4, loggingSteps: 1, learningRate: 1e-2, lrSchedulerType: 'constant', seed: 3 } as const;

async function adapterArrays(m: PeftModel): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of m.adapterTensorMap('default')) out[k] = Array.from(await v.data());
  return out;
}

describe('Trainer without a disk', () => {
  it("saveStrategy 'no' without a metrics log writes nothing: outputDir is never created, a read-only file system does", async () => {
    const outputDir = join(tmp, 'never-made');
    const t = new Trainer({ model: lora(), args: { ...args, outputDir, saveStrategy: 'no', metricsLog: false }, trainDataset: randomExamples(8) });
    await t.train();
    expect(existsSync(outputDir)).toBe(false);
    // fetch is read-only: every write throws; training must not need one
    const ro = new Trainer({ model: lora(), args: { ...args, outputDir: 'runs/x', saveStrategy: 'no', metricsLog: false }, trainDataset: randomExamples(8), fs: fetchFileSystem('http://127.0.0.1:9/') });
    const out = await ro.train();
    expect(out.globalStep).toBe(4);
    // and where something is written, the read-only file system says so
    const rw = new Trainer({ model: lora(), args: { ...args, outputDir: 'runs/y', saveStrategy: 'no', metricsLog: true }, trainDataset: randomExamples(8), fs: readOnly() });
    await expect(rw.train()).rejects.toThrow(/read-only/);
  });

  it('checkpoints, the metrics log and a resume live in the memory file system; the resumed run equals an uninterrupted one', async () => {
    const fs = memoryFileSystem();
    const full = lora();
    await new Trainer({ model: full, args: { ...args, outputDir: 'ref', saveStrategy: 'no', metricsLog: false }, trainDataset: randomExamples(8), fs }).train();
    const first = lora();
    await new Trainer({ model: first, args: { ...args, outputDir: 'run', saveStrategy: 'steps', saveSteps: 2, maxSteps: 2 }, trainDataset: randomExamples(8), fs }).train();
    const files = [...fs.snapshot().keys()];
    expect(files).toContain('run/checkpoint-2/trainer_state.json');
    expect(files).toContain('run/checkpoint-2/optimizer.safetensors');
    expect(files).not.toContain('ref/metrics.jsonl');
    const log = new TextDecoder().decode(await fs.readFile('run/metrics.jsonl')).trim().split('\n');
    expect(log.length).toBe(3); // steps 1, 2 and the summary
    const resumed = lora();
    await new Trainer({ model: resumed, args: { ...args, outputDir: 'run', saveStrategy: 'steps', saveSteps: 2 }, trainDataset: randomExamples(8), fs }).train({ resumeFromCheckpoint: true });
    expect(await adapterArrays(resumed)).toEqual(await adapterArrays(full));
  });
});

describe('savePretrained and the adapter download', () => {
  it('savePretrained to memory loads back; the ZIP holds the bytes a disk save writes and loads without unzipping', async () => {
    const m = lora();
    await new Trainer({ model: m, args: { ...args, outputDir: 'x', saveStrategy: 'no', metricsLog: false }, trainDataset: randomExamples(8) }).train();
    const disk = join(tmp, 'adapter');
    await m.savePretrained(disk);
    const fs = memoryFileSystem();
    await m.savePretrained('out/a', { fs });
    expect([...fs.snapshot().keys()]).toEqual(['out/a/adapter_config.json', 'out/a/adapter_model.safetensors']);
    const files = await adapterFiles(m);
    expect(Object.keys(files).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    for (const name of Object.keys(files)) expect(files[name]).toEqual(new Uint8Array(readFileSync(join(disk, name))));

    const zip = await adapterZip(m);
    expect(await adapterZip(m)).toEqual(zip); // reproducible: no timestamps
    const blob = await adapterBlob(m);
    expect(blob.type).toBe('application/zip');
    expect(new Uint8Array(await blob.arrayBuffer())).toEqual(zip);
    const unzipped = await unzipFiles(zip, 'adapter.zip');
    expect(unzipped).toEqual(files);

    const again = await PeftModel.fromPretrained(tinyLlama(1), '.', { fs: memoryFileSystem(unzipped) });
    expect(await adapterArrays(again)).toEqual(await adapterArrays(m));
  });

  it('a second adapter goes to its HF subfolder in the files and the ZIP', async () => {
    const m = lora();
    m.addAdapter('other', new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ['q_proj'] }));
    const names = Object.keys(await unzipFiles(await adapterZip(m))).sort();
    expect(names).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'other/adapter_config.json', 'other/adapter_model.safetensors']);
  });
});

function readOnly(): FileSystem {
  const fs = memoryFileSystem();
  const no = async () => {
    throw new Error('read-only test file system');
  };
  return { ...fs, writeFileAtomic: no, mkdirp: no, rename: no, remove: no };
}
