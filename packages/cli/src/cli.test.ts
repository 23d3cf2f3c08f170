import { describe, expect, it, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { AutoModelForCausalLM, PeftModel, initBackend, tinyLlamaDir, TINY_LLAMA_INFO } from 'peftjs';
import { main, recommendPeftMethod, GUIDE_RECOMMENDATIONS, DEFAULT_RECOMMENDATION, readRunRecord, inspectDir, measureMethods, GUIDE_TABLE } from '@peftjs/cli';

const EXAMPLES = fileURLToPath(new URL('../../../examples/configs/', import.meta.url));

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => (out += s + '\n'), err: (s) => (err += s + '\n') });
  return { code, out, err };
}

const tmp = () => mkdtempSync(join(tmpdir(), 'peft-cli-'));
/** Quick-run overrides: a few records, a few steps, no held-out scoring. */
const quick = (outputDir: string, steps = 2) => [
  '--set', `training.outputDir=${outputDir}`,
  '--set', `training.maxSteps=${steps}`,
  '--set', 'training.perDeviceTrainBatchSize=4',
  '--set', 'training.loggingSteps=1',
  '--set', 'training.evalStrategy=no',
  '--set', 'data.limit.train=8',
  '--set', 'data.limit.validation=4',
  '--set', 'data.maxLength=48',
  '--set', 'evaluation.before=false',
  '--set', 'evaluation.after=false',
];

beforeAll(async () => {
  await initBackend({ prefer: process.env.PEFTJS_TEST_BACKEND as never });
});

describe('peft recommend', () => {
  const guide: [string, string, string][] = [
    ['limited_gpu_memory', 'QLoRA', '4-bit quantization minimizes memory'],
    ['multiple_tasks', 'Adapters', 'Easy to swap task-specific adapters'],
    ['simple_classification', 'Prompt Tuning', 'Minimal parameters, fast training'],
    ['generation_task', 'LoRA', 'Good balance of quality and efficiency'],
    ['instruction_following', 'LoRA or QLoRA', 'Well-suited for instruction tuning'],
    ['knowledge_intensive', 'Full fine-tune or LoRA with high rank', 'Need more capacity for new knowledge'],
  ];
  it.each(guide)('%s → the guide\'s answer and reason', async (scenario, method, reasoning) => {
    expect(recommendPeftMethod(scenario)).toEqual({ method, reasoning });
    const r = await run('recommend', scenario);
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe(`${method}: ${reasoning}`);
    expect(JSON.parse((await run('recommend', scenario, '--json')).out)).toEqual({ method, reasoning });
  });
  it('has exactly the guide\'s six scenarios; anything else is "LoRA as default choice"', async () => {
    expect(Object.keys(GUIDE_RECOMMENDATIONS).sort()).toEqual(guide.map((g) => g[0]).sort());
    for (const s of ['', 'unknown', 'LIMITED_GPU_MEMORY', 'toString', '__proto__', 'constructor']) expect(recommendPeftMethod(s)).toBe(DEFAULT_RECOMMENDATION);
    expect((await run('recommend', 'something_else')).out.trim()).toBe('LoRA as default choice');
  });
  it('--model picks from the constraints and says why', async () => {
    const small = await run('recommend', '--model', 'tiny-llama', '--gpu-memory', '5MB');
    expect(small.code).toBe(0);
    expect(small.out).toMatch(/^QLoRA: 4-bit quantization minimizes memory/);
    expect(small.out).toMatch(/3\.95M parameters|4\.0M parameters/);
    expect((await run('recommend', '--model', 'tiny-llama', '--gpu-memory', '8GB', '--tasks', '3')).out).toMatch(/^Adapters:/);
    expect((await run('recommend', '--model', 'tiny-llama', '--task', 'classification')).out).toMatch(/^Prompt Tuning:/);
    expect((await run('recommend', '--model', 'tiny-llama', '--task', 'generation', '--gpu-memory', '8GB')).out).toMatch(/^LoRA: Good balance/);
    expect((await run('recommend', '--model', 'tiny-llama', '--task', 'instruction')).out).toMatch(/^LoRA or QLoRA:/);
    const bad = await run('recommend', '--model', 'tiny-llama', '--gpu-memory', 'lots');
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/--gpu-memory: "lots" is not a size/);
    const badTask = await run('recommend', '--model', 'tiny-llama', '--task', 'poetry');
    expect(badTask.code).not.toBe(0);
    expect(badTask.err).toMatch(/--task/);
  });
});

