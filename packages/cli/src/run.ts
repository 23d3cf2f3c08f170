// What `peft train`, `peft eval` and the demo share: the model, the method config, the task data, the
// before/after evaluation and the run record (run.json) the report is drawn from.
import { readFile, writeFile, mkdir, rename } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  AutoModelForCausalLM,
  AutoTokenizer,
  BitsAndBytesConfig,
  prepareModelForKbitTraining,

  PeftModel,
  TaskType,
  Trainer,
  TrainingInterruptedError,
  evaluatePeftModel,
  getPeftMethod,
  getPeftModel,
  initBackend,
  loadPromptTuningInitText,
  manualSeed,
  resolveTrainingArguments,
  parseRecords,
  tinyLlamaDir,
  tokenizeRecords,
  type CausalLMBase,
  type EvalExample,
  type EvaluateResult,
  type Example,
  type LogEntry,
  type PeftConfig,
  type PreTrainedTokenizer,
  type TextRecord,
  type TrainerCallback,
} from 'peftjs';
import { jinjaChatTemplate, readChatTemplate, type ChatTemplateFn } from './chat';
import { CliError, fillTemplate, type RunConfig, type TaskSpec, type LoadedConfig } from './config';

export const RUN_RECORD = 'run.json';
export const ADAPTER_SUBDIR = 'adapter';
export const REPORT_FILE = 'report.html';

/** Method names the CLI accepts besides HF's peft_type. */
const METHOD_ALIASES: Record<string, string> = {
  lora: 'LORA',
  ia3: 'IA3',
  adalora: 'ADALORA',
  prompt: 'PROMPT_TUNING',
  prompt_tuning: 'PROMPT_TUNING',
  prefix: 'PREFIX_TUNING',
  prefix_tuning: 'PREFIX_TUNING',
  p_tuning: 'P_TUNING',
  ptuning: 'P_TUNING',
  prompt_encoder: 'P_TUNING',
  adapters: 'BOTTLENECK',
  bottleneck: 'BOTTLENECK',
};

export function modelDir(spec: string): string {
  return spec === 'tiny-llama' ? tinyLlamaDir() : resolve(spec);
}

export async function loadModel(
  spec: string,
  quantization?: { gradientCheckpointing?: boolean } & Record<string, unknown>,
  source = 'the run config',
): Promise<{ model: CausalLMBase; tokenizer: PreTrainedTokenizer; dir: string }> {
  const dir = modelDir(spec);
  if (!existsSync(join(dir, 'config.json'))) throw new CliError(`${dir}: no config.json (a model folder holds config.json, model.safetensors and tokenizer.json)`);
  let quantizationConfig: BitsAndBytesConfig | undefined;
  if (quantization) {
    const { gradientCheckpointing: _, ...fields } = quantization;
    try {
      quantizationConfig = new BitsAndBytesConfig(fields as never);
    } catch (e) {
      throw new CliError(`${source}: field "quantization": ${(e as Error).message}`);
    }
  }
  const [loaded, tokenizer] = await Promise.all([AutoModelForCausalLM.fromPretrained(dir, quantizationConfig ? { quantizationConfig } : {}), AutoTokenizer.fromPretrained(dir)]);
  const model = quantizationConfig ? prepareModelForKbitTraining(loaded, { useGradientCheckpointing: quantization?.gradientCheckpointing ?? true }) : loaded;
  if (tokenizer.padTokenId === undefined && tokenizer.eosTokenId !== undefined) tokenizer.padTokenId = tokenizer.eosTokenId;
  return { model, tokenizer, dir };
}

