// The browser example, end to end, in headless Chromium (Debian's `chromium`, driven by puppeteer-core):
// build it, serve dist/ from a local server, train N steps on wasm in the page's Web Worker with a fixed
// seed, watch the loss fall, click "Download adapter", and compare the downloaded ZIP with the same recipe
// run here in Node on wasm: the bytes must be equal; a run stopped at step 4 and resumed in a new page from
// its checkpoint in OPFS downloads the same bytes. Then the downloaded adapter loads in Node with
// PeftModel.fromPretrained, the screenshot shows the loss chart, and core's file-system scenario gives on
// OPFS and IndexedDB what it gives on Node's fs. Skipped where chromium is not installed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from 'node:http';
import * as esbuild from 'esbuild';
import type { Browser, Page } from 'puppeteer-core';
import { PeftModel, initBackend, memoryFileSystem, nodeFileSystem, parseSafetensors, unzipFiles } from '@peftjs/core';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
// @ts-expect-error plain JS modules of the example
import { build, bundleOptions, serve, WORKER_BUDGET_BYTES } from './build.mjs';
// @ts-expect-error plain JS modules of the example
import { fineTune } from './src/recipe.js';
import { fsScenario } from '../../tools/testing/fs_scenario';

const chromium = ['chromium', 'chromium-browser', 'google-chrome']
  .map((c) => spawnSync('which', [c], { encoding: 'utf8' }))
  .find((r) => r.status === 0)
  ?.stdout.trim();
const here = fileURLToPath(new URL('.', import.meta.url));
const MODEL = fileURLToPath(new URL('../../packages/tiny-llama/model', import.meta.url));
const STEPS = 8;
const SEED = 0;
const SAVE_STEPS = 4; // the page's Trainer also writes checkpoints and metrics.jsonl to OPFS