describe('peft methods', () => {
  it("measures every shipped method on the model beside the guide's rows", async () => {
    const model = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir());
    const rows = measureMethods(model);
    for (const g of GUIDE_TABLE) expect(rows.some((r) => r.method === g.method)).toBe(true);
    const by = (label: string) => rows.find((r) => r.peftjs.startsWith(label))!;
    // LoRA r=8 on q_proj (256→256) and v_proj (256→128) in 4 layers: 8·(256+256) + 8·(256+128) per layer
    expect(by('LORA r=8').trainable).toBe(4 * (8 * (256 + 256) + 8 * (256 + 128)));
    expect(by('PROMPT_TUNING').trainable).toBe(20 * 256);
    expect(by('IA3').trainable).toBe(4 * (128 + 128 + 688)); // k, v outputs and down_proj's input (intermediate 688)
    expect(by('IA3').sharePercent!).toBeLessThan(by('LORA r=8').sharePercent!);
    expect(rows.find((r) => r.method === 'Full Fine-tune')!.trainable).toBe(TINY_LLAMA_INFO.parameters);
    // bottleneck adapters: 2·d·r + r + d per placement and layer (d 256; SeqBn r 16, ParBn r 128)
    expect(by('BOTTLENECK SeqBn').trainable).toBe(4 * (2 * 256 * 16 + 16 + 256));
    expect(by('BOTTLENECK DoubleSeqBn').trainable).toBe(2 * 4 * (2 * 256 * 16 + 16 + 256));
    expect(by('BOTTLENECK ParBn').trainable).toBe(4 * (2 * 256 * 128 + 128 + 256));
    // the base model is left as it was (every injection unloaded)
    expect([...model.namedParameters()].reduce((a, [, p]) => a + p.size, 0)).toBe(TINY_LLAMA_INFO.parameters);
    model.dispose();
    const r = await run('methods');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\| Method \| Params Added \| Memory \| Quality \| Use Case \|/);
    expect(r.out).toMatch(/\| IA3 \| <0\.01% \| Lowest \| Good \| Memory constrained \|/);
  });
});

describe('peft CLI errors', () => {
  it('a missing config file is named, exit code non-zero', async () => {
    const r = await run('train', '/nonexistent/run.yaml');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/\/nonexistent\/run\.yaml: config file not found/);
  });
  it('an unknown or ill-typed field names the file and the field', async () => {
    const d = tmp();
    const f = join(d, 'bad.yaml');
    writeFileSync(f, 'method: { peftType: LORA }\ntraining: { learningRat: 0.1 }\n');
    let r = await run('train', f, '--set', `training.outputDir=${d}/out`);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(`${f}: unknown field "training.learningRat"`);
    writeFileSync(f, 'method: { peftType: LORA, r: "eight" }\n');
    r = await run('train', f);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(f);
    expect(r.err).toMatch(/field "r"/);
    writeFileSync(f, 'method: { peftType: LORA }\nmodle: tiny-llama\n');
    r = await run('train', f);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(`${f}: unknown field "modle"`);
    writeFileSync(f, 'method: { peftType: NOPE }\n');
    r = await run('train', f);
    expect(r.err).toMatch(/field "method.peftType": unknown peft_type "NOPE"/);
    writeFileSync(f, 'method: { peftType: LORA }\ntasks:\n  - name: a\n    type: classification\n    prompt: x\n    completion: y\n');
    r = await run('train', f);
    expect(r.err).toContain(`${f}: field "tasks[0].labels"`);
    writeFileSync(f, 'method: { peftType: LORA }\ntraining:\n  learningRate: [1\n');
    r = await run('train', f);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(new RegExp(`${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:\\d+:\\d+: not valid YAML`));
  });
  it('a bad TrainingArguments value names training.<field>', async () => {
    const d = tmp();
    const r = await run('train', join(EXAMPLES, 'lora.yaml'), ...quick(join(d, 'o')), '--set', 'training.perDeviceTrainBatchSize=0');
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('lora.yaml: field "training.perDeviceTrainBatchSize" must be a positive integer');
  });
  it('a missing data file and a template field a record lacks are named', async () => {
    const d = tmp();
    const f = join(d, 'cfg.yaml');
    writeFileSync(f, 'method: { peftType: LORA }\ndata: { train: missing.jsonl }\n');
    let r = await run('train', f);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(`field "data.train": file not found: ${join(d, 'missing.jsonl')}`);
    writeFileSync(join(d, 'train.jsonl'), '{"text": "hello"}\n');
    writeFileSync(f, 'method: { peftType: LORA }\ndata: { train: train.jsonl, validation: null, test: null }\ntasks:\n  - { name: t, type: generation, prompt: "{body}", completion: " {subject}" }\n');
    r = await run('train', f, '--set', `training.outputDir=${d}/o`);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(`${join(d, 'train.jsonl')}: record 0 (task "t"): field "body" is missing`);
  });
  it('other commands name the missing folder', async () => {
    for (const argv of [['inspect', '/nonexistent/dir'], ['merge', '/nonexistent/adapter', '--out', '/tmp/x'], ['report', '/nonexistent/run'], ['generate', '--model', '/nonexistent/model', '--prompt', 'hi']]) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).not.toBe(0);
      expect(r.err, argv.join(' ')).toContain('/nonexistent/');
    }
    const u = await run('train');
    expect(u.code).not.toBe(0);
    expect(u.err).toMatch(/missing required argument 'config'/);
  });
  it('--help works on every command', async () => {
    for (const c of ['train', 'eval', 'generate', 'merge', 'inspect', 'recommend', 'methods', 'report', 'demo']) {
      const r = await run(c, '--help');
      expect(r.code, c).toBe(0);
      expect(r.out, c).toMatch(new RegExp(`Usage: peft ${c}`));
    }
  });
});

