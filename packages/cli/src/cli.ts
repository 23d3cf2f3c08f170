// The `peft` command line (commander): every command is a function of its arguments that prints through
// `io` and returns an exit code, so tests run it in-process; bin.ts wires it to the process.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { PeftModel, initBackend, manualSeed, estimateParameters, parseModelConfig } from 'peftjs';
import { CliError, DATA_DIR, loadRunConfig } from './config';
import { ADAPTER_SUBDIR, formatScores, loadModel, modelDir, readRecords, runTraining, scoreTasks } from './run';
import { recommendPeftMethod, recommendForModel, parseBytes, GUIDE_RECOMMENDATIONS, DEFAULT_RECOMMENDATION, type TaskKind } from './recommend';
import { formatMethodsTable, methodsTable } from './methods';
import { inspectDir, formatInspect } from './inspect';
import { mergeAdapter } from './merge';
import { writeReport } from './report';

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

const defaultIo: Io = { out: (s) => process.stdout.write(s.endsWith('\n') ? s : s + '\n'), err: (s) => process.stderr.write(s.endsWith('\n') ? s : s + '\n') };

/** The demo's config, shipped with the package. */
export const DEMO_CONFIG = join(DATA_DIR, 'demo.yaml');

const collect = (v: string, prev: string[]) => [...prev, v];