/** The method's config from the run config's `method` section; errors name the file and field. */
export async function buildPeftConfig(method: Record<string, unknown>, file: string, modelFolder: string, baseModel: string): Promise<PeftConfig> {
  const { peftType: given, ...fields } = method as { peftType: string } & Record<string, unknown>;
  const peftType = METHOD_ALIASES[given.toLowerCase().replace(/-/g, '_')] ?? given;
  let m;
  try {
    m = getPeftMethod(peftType);
  } catch (e) {
    throw new CliError(`${file}: field "method.peftType": ${(e as Error).message}`);
  }
  const input: Record<string, unknown> = { taskType: TaskType.CAUSAL_LM, baseModelNameOrPath: baseModel, ...fields };
  if (peftType === 'PROMPT_TUNING' && input.promptTuningInit === 'TEXT' && input.tokenizerNameOrPath === undefined) input.tokenizerNameOrPath = modelFolder;
  let config: PeftConfig;
  try {
    config = new m.configClass(input);
  } catch (e) {
    throw new CliError(`${file}: method (${peftType}): ${(e as Error).message}`);
  }
  if (peftType === 'PROMPT_TUNING' && input.promptTuningInit === 'TEXT') await loadPromptTuningInitText(config as never);
  return config;
}

export async function readRecords(path: string, limit?: number): Promise<TextRecord[]> {
  if (!existsSync(path)) throw new CliError(`${path}: data file not found`);
  const fmt = /\.jsonl$/i.test(path) ? 'jsonl' : /\.json$/i.test(path) ? 'json' : /\.csv$/i.test(path) ? 'csv' : null;
  if (!fmt) throw new CliError(`${path}: cannot tell the format from the extension (.jsonl, .json or .csv)`);
  let recs: TextRecord[];
  try {
    recs = parseRecords(await readFile(path, 'utf8'), fmt, path);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  if (!recs.length) throw new CliError(`${path}: no records`);
  return limit ? recs.slice(0, limit) : recs;
}

/** Prompt → completion records of every task (tasks interleaved record by record), or the records as they are. */
export function taskRecords(recs: TextRecord[], tasks: TaskSpec[], source: string): TextRecord[] {
  if (!tasks.length) return recs;
  const out: TextRecord[] = [];
  recs.forEach((r, i) => {
    for (const t of tasks) {
      const rec = { prompt: fillTemplate(t.prompt, r, `${source}: record ${i} (task "${t.name}")`), completion: fillTemplate(t.completion, r, `${source}: record ${i} (task "${t.name}")`) };
      for (let k = 0; k < (t.repeat ?? 1); k++) out.push(rec);
    }
  });
  return out;
}

/**
 * Tokenizes records. Task records (prompt → completion) longer than maxLength lose tokens from the middle
 * of the prompt, not the end of the example: the completion and the prompt's last `keepTail` tokens (the
 * question after the record's text) are kept, so truncation never drops the label.
 */
export function tokenize(recs: TextRecord[], tok: PreTrainedTokenizer, maxLength: number, source: string, keepTail = 0, chatTemplate?: ChatTemplateFn): Example[] {
  let out: Example[];
  try {
    out = tokenizeRecords(recs, { tokenizer: tok, maxLength: 1 << 20, chatTemplate }, source);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  return out.map((ex) => {
    const n = ex.inputIds.length;
    if (n <= maxLength) return ex;
    const firstLabel = ex.labels!.findIndex((l) => l !== -100);
    const promptLen = firstLabel < 0 ? n : firstLabel;
    const completionLen = n - promptLen;
    const tail = Math.min(keepTail, promptLen);
    const head = maxLength - completionLen - tail;
    if (firstLabel < 0 || head < 1) return { inputIds: ex.inputIds.slice(0, maxLength), attentionMask: ex.attentionMask!.slice(0, maxLength), labels: ex.labels!.slice(0, maxLength) };
    const keep = (a: number[]) => [...a.slice(0, head), ...a.slice(promptLen - tail)];
    return { inputIds: keep(ex.inputIds), attentionMask: keep(ex.attentionMask!), labels: keep(ex.labels!) };
  });
}

/** Tokens of a task prompt after its last {field} (e.g. "\nSpam or ham:"), the most of all tasks. */
export function promptTail(tasks: TaskSpec[], tok: PreTrainedTokenizer): number {
  return Math.max(0, ...tasks.map((t) => tok.encode(t.prompt.slice(t.prompt.lastIndexOf('}') + 1), { addSpecialTokens: false }).length));
}

export interface TaskScore {
  task: string;
  type: 'classification' | 'generation' | 'language-modeling';
  /** The headline figure: accuracy (0–1), ROUGE-L F (0–1) or perplexity. */
  metric: string;
  value: number;
  metrics: Record<string, number>;
  samples: { input: string; prediction: string; reference: string }[];
  seconds: number;
}

function evalExamples(recs: TextRecord[], t: TaskSpec, source: string): EvalExample[] {
  return recs.map((r, i) => {
    const where = `${source}: record ${i} (task "${t.name}")`;
    const input = fillTemplate(t.prompt, r, where);
    const ref = fillTemplate(t.completion, r, where).trim();
    return t.type === 'classification' ? { input, label: ref } : { input, target: ref };
  });
}

/** Scores `model` on each task of the config over the records (the test split). */
export async function scoreTasks(model: CausalLMBase | PeftModel, tok: PreTrainedTokenizer, recs: TextRecord[], cfg: RunConfig, source: string): Promise<TaskScore[]> {
  const out: TaskScore[] = [];
  const e = cfg.evaluation;
  const sample = (r: EvaluateResult) =>
    r.predictions.slice(0, e.samples).map((p) => ({ input: String(p.input ?? ''), prediction: String(p.prediction ?? ''), reference: Array.isArray(p.reference) ? p.reference.join(' | ') : String(p.reference ?? '') }));
  if (!cfg.tasks.length) {
    const data = recs.map((r) =>
      typeof r.text === 'string'
        ? { text: r.text }
        : Array.isArray(r.messages)
          ? { text: (r.messages as { content?: unknown }[]).map((m) => String(m?.content ?? '')).join('\n') }
          : { input: String(r.prompt ?? ''), target: String(r.completion ?? '') },
    );
    const r = await evaluatePeftModel(model, tok, data, { taskType: 'language-modeling', batchSize: e.batchSize, maxLength: cfg.data.maxLength, progress: false });
    out.push({ task: 'language-modeling', type: 'language-modeling', metric: 'perplexity', value: r.metrics.perplexity ?? NaN, metrics: { perplexity: r.metrics.perplexity ?? NaN }, samples: [], seconds: r.seconds });
    return out;
  }
  for (const t of cfg.tasks) {
    const data = evalExamples(recs, t, source);
    if (t.type === 'classification') {
      const r = await evaluatePeftModel(model, tok, data, { taskType: 'classification', labels: t.labels, maxNewTokens: t.maxNewTokens ?? 4, batchSize: e.batchSize, progress: false });
      out.push({ task: t.name, type: 'classification', metric: 'accuracy', value: r.metrics.accuracy ?? NaN, metrics: { accuracy: r.metrics.accuracy ?? NaN, f1: r.metrics.f1 ?? NaN }, samples: sample(r), seconds: r.seconds });
    } else {
      const r = await evaluatePeftModel(model, tok, data, { taskType: 'generation', maxNewTokens: t.maxNewTokens ?? 24, batchSize: e.batchSize, progress: false });
      const m = r.metrics;
      out.push({
        task: t.name,
        type: 'generation',
        metric: 'rougeL',
        value: m.rouge?.rougeL?.fmeasure ?? NaN,
        metrics: { rougeL: m.rouge?.rougeL?.fmeasure ?? NaN, rouge1: m.rouge?.rouge1?.fmeasure ?? NaN, bleu: m.bleu?.score ?? NaN, chrf: m.chrf?.score ?? NaN, exactMatch: m.exactMatch ?? NaN },
        samples: sample(r),
        seconds: r.seconds,
      });
    }
  }
  return out;
}

export function formatScores(scores: TaskScore[]): string {
  return scores
    .map((s) => `${s.task}: ${s.metric} ${s.metric === 'perplexity' ? s.value.toFixed(2) : (100 * s.value).toFixed(1) + (s.metric === 'accuracy' ? '%' : '')}`)
    .join(', ');
}

/** Everything a run leaves for `peft report`. */
export interface RunRecord {
  version: 1;
  name: string;
  configFile: string;
  config: Record<string, unknown>;
  model: string;
  backend: string;
  method: string;
  peftConfig: Record<string, unknown>;
  trainableParams: number;
  allParams: number;
  data: { train: number; validation: number; test: number; trainExamples: number };
  before?: TaskScore[];
  after?: TaskScore[];
  logHistory: LogEntry[];
  trainMetrics?: Record<string, number>;
  adapterDir?: string;
  startedAt: string;
  finishedAt?: string;
  /** Peak resident memory of the process (bytes), sampled by the CLI. */
  peakRssBytes?: number;
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(value, null, 1) + '\n');
  await rename(tmp, path);
}

export interface TrainResult {
  outputDir: string;
  record: RunRecord;
  adapterDir: string;
}

export interface TrainOptions {
  resume?: boolean;
  log?: (line: string) => void;
  /** Extra callbacks (tests). */
  callbacks?: TrainerCallback[];
}

function trainingMessage(e: unknown): string {
  return (e as Error).message.replace(/^TrainingArguments: field "/, 'field "training.').replace(/^TrainingArguments: unknown field "/, 'unknown field "training.');
}

/** TrainingArguments checked as the Trainer will; errors say `field "training.<name>"`. */
export function checkTrainingArguments(training: Record<string, unknown>, file: string): void {
  try {
    resolveTrainingArguments(training as never);
  } catch (e) {
    throw new CliError(`${file}: ${trainingMessage(e)}`);
  }
}

/** `peft train`: load, score before, train, score after, save the adapter, write run.json (and report.html). */
export async function runTraining(loaded: LoadedConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const { config: cfg, file } = loaded;
  const training = { ...cfg.training } as Record<string, unknown>;
  const outputDir = resolve(typeof training.outputDir === 'string' ? training.outputDir : join('runs', cfg.name));
  training.outputDir = outputDir;
  // the command is the process's entry point: Ctrl-C / SIGTERM write a checkpoint (the Trainer's handleSignals)
  training.handleSignals ??= true;
  checkTrainingArguments(training, file); // before anything is loaded
  const backend = await initBackend();
  log(`backend: ${backend.backend} (${backend.reason})`);
  manualSeed(typeof training.seed === 'number' ? training.seed : 42);
  const { model, tokenizer: tok, dir } = await loadModel(cfg.model, cfg.quantization, file);
  const peftConfig = await buildPeftConfig(cfg.method, file, dir, cfg.model === 'tiny-llama' ? 'tiny-llama' : dir);

  const trainRecs = await readRecords(cfg.data.train, cfg.data.limit.train);
  const valRecs = cfg.data.validation ? await readRecords(cfg.data.validation, cfg.data.limit.validation) : [];
  const testRecs = cfg.data.test ? await readRecords(cfg.data.test, cfg.evaluation.limit ?? cfg.data.limit.test) : [];
  const tail = promptTail(cfg.tasks, tok);
  // chat records ({ messages }) use the model's own chat_template when it has one (else ChatML)
  const templateSource = await readChatTemplate(dir);
  const chat = templateSource ? jinjaChatTemplate(templateSource, { eosToken: tok.eosToken, where: dir }) : undefined;
  const trainSet = tokenize(taskRecords(trainRecs, cfg.tasks, cfg.data.train), tok, cfg.data.maxLength, cfg.data.train, tail, chat);
  const evalSet = valRecs.length ? tokenize(taskRecords(valRecs, cfg.tasks, cfg.data.validation!), tok, cfg.data.maxLength, cfg.data.validation!, tail, chat) : undefined;

  await mkdir(outputDir, { recursive: true });
  const recordPath = join(outputDir, RUN_RECORD);
  const previous: RunRecord | undefined = opts.resume && existsSync(recordPath) ? JSON.parse(await readFile(recordPath, 'utf8')) : undefined;

  let before = previous?.before;
  if (!before && cfg.evaluation.before && testRecs.length) {
    log(`scoring the base model on ${testRecs.length} test records …`);
    before = await scoreTasks(model, tok, testRecs, cfg, cfg.data.test!);
    log(`before: ${formatScores(before)}`);
  }
  const peft = getPeftModel(model, peftConfig);
  const [trainable, all] = peft.getNbTrainableParameters();
  log(peft.printTrainableParameters(() => undefined));

  const record: RunRecord = {
    version: 1,
    name: cfg.name,
    configFile: file,
    config: loaded.raw,
    model: cfg.model === 'tiny-llama' ? 'tiny-llama' : dir,
    backend: backend.backend,
    method: peftConfig.peftType,
    peftConfig: peftConfig.toJSON(),
    trainableParams: trainable,
    allParams: all,
    data: { train: trainRecs.length, validation: valRecs.length, test: testRecs.length, trainExamples: trainSet.length },
    before,
    logHistory: [],
    startedAt: previous?.startedAt ?? new Date().toISOString(),
  };
  await writeJsonAtomic(recordPath, record);

  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 500);
  sampler.unref();
  let trainer: Trainer;
  try {
    trainer = new Trainer({ model: peft, args: training as never, trainDataset: trainSet, evalDataset: evalSet, padTokenId: tok.padTokenId, callbacks: opts.callbacks });
  } catch (e) {
    clearInterval(sampler);
    throw new CliError(`${file}: ${trainingMessage(e)}`);
  }
  let out;
  try {
    out = await trainer.train({ resumeFromCheckpoint: opts.resume ? true : undefined });
  } catch (e) {
    // SIGINT / SIGTERM: the Trainer wrote a checkpoint; say where and how to go on, and exit 130 / 143
    if (e instanceof TrainingInterruptedError) {
      const where = e.checkpoint ? `checkpoint written in ${e.checkpoint}` : `no step ran, nothing written in ${outputDir}`;
      throw new CliError(`interrupted (${e.reason}) at step ${e.globalStep}; ${where}; continue with: peft train ${file} --resume`, e.exitCode);
    }
    throw e;
  } finally {
    clearInterval(sampler);
  }
  peft.eval();
  const adapterDir = join(outputDir, ADAPTER_SUBDIR);
  await peft.savePretrained(adapterDir);
  log(`adapter saved to ${adapterDir}`);
  let after: TaskScore[] | undefined;
  if (cfg.evaluation.after && testRecs.length) {
    log(`scoring the adapter on ${testRecs.length} test records …`);
    after = await scoreTasks(peft, tok, testRecs, cfg, cfg.data.test!);
    log(`after:  ${formatScores(after)}`);
  }
  Object.assign(record, {
    after,
    logHistory: trainer.state.logHistory,
    trainMetrics: out.metrics,
    adapterDir,
    finishedAt: new Date().toISOString(),
    peakRssBytes: Math.max(peakRss, process.memoryUsage().rss),
  });
  await writeJsonAtomic(recordPath, record);
  return { outputDir, record, adapterDir };
}

export async function readRunRecord(runDir: string): Promise<RunRecord> {
  const path = join(runDir, RUN_RECORD);
  if (!existsSync(path)) throw new CliError(`${path}: not found (RUN_DIR is the outputDir of a \`peft train\` run)`);
  let rec: RunRecord;
  try {
    rec = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new CliError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (!rec || rec.version !== 1 || !Array.isArray(rec.logHistory)) throw new CliError(`${path}: field "version" / "logHistory": not a peft run record`);
  return rec;
}