describe('example configs', () => {
  const configs = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml'));
  it('are the five shipped methods and QLoRA', () => expect(configs.sort()).toEqual(['ia3.yaml', 'lora.yaml', 'p-tuning.yaml', 'prefix-tuning.yaml', 'prompt-tuning.yaml', 'qlora.yaml']));
  it.each(configs)('%s trains for 2 steps with peft train on the bundled model', async (file) => {
    const d = tmp();
    const r = await run('train', join(EXAMPLES, file), ...quick(d));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const rec = await readRunRecord(d);
    expect(rec.logHistory.filter((e) => e.loss !== undefined && e.trainLoss === undefined).map((e) => e.step)).toEqual([1, 2]);
    expect(existsSync(join(d, 'adapter', 'adapter_config.json'))).toBe(true);
    expect(existsSync(join(d, 'report.html'))).toBe(true);
    const ins = await inspectDir(join(d, 'adapter'));
    expect(ins.method).toBe(rec.method);
    expect(ins.hfLoadable).toBe(true);
  });
});

describe('peft train configs', () => {
  it('takes JSON as well as YAML, and a task repeat makes that many examples a record', async () => {
    const d = tmp();
    writeFileSync(join(d, 'train.jsonl'), ['{"q": "one", "a": "1"}', '{"q": "two", "a": "2"}', '{"q": "three", "a": "3"}'].join('\n') + '\n');
    const cfg = { name: 'json', method: { peftType: 'lora', r: 4, targetModules: ['q_proj', 'v_proj'] }, data: { train: 'train.jsonl', validation: null, test: null }, tasks: [{ name: 'num', type: 'generation', prompt: 'Number {q}:', completion: ' {a}', repeat: 2 }] };
    writeFileSync(join(d, 'run.json.config.json'), JSON.stringify(cfg));
    const r = await run('train', join(d, 'run.json.config.json'), '--set', `training.outputDir=${d}/out`, '--set', 'training.maxSteps=1');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const rec = await readRunRecord(join(d, 'out'));
    expect(rec.data.trainExamples).toBe(6);
    expect(rec.method).toBe('LORA');
    expect((rec.peftConfig as { r: number }).r).toBe(4);
  });
});