function program(io: Io): Command {
  const p = new Command('peft')
    .description('Parameter-efficient fine-tuning with peftjs: train, evaluate, generate, merge, inspect, recommend, compare, report')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.replace(/\n$/, '')), writeErr: (s) => io.err(s.replace(/\n$/, '')) })
    .showHelpAfterError('(add --help for usage)');

  p.command('train')
    .description('fine-tune a model with a PEFT method from a YAML or JSON config; writes the adapter, run.json and report.html into training.outputDir')
    .argument('<config>', 'run config (.yaml, .yml or .json): model, method, data, tasks, training (TrainingArguments), evaluation')
    .option('--set <key=value>', 'override a config field, e.g. --set training.maxSteps=10 (repeatable)', collect, [])
    .option('--resume', 'continue from the latest checkpoint in outputDir (after Ctrl-C, which writes one)')
    .option('--no-report', 'do not write report.html at the end')
    .addHelpText('after', '\nCtrl-C (SIGINT) writes a checkpoint and exits with 130; run again with --resume to continue.\nExample:\n  peft train examples/configs/lora.yaml --set training.maxSteps=20')
    .action(async (config: string, o: { set: string[]; resume?: boolean; report: boolean }) => {
      const loaded = await loadRunConfig(config, o.set);
      const r = await runTraining(loaded, { resume: o.resume, log: io.out });
      if (o.report && loaded.config.report) {
        const rep = await writeReport(r.outputDir);
        io.out(`report: ${rep.path}`);
      }
    });

  p.command('eval')
    .description("score a model (and an adapter) on a config's tasks over its test split")
    .argument('<config>', 'run config (the model, data and tasks are taken from it)')
    .option('--adapter <dir>', 'adapter folder (default: the base model alone)')
    .option('--split <split>', 'test or validation', 'test')
    .option('--limit <n>', 'records to score', (v) => positiveInt(v, '--limit'))
    .option('--set <key=value>', 'override a config field (repeatable)', collect, [])
    .option('--json', 'print the scores as JSON')
    .action(async (config: string, o: { adapter?: string; split: string; limit?: number; set: string[]; json?: boolean }) => {
      const { config: cfg } = await loadRunConfig(config, o.set);
      if (o.split !== 'test' && o.split !== 'validation') throw new CliError(`--split: "${o.split}" is not test or validation`);
      const file = o.split === 'test' ? cfg.data.test : cfg.data.validation;
      if (!file) throw new CliError(`${config}: field "data.${o.split}" is null: nothing to score`);
      await initBackend();
      const { model, tokenizer } = await loadModel(cfg.model);
      const target = o.adapter ? await PeftModel.fromPretrained(model, resolve(o.adapter)) : model;
      const recs = await readRecords(file, o.limit ?? cfg.evaluation.limit);
      const scores = await scoreTasks(target, tokenizer, recs, cfg, file);
      io.out(o.json ? JSON.stringify(scores, null, 2) : `${recs.length} records of ${file}: ${formatScores(scores)}`);
    });

  p.command('generate')
    .description('generate text from a prompt with a model (and an adapter)')
    .requiredOption('--prompt <text>', 'the prompt (repeatable: one batch)', collect, [])
    .option('--model <dir>', "model folder or 'tiny-llama'", 'tiny-llama')
    .option('--adapter <dir>', 'adapter folder')
    .option('--max-new-tokens <n>', 'tokens to generate', (v) => positiveInt(v, '--max-new-tokens'), 32)
    .option('--temperature <t>', 'sample at this temperature (default: greedy)', (v) => positiveNumber(v, '--temperature'))
    .option('--top-p <p>', 'nucleus sampling', (v) => positiveNumber(v, '--top-p'))
    .option('--seed <n>', 'sampling seed', (v) => positiveInt(v, '--seed', true), 0)
    .action(async (o: { prompt: string[]; model: string; adapter?: string; maxNewTokens: number; temperature?: number; topP?: number; seed: number }) => {
      if (!o.prompt.length) throw new CliError('--prompt: give at least one prompt');
      await initBackend();
      manualSeed(o.seed);
      const { model, tokenizer } = await loadModel(o.model);
      const m = o.adapter ? await PeftModel.fromPretrained(model, resolve(o.adapter)) : model;
      const enc = tokenizer.batchEncode(o.prompt, { padding: true, paddingSide: 'left' });
      const rows = await m.generate({
        inputIds: enc.inputIds,
        attentionMask: enc.attentionMask,
        maxNewTokens: o.maxNewTokens,
        doSample: o.temperature !== undefined,
        temperature: o.temperature,
        topP: o.topP,
        seed: o.seed,
        padTokenId: tokenizer.padTokenId,
        eosTokenId: tokenizer.eosTokenId,
      });
      const T = enc.inputIds[0].length;
      rows.forEach((r, i) => io.out(`${o.prompt[i]}${tokenizer.decode(r.slice(T), { skipSpecialTokens: true })}`));
    });

  p.command('merge')
    .description('merge an adapter into its base model and write an HF model folder (config.json + model.safetensors)')
    .argument('<adapter>', 'adapter folder (adapter_config.json + adapter_model.safetensors)')
    .requiredOption('--out <dir>', 'the model folder to write')
    .option('--model <dir>', "base model folder or 'tiny-llama' (default: the adapter's base_model_name_or_path)")
    .action(async (adapter: string, o: { out: string; model?: string }) => {
      await initBackend();
      const r = await mergeAdapter(adapter, o);
      io.out(`merged ${adapter} into ${r.base}: ${r.parameters.toLocaleString('en-US')} parameters written to ${r.out} (config.json + model.safetensors, float32)`);
    });

  p.command('inspect')
    .description('describe an adapter or model folder: method, targets, parameter counts, dtypes, file sizes, whether HF PEFT / transformers can load it')
    .argument('<dir>', 'adapter or model folder')
    .option('--json', 'print as JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      const r = await inspectDir(dir);
      io.out(o.json ? JSON.stringify(r, null, 2) : formatInspect(r));
    });

  p.command('recommend')
    .description("the guide's recommendation for a scenario, or a pick from a model's size and your constraints")
    .argument('[scenario]', `one of ${Object.keys(GUIDE_RECOMMENDATIONS).join(', ')} (anything else: "${DEFAULT_RECOMMENDATION}")`)
    .option('--model <dir>', "model folder or 'tiny-llama': recommend from its size")
    .option('--gpu-memory <size>', 'memory available for training, e.g. 8GB, 512MiB')
    .option('--tasks <n>', 'number of tasks the model must serve', (v) => positiveInt(v, '--tasks'))
    .addOption(new Option('--task <kind>', 'the kind of task').choices(['classification', 'generation', 'instruction']))
    .option('--json', 'print as JSON')
    .action(async (scenario: string | undefined, o: { model?: string; gpuMemory?: string; tasks?: number; task?: TaskKind; json?: boolean }) => {
      if (o.model === undefined) {
        if (scenario === undefined) throw new CliError('recommend: give a SCENARIO or --model DIR (see peft recommend --help)');
        if (o.gpuMemory || o.tasks || o.task) throw new CliError('recommend: --gpu-memory, --tasks and --task need --model DIR');
        const r = recommendPeftMethod(scenario);
        io.out(o.json ? JSON.stringify(r) : typeof r === 'string' ? r : `${r.method}: ${r.reasoning}`);
        return;
      }
      const dir = modelDir(o.model);
      const cfgPath = join(dir, 'config.json');
      if (!existsSync(cfgPath)) throw new CliError(`${cfgPath}: not found (--model takes a model folder or 'tiny-llama')`);
      let raw: Record<string, unknown>;
      try {
        raw = JSON.parse(await readFile(cfgPath, 'utf8'));
      } catch (e) {
        throw new CliError(`${cfgPath}: not valid JSON (${(e as Error).message})`);
      }
      // the weights' headers count exactly; config.json's estimate when the weights are elsewhere
      const parameters = existsSync(join(dir, 'model.safetensors')) ? await countWeights(dir) : estimateParameters(parseModelConfig(raw, cfgPath));
      const dtype = String(raw.dtype ?? raw.torch_dtype ?? 'float32');
      const r = recommendForModel({ parameters, bytesPerWeight: /16/.test(dtype) ? 2 : 4, modelType: String(raw.model_type) }, { gpuMemoryBytes: o.gpuMemory ? parseBytes(o.gpuMemory) : undefined, tasks: o.tasks, task: o.task });
      if (o.json) io.out(JSON.stringify(r, null, 2));
      else io.out([`${r.method}: ${r.reasoning}`, ...r.why.map((w) => `  - ${w}`), `  peftjs: ${r.peftjs}`].join('\n'));
    });

  p.command('methods')
    .description("the guide's comparison table beside every shipped method's trainable-parameter share and estimated training memory, measured on a model (real injection, no training)")
    .option('--model <dir>', "model folder or 'tiny-llama'", 'tiny-llama')
    .option('--json', 'print as JSON')
    .action(async (o: { model: string; json?: boolean }) => {
      await initBackend();
      const { rows, base } = await methodsTable(o.model);
      io.out(o.json ? JSON.stringify({ base, rows }, null, 2) : formatMethodsTable(rows, o.model, base));
    });

  p.command('report')
    .description('write one self-contained HTML report (SVG charts, tables, config, samples) of a training run')
    .argument('<run_dir>', 'the outputDir of a peft train run (holds run.json)')
    .option('--out <file>', 'where to write it (default RUN_DIR/report.html)')
    .action(async (runDir: string, o: { out?: string }) => {
      const r = await writeReport(resolve(runDir), o.out && resolve(o.out));
      io.out(`report: ${r.path} (${Object.keys(r.charts).length} charts)`);
    });

  p.command('demo')
    .description('the demo: LoRA on the bundled tiny LLaMA for spam-or-ham and subject lines of the Spam Assassin corpus; scores before and after, saves the adapter, writes the report')
    .option('--out <dir>', 'output folder', 'runs/demo')
    .option('--set <key=value>', 'override a field of the demo config (repeatable)', collect, [])
    .action(async (o: { out: string; set: string[] }) => {
      const t0 = Date.now();
      const loaded = await loadRunConfig(DEMO_CONFIG, [`training.outputDir=${resolve(o.out)}`, ...o.set]);
      const r = await runTraining(loaded, { log: io.out });
      const rep = await writeReport(r.outputDir);
      const b = r.record.before ?? [];
      const a = r.record.after ?? [];
      io.out('\nheld-out test split (200 messages), base model → LoRA adapter:');
      for (const s of a) {
        const bs = b.find((x) => x.task === s.task);
        const f = (v?: number) => (v === undefined ? '–' : `${(100 * v).toFixed(1)}${s.metric === 'accuracy' ? '%' : ''}`);
        io.out(`  ${s.task} ${s.metric}: ${f(bs?.value)} → ${f(s.value)}`);
      }
      io.out(`adapter: ${join(r.outputDir, ADAPTER_SUBDIR)}\nreport:  ${rep.path}\ntotal ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    });
  return p;
}

async function countWeights(dir: string): Promise<number> {
  const { inspectDir: insp } = await import('./inspect');
  return (await insp(dir)).parameters;
}

function positiveInt(v: string, name: string, zero = false): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < (zero ? 0 : 1)) throw new CliError(`${name}: "${v}" is not a ${zero ? 'non-negative' : 'positive'} integer`);
  return n;
}
function positiveNumber(v: string, name: string): number {
  const n = Number(v);
  if (!(n > 0)) throw new CliError(`${name}: "${v}" is not a positive number`);
  return n;
}

/** Runs `peft` with `argv` (without node and the script); returns the exit code. */
export async function main(argv: string[], io: Io = defaultIo): Promise<number> {
  try {
    await program(io).parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2; // help/version: 0; usage errors: 2 (printed already)
    if (e instanceof CliError) {
      io.err(`peft: ${e.message}`);
      return e.exitCode;
    }
    const err = e as Error & { code?: string };
    io.err(`peft: ${err.message ?? String(e)}${err.code ? ` [${err.code}]` : ''}`);
    return 1;
  }
}