describe.skipIf(!chromium)('examples/browser in headless Chromium', () => {
  let outdir: string;
  let sizes: Record<string, number>;
  let server: Server;
  let url: string;
  let browser: Browser;
  const downloads = mkdtempSync(join(tmpdir(), 'peftjs-download-'));

  beforeAll(async () => {
    ({ outdir, sizes } = await build({ log: () => undefined }));
    ({ server, url } = await serve(outdir));
    const puppeteer = (await import('puppeteer-core')).default;
    browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  });
  afterAll(async () => {
    await browser?.close();
    server?.close();
    rmSync(downloads, { recursive: true, force: true });
  });

  it('keeps the Worker bundle within its size budget', () => {
    expect(sizes['worker.js']).toBeLessThanOrEqual(WORKER_BUDGET_BYTES);
    expect(sizes['main.js']).toBeLessThan(10_000);
  });

  it('trains on wasm with the loss falling; the downloaded adapter equals a Node run of the same seed byte for byte and loads in Node', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 820, height: 760 });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const cdp = await page.createCDPSession();
    await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads, eventsEnabled: true });
    await page.goto(`${url}?steps=${STEPS}&seed=${SEED}&saveSteps=${SAVE_STEPS}&backend=wasm&autorun=1`);
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state ?? ''), { timeout: 90_000 });
    const ui = await page.evaluate(() => ({
      state: document.body.dataset.state,
      status: document.getElementById('status')!.textContent,
      backend: document.getElementById('backend')!.textContent,
      generated: document.getElementById('generated')!.textContent,
      losses: (globalThis as unknown as { exampleLosses: { step: number; loss: number }[] }).exampleLosses,
    }));
    expect(errors).toEqual([]);
    expect(ui.state, ui.status ?? '').toBe('done');
    expect(ui.backend).toMatch(/^wasm: /);
    // the Worker's Trainer wrote its checkpoint and log to OPFS
    expect(ui.status).toMatch(/run folder: checkpoint-8, metrics\.jsonl/);
    expect(ui.generated).toMatch(/^The State of the Union address of 1865 was given by/);
    const losses = ui.losses.map((e) => e.loss);
    expect(ui.losses.map((e) => e.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;
    expect(mean(losses.slice(-3))).toBeLessThan(mean(losses.slice(0, 3)) * 0.8);

    // the chart has drawn: the screenshot is saved (dist/ is gitignored), the canvas holds the line's colour
    await page.screenshot({ path: join(outdir, 'screenshot.png') });
    const chart = await page.evaluate(() => {
      const c = document.getElementById('loss') as HTMLCanvasElement;
      const px = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let line = 0;
      for (let i = 0; i < px.length; i += 4) if (px[i] === 0xd9 && px[i + 1] === 0x48 && px[i + 2] === 0x0f) line++;
      return { line, points: c.dataset.points };
    });
    expect(chart.points).toBe(String(STEPS));
    expect(chart.line).toBeGreaterThan(500);

    // the download, as the user gets it
    const done = new Promise<string>((resolve, reject) => {
      cdp.on('Browser.downloadProgress', (e) => {
        if (e.state === 'completed') resolve(e.guid);
        if (e.state === 'canceled') reject(new Error('the download was canceled'));
      });
    });
    await page.click('#download');
    await done;
    const file = readdirSync(downloads).find((f) => f.endsWith('.zip'));
    expect(file).toBe('tiny-llama-sotu-lora.zip');
    const downloaded = new Uint8Array(readFileSync(join(downloads, file!)));
    await page.close();

    // the same recipe in Node, on wasm (the native matmul off: the browser has none), same seed
    const report = await initBackend({ prefer: 'wasm', native: false });
    expect(report.backend).toBe('wasm');
    const task = JSON.parse(readFileSync(join(outdir, 'task.json'), 'utf8'));
    const tokenizer = await AutoTokenizer.fromPretrained(MODEL);
    const nodeLosses: number[] = [];
    const node = await fineTune({
      model: await AutoModelForCausalLM.fromPretrained(MODEL), tokenizer, task, steps: STEPS, seed: SEED,
      fs: memoryFileSystem(), outputDir: 'peftjs-example/run', saveSteps: SAVE_STEPS,
      onLog: (e: { loss?: number }) => e.loss !== undefined && nodeLosses.push(e.loss),
    });
    expect(nodeLosses).toEqual(losses);
    expect(downloaded.byteLength).toBe(node.zip.byteLength);
    expect(Buffer.from(downloaded).equals(Buffer.from(node.zip))).toBe(true);

    // HF PEFT's folder, zipped: its two files, HF's tensor names; it loads in Node without unzipping to disk
    const files = await unzipFiles(downloaded, file!);
    expect(Object.keys(files).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const config = JSON.parse(new TextDecoder().decode(files['adapter_config.json']));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 16, lora_alpha: 32, task_type: 'CAUSAL_LM' });
    const st = parseSafetensors(files['adapter_model.safetensors'], 'adapter_model.safetensors');
    expect(Object.keys(st.tensors)).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    const loaded = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(MODEL), '.', { fs: memoryFileSystem(files) });
    for (const [k, v] of node.peft.adapterTensorMap('default')) {
      expect(Array.from(await loaded.adapterTensorMap('default').get(k)!.data()), k).toEqual(Array.from(await v.data()));
    }
    // OPFS keeps the run across page loads: a page stopped at step 4 (its checkpoint-4 in OPFS), then a new
    // page resuming from it, ends with the uninterrupted run's losses and downloads the same bytes
    const stopped = await browser.newPage();
    await stopped.goto(`${url}?steps=${STEPS}&seed=${SEED}&saveSteps=${SAVE_STEPS}&backend=wasm&autorun=1&stopAfter=4`);
    await stopped.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state ?? ''), { timeout: 90_000 });
    expect(await stopped.evaluate(() => document.getElementById('status')!.textContent)).toMatch(/trained 4 steps.*run folder: checkpoint-4, metrics\.jsonl/);
    await stopped.close();
    const resumed = await browser.newPage();
    const resumedDownloads = mkdtempSync(join(tmpdir(), 'peftjs-download-'));
    const cdp2 = await resumed.createCDPSession();
    await cdp2.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: resumedDownloads, eventsEnabled: true });
    await resumed.goto(`${url}?steps=${STEPS}&seed=${SEED}&saveSteps=${SAVE_STEPS}&backend=wasm&autorun=1&resume=1`);
    await resumed.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state ?? ''), { timeout: 90_000 });
    const after = await resumed.evaluate(() => (globalThis as unknown as { exampleLosses: { step: number; loss: number }[] }).exampleLosses);
    expect(after.map((e) => e.step)).toEqual([5, 6, 7, 8]);
    expect(after.map((e) => e.loss)).toEqual(nodeLosses.slice(4));
    const done2 = new Promise<void>((resolve) => cdp2.on('Browser.downloadProgress', (e) => e.state === 'completed' && resolve()));
    await resumed.click('#download');
    await done2;
    const again = new Uint8Array(readFileSync(join(resumedDownloads, 'tiny-llama-sotu-lora.zip')));
    expect(Buffer.from(again).equals(Buffer.from(node.zip))).toBe(true);
    await resumed.close();
    rmSync(resumedDownloads, { recursive: true, force: true });

    // unzipped to a folder on disk, as a Python user does: the same
    const dir = mkdtempSync(join(tmpdir(), 'peftjs-unzipped-'));
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
    const fromDisk = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(MODEL), dir, { fs: nodeFileSystem });
    expect(fromDisk.peftConfig.default.peftType).toBe('LORA');
    rmSync(dir, { recursive: true, force: true });
  }, 300_000); // about 30 s alone; CI runs other test files beside it on 2 cores

  // WebGPU in the page, on Chromium's SwiftShader adapter (software: taken because the page asks for webgpu
  // first): the WGSL kernels run in a browser. Opt-in, it takes about 100 s for 2 steps on 2 cores.
  it.runIf(process.env.PEFTJS_TEST_BROWSER_WEBGPU === '1')('trains on WebGPU (SwiftShader) in the page with the losses of wasm in Node', async () => {
    const puppeteer = (await import('puppeteer-core')).default;
    const gpu = await puppeteer.launch({ executablePath: chromium, headless: true, args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan'] });
    try {
      const page = await gpu.newPage();
      await page.goto(`${url}?steps=2&seed=${SEED}&saveSteps=0&backend=webgpu&autorun=1`);
      await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state ?? ''), { timeout: 400_000 });
      const ui = await page.evaluate(() => ({
        status: document.getElementById('status')!.textContent,
        backend: document.getElementById('backend')!.textContent,
        losses: (globalThis as unknown as { exampleLosses: { loss: number }[] }).exampleLosses.map((e) => e.loss),
      }));
      expect(ui.backend, ui.status ?? '').toMatch(/^webgpu: .*software, as asked/);
      await initBackend({ prefer: 'wasm', native: false });
      const task = JSON.parse(readFileSync(join(outdir, 'task.json'), 'utf8'));
      const nodeLosses: number[] = [];
      await fineTune({
        model: await AutoModelForCausalLM.fromPretrained(MODEL), tokenizer: await AutoTokenizer.fromPretrained(MODEL), task, steps: 2, seed: SEED,
        onLog: (e: { loss?: number }) => e.loss !== undefined && nodeLosses.push(e.loss),
      });
      // measured: 4.860870 / 3.568056 on SwiftShader against 4.860914 / 3.568115 on wasm (fp32, other summation orders)
      expect(ui.losses.length).toBe(2);
      ui.losses.forEach((l, i) => expect(Math.abs(l - nodeLosses[i]) / nodeLosses[i]).toBeLessThan(1e-4));
    } finally {
      await gpu.close();
    }
  }, 600_000);

  it("core's file-system scenario gives on OPFS and IndexedDB (main thread and Worker) what it gives on Node's fs; savePretrained and fromPretrained through both; initBackend's browser order", async () => {
    const expected = await fsScenario(nodeFileSystem, mkdtempSync(join(tmpdir(), 'peftjs-fs-')));
    const entry = `
      import { initBackend, opfsFileSystem, indexedDbFileSystem, memoryFileSystem, getPeftModel, manualSeed, PeftModel } from '@peftjs/core';
      import { browserBackends } from '@peftjs/core/browser';
      import { LlamaForCausalLM, parseModelConfig } from '@peftjs/models';
      import { LoraConfig } from '@peftjs/lora';
      self.chooseBackend = () => initBackend({ backends: browserBackends, wasmPaths: new URL('./', location.href).href });
      // savePretrained → PeftModel.fromPretrained through OPFS and IndexedDB (core's commit: staging folder, journal, renames)
      self.saveLoad = async () => {
        const config = parseModelConfig({ model_type: 'llama', vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
          num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, rms_norm_eps: 1e-6, tie_word_embeddings: false });
        const base = () => (manualSeed(1), new LlamaForCausalLM(config));
        const peft = getPeftModel(base(), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], initLoraWeights: 'gaussian' }));
        const values = async (m) => Promise.all([...m.adapterTensorMap('default')].map(async ([k, v]) => [k, Array.from(await v.data())]));
        const want = JSON.stringify(await values(peft));
        const out = {};
        for (const [name, fs] of [['opfs', opfsFileSystem()], ['idb', indexedDbFileSystem('peftjs-saveload')]]) {
          await fs.remove('saved');
          await peft.savePretrained('saved/lora', { fs });
          await peft.savePretrained('saved/lora', { fs }); // over an earlier save
          const back = await PeftModel.fromPretrained(base(), 'saved/lora', { fs });
          out[name] = { files: await fs.readdir('saved/lora'), equal: JSON.stringify(await values(back)) === want };
        }
        return out;
      };
      import { fsScenario } from ${JSON.stringify(join(here, '../../tools/testing/fs_scenario.ts'))};
      const run = async () => ({
        opfs: await fsScenario(opfsFileSystem(), 'scenario-' + (self.document ? 'page' : 'worker')),
        idb: await fsScenario(indexedDbFileSystem('peftjs-scenario-' + (self.document ? 'page' : 'worker')), 'scenario'),
        memory: await fsScenario(memoryFileSystem(), 'scenario'),
      });
      if (self.document) self.runScenarios = run;
      else run().then((r) => postMessage(r), (e) => postMessage({ error: String(e) }));`;
    await esbuild.build({ ...bundleOptions(), stdin: { contents: entry, resolveDir: here, loader: 'js' }, outfile: join(outdir, 'fs-check.js'), sourcemap: false });
    writeFileSync(join(outdir, 'fs-check.html'), '<!doctype html><script type="module" src="./fs-check.js"></script>');
    const page: Page = await browser.newPage();
    await page.goto(`${url}fs-check.html`);
    await page.waitForFunction(() => typeof (globalThis as { runScenarios?: unknown }).runScenarios === 'function', { timeout: 30_000 });
    const got = await page.evaluate(async () => {
      const g = globalThis as unknown as { runScenarios: () => Promise<unknown> };
      const inPage = await g.runScenarios();
      const inWorker = await new Promise((resolve) => {
        const w = new Worker('./fs-check.js', { type: 'module' });
        w.onmessage = (e) => resolve(e.data);
        w.onerror = (e) => resolve({ error: e.message });
      });
      const r = await (globalThis as unknown as { chooseBackend: () => Promise<{ backend: string; attempts: { backend: string; reason: string }[] }> }).chooseBackend();
      const saved = await (globalThis as unknown as { saveLoad: () => Promise<unknown> }).saveLoad();
      return { inPage, inWorker, backend: r.backend, attempts: r.attempts, saved };
    });
    await page.close();
    expect(got.inPage).toEqual({ opfs: expected, idb: expected, memory: expected });
    expect(got.inWorker).toEqual({ opfs: expected, idb: expected, memory: expected });
    // initBackend's browser order, with this headless Chromium's GPU off: no hardware WebGPU adapter, WebGL
    // absent or software (SwiftShader, passed over unless asked for), so wasm, from the bundle
    expect(got.attempts.map((a) => a.backend)).toEqual(['webgpu', 'webgl', 'wasm']);
    expect(got.backend).toBe('wasm');
    expect(got.attempts[1].reason).toMatch(/software|no WebGL context/);
    const files = ['adapter_config.json', 'adapter_model.safetensors'];
    expect(got.saved).toEqual({ opfs: { files, equal: true }, idb: { files, equal: true } });
  });
});
