// The training runs here, in a Web Worker: the page stays responsive while tfjs computes. Messages in:
// { type: 'train', steps, seed, prefer, modelUrl, taskUrl, saveSteps, stopAfter, resume }. Out: 'backend', 'log', 'generated',
// 'adapter' (the ZIP's bytes, transferred), 'error'.
import { initBackend, memoryFileSystem, opfsFileSystem } from '@peftjs/core';
import { browserBackends } from '@peftjs/core/browser';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import { complete, fineTune, isHeldOut, prompt } from './recipe.js';

const post = (msg, transfer) => self.postMessage(msg, transfer ?? []);

async function storage() {
  // OPFS keeps the run's checkpoint and metrics.jsonl across reloads; memory where there is no OPFS
  try {
    const fs = opfsFileSystem();
    await fs.mkdirp('peftjs-example');
    return { fs, kind: 'OPFS' };
  } catch {
    return { fs: memoryFileSystem(), kind: 'memory' };
  }
}

async function train({ steps, seed, prefer, modelUrl, taskUrl, saveSteps, stopAfter, resume }) {
  const report = await initBackend({ backends: browserBackends, wasmPaths: new URL('./', self.location.href).href, ...(prefer ? { prefer } : {}) });
  post({ type: 'backend', backend: report.backend, reason: report.reason, attempts: report.attempts });
  const [model, tokenizer, task] = await Promise.all([
    AutoModelForCausalLM.fromPretrained(modelUrl),
    AutoTokenizer.fromPretrained(modelUrl),
    fetch(taskUrl).then((r) => r.json()),
  ]);
  const { fs, kind } = await storage();
  const outputDir = 'peftjs-example/run';
  if (!resume) await fs.remove(outputDir); // a fresh run, unless resuming from its last checkpoint
  post({ type: 'storage', kind, resume: !!resume });
  const t0 = performance.now();
  const { peft, zip, out } = await fineTune({
    model, tokenizer, task, steps, seed, fs, outputDir, saveSteps, stopAfter, resume,
    onLog: (e) => e.loss !== undefined && post({ type: 'log', step: e.step, loss: e.loss }),
  });
  const files = (await fs.readdir(outputDir)).sort();
  post({ type: 'trained', seconds: (performance.now() - t0) / 1000, steps: out.globalStep, files });
  const held = task.filter((_, i) => isHeldOut(i))[12]; // 1865: a year the adapter never saw
  post({ type: 'generated', prompt: prompt(held.year), text: await complete(peft, tokenizer, prompt(held.year)), expected: held.name });
  post({ type: 'adapter', bytes: zip }, [zip.buffer]);
}

self.onmessage = ({ data }) => {
  if (data?.type !== 'train') return;
  train(data).catch((e) => post({ type: 'error', message: e?.message ?? String(e) }));
};