describe('peft train → merge, inspect, report, eval, generate', () => {
  let runDir: string;
  beforeAll(async () => {
    runDir = tmp();
    const r = await run('train', join(EXAMPLES, 'lora.yaml'), ...quick(runDir, 3), '--set', 'training.learningRate=0.01', '--set', 'evaluation.after=true', '--set', 'evaluation.limit=4');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
  });

  it('merge writes an HF model folder that AutoModelForCausalLM loads, with the adapted logits', async () => {
    const out = join(tmp(), 'merged');
    const r = await run('merge', join(runDir, 'adapter'), '--out', out);
    expect(r.code).toBe(0);
    expect(existsSync(join(out, 'config.json')) && existsSync(join(out, 'model.safetensors')) && existsSync(join(out, 'tokenizer.json'))).toBe(true);
    const merged = await AutoModelForCausalLM.fromPretrained(out);
    const adapted = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(tinyLlamaDir()), join(runDir, 'adapter'));
    const base = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir());
    const ids = [[5, 99, 400, 17, 1023, 8, 250, 3000]];
    const [a, m, b] = await Promise.all([adapted, merged, base].map(async (x) => {
      const { logits } = x.forward({ inputIds: ids });
      const v = (await logits.data()) as Float32Array;
      logits.dispose();
      return v;
    }));
    let maxDiff = 0;
    let maxBase = 0;
    for (let i = 0; i < a.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a[i] - m[i]));
      maxBase = Math.max(maxBase, Math.abs(a[i] - b[i]));
    }
    expect(maxDiff).toBeLessThan(1e-4);
    expect(maxBase).toBeGreaterThan(1e-3); // the adapter changed the model, so the match means something
    for (const x of [merged, adapted, base]) x.dispose();
    const ins = await inspectDir(out);
    expect(ins.kind).toBe('model');
    expect(ins.parameters).toBe(TINY_LLAMA_INFO.parameters);
    expect(ins.dtypes).toEqual({ F32: TINY_LLAMA_INFO.parameters });
  });

  it('inspect describes the adapter: method, targets, counts, dtypes, sizes, HF loadability', async () => {
    const r = await run('inspect', join(runDir, 'adapter'));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/method: LORA/);
    expect(r.out).toMatch(/targets: .*q_proj/);
    expect(r.out).toMatch(/r: 16/);
    expect(r.out).toMatch(/adapter_model\.safetensors {2}\d/);
    expect(r.out).toMatch(/HF PEFT .* can load it: yes/);
    const rec = await readRunRecord(runDir);
    expect((await inspectDir(join(runDir, 'adapter'))).parameters).toBe(rec.trainableParams);
    const m = await run('inspect', tinyLlamaDir());
    expect(m.out).toMatch(/model_type: llama/);
    expect(m.out).toContain(`parameters: ${TINY_LLAMA_INFO.parameters.toLocaleString('en-US')}`);
    expect(m.out).toMatch(/BF16/);
  });

  it('report: one HTML file whose loss curve has as many points as logged steps', async () => {
    const out = join(tmp(), 'r.html');
    const r = await run('report', runDir, '--out', out);
    expect(r.code).toBe(0);
    const html = readFileSync(out, 'utf8');
    expect(html).not.toMatch(/<script|<link |src="http/);
    const rec = await readRunRecord(runDir);
    const logged = rec.logHistory.filter((e) => e.loss !== undefined && e.trainLoss === undefined).length;
    expect(logged).toBe(3);
    const fig = /<figure data-chart="loss" data-points="(\d+)">([\s\S]*?)<\/figure>/.exec(html);
    expect(fig).not.toBeNull();
    expect(Number(fig![1])).toBe(logged);
    const svg = fig![2];
    expect(svg).toMatch(/^<svg/);
    const line = /<g class="mark-line role-mark[^"]*"[^>]*><path[^>]* d="([^"]+)"/.exec(svg);
    expect(line).not.toBeNull();
    const points = line![1].match(/[ML]/g)!.length;
    expect(points).toBe(logged);
    expect(html).toMatch(/data-chart="learningRate"/);
    expect(html).toContain('before (base model)');
    expect(html).toContain('trainable parameters');
  });

  it('eval and generate run with the adapter', async () => {
    const e = await run('eval', join(EXAMPLES, 'lora.yaml'), '--adapter', join(runDir, 'adapter'), '--limit', '4', '--json');
    expect(e.code).toBe(0);
    const scores = JSON.parse(e.out);
    expect(scores[0].task).toBe('spam');
    expect(scores[0].value).toBeGreaterThanOrEqual(0);
    const g = await run('generate', '--adapter', join(runDir, 'adapter'), '--prompt', 'The State of the Union', '--max-new-tokens', '4');
    expect(g.code).toBe(0);
    expect(g.out.startsWith('The State of the Union')).toBe(true);
    expect(g.out.trim().length).toBeGreaterThan('The State of the Union'.length);
  });

  it('--resume continues from the checkpoint of the run', async () => {
    const r = await run('train', join(EXAMPLES, 'lora.yaml'), ...quick(runDir, 5), '--set', 'training.saveSteps=1', '--resume');
    expect(r.code).toBe(0);
    const rec = await readRunRecord(runDir);
    const steps = rec.logHistory.filter((e) => e.loss !== undefined && e.trainLoss === undefined).map((e) => e.step);
    expect(steps).toEqual([1, 2, 3, 4, 5]);
  });
});

void tf;
