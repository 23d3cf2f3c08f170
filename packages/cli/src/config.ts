// `peft train`'s run config: YAML or JSON with the library's camelCase names, `--set a.b=value`
// overrides, validated with errors that name the file and the field.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'peftjs';

/** A failure the CLI reports as one line and a non-zero exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The package's data folder (works from src/ and dist/ alike). */
export const DATA_DIR = fileURLToPath(new URL('../data/', import.meta.url)).replace(/\/$/, '');
/** The bundled default task data: a fixed split of the Spam Assassin corpus (see data/README.md). */
export const SPAM_ASSASSIN = {
  train: `${DATA_DIR}/spam-assassin/train.jsonl`,
  validation: `${DATA_DIR}/spam-assassin/validation.jsonl`,
  test: `${DATA_DIR}/spam-assassin/test.jsonl`,
};

/** The task a config on the bundled data gets when it names none: spam or ham. */
export const DEFAULT_TASK = {
  name: 'spam',
  type: 'classification' as const,
  prompt: 'Subject: {subject}\nEmail: {body}\nSpam or ham:',
  completion: ' {label}',
  labels: ['spam', 'ham'],
  maxNewTokens: 3,
  repeat: 1,
};

const taskSchema = z
  .object({
    /** Names the task in metrics and the report. */
    name: z.string().min(1),
    /** classification: the completion is one of `labels` (accuracy); generation: free text (ROUGE, BLEU, chrF, exact match). */
    type: z.enum(['classification', 'generation']),
    /** The prompt, with `{field}` taken from each record. */
    prompt: z.string(),
    /** What the model learns to write after the prompt, with `{field}` from the record. */
    completion: z.string(),
    labels: z.array(z.string()).optional(),
    /** Training examples made from each record (oversampling a task whose completion is short, e.g. a label, in a mixture). Default 1. */
    repeat: z.number().int().min(1).max(100).default(1),
    /** New tokens generated per example when evaluating (default 4 for classification, 24 for generation). */
    maxNewTokens: z.number().int().positive().optional(),
  })
  .strict();

const splitLimits = z.object({ train: z.number().int().positive().optional(), validation: z.number().int().positive().optional(), test: z.number().int().positive().optional() }).strict();

export const runConfigSchema = z
  .object({
    /** Names the run (the default outputDir is runs/<name>). */
    name: z.string().min(1).default('run'),
    /** 'tiny-llama' (the bundled model) or an HF model folder (config.json + model.safetensors + tokenizer.json). */
    model: z.string().min(1).default('tiny-llama'),
    /** The method: `peftType` (LORA, IA3, PROMPT_TUNING, PREFIX_TUNING, P_TUNING, ADALORA …) and its config's fields. */
    method: z.object({ peftType: z.string().min(1) }).passthrough(),
    /**
     * Loads the base in 4 bits for QLoRA: transformers' BitsAndBytesConfig fields, camelCase (loadIn4bit,
     * bnb4bitQuantType, bnb4bitUseDoubleQuant, …), then HF's prepare_model_for_kbit_training
     * (`gradientCheckpointing`, default true as HF's use_gradient_checkpointing).
     */
    quantization: z.object({ gradientCheckpointing: z.boolean().default(true) }).passthrough().optional(),
    data: z
      .object({
        /** JSONL/JSON/CSV files, or the bundled 'spam-assassin' split (the default). */
        train: z.string().default(SPAM_ASSASSIN.train),
        validation: z.string().nullable().default(SPAM_ASSASSIN.validation),
        test: z.string().nullable().default(SPAM_ASSASSIN.test),
        /** Tokens per training example (prompt + completion), truncated beyond. */
        maxLength: z.number().int().positive().default(128),
        /** Use only the first N records of a split. */
        limit: splitLimits.default({}),
      })
      .strict()
      .default({ train: SPAM_ASSASSIN.train, validation: SPAM_ASSASSIN.validation, test: SPAM_ASSASSIN.test, maxLength: 128, limit: {} }),
    /** What to learn from each record; several tasks train one adapter on their mixture. None: records are used as they are (text / prompt+completion / messages). */
    tasks: z.array(taskSchema).default([]),
    /** TrainingArguments (camelCase); outputDir defaults to runs/<name>. */
    training: z.record(z.string(), z.unknown()).default({}),
    evaluation: z
      .object({
        /** Score the base model on the test split before training (default true). */
        before: z.boolean().default(true),
        /** Score the adapter after training (default true). */
        after: z.boolean().default(true),
        /** Test examples per task (default: all). */
        limit: z.number().int().positive().optional(),
        batchSize: z.number().int().positive().default(16),
        /** Sample predictions kept for the report, per task. */
        samples: z.number().int().min(0).default(8),
      })
      .strict()
      .default({ before: true, after: true, batchSize: 16, samples: 8 }),
    /** Write report.html at the end of training (default true). */
    report: z.boolean().default(true),
  })
  .strict();

export type RunConfig = z.output<typeof runConfigSchema>;
export type TaskSpec = z.output<typeof taskSchema>;

function describePath(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i ? `.${String(p)}` : String(p))).join('');
}

/** Parses `text` (YAML or JSON) from `file`; a syntax error names the file, line and column. */
export function parseConfigText(text: string, file: string): unknown {
  try {
    if (/\.json$/i.test(file)) return JSON.parse(text);
    return parseYaml(text, { prettyErrors: true });
  } catch (e) {
    if (e instanceof YAMLParseError) {
      const pos = e.linePos?.[0];
      throw new CliError(`${file}${pos ? `:${pos.line}:${pos.col}` : ''}: not valid YAML (${e.message.split('\n')[0]})`);
    }
    throw new CliError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** Applies `a.b.c=value` overrides (values parsed as YAML scalars: numbers, booleans, null, [lists]). */
export function applySets(obj: Record<string, unknown>, sets: string[]): Record<string, unknown> {
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new CliError(`--set "${s}": expected key=value (e.g. --set training.learningRate=1e-3)`);
    const keys = s.slice(0, eq).split('.');
    if (keys.some((k) => !k || k === '__proto__' || k === 'constructor' || k === 'prototype')) throw new CliError(`--set "${s}": "${s.slice(0, eq)}" is not a field path`);
    let value: unknown;
    try {
      value = parseYaml(s.slice(eq + 1));
    } catch {
      value = s.slice(eq + 1);
    }
    let cur: Record<string, unknown> = obj;
    for (const k of keys.slice(0, -1)) {
      const next = cur[k];
      if (next === undefined || next === null) cur = cur[k] = {};
      else if (typeof next === 'object' && !Array.isArray(next)) cur = next as Record<string, unknown>;
      else throw new CliError(`--set "${s}": field "${keys.slice(0, keys.indexOf(k) + 1).join('.')}" is not an object`);
    }
    cur[keys[keys.length - 1]] = value;
  }
  return obj;
}

export interface LoadedConfig {
  config: RunConfig;
  /** The config file (absolute). */
  file: string;
  /** The object as read, after --set (what the report shows). */
  raw: Record<string, unknown>;
}

/** Reads, overrides and validates a run config; relative data paths are relative to the config file, outputDir to the working directory. */
export async function loadRunConfig(file: string, sets: string[] = []): Promise<LoadedConfig> {
  const abs = resolve(file);
  if (!existsSync(abs)) throw new CliError(`${file}: config file not found`);
  const text = await readFile(abs, 'utf8');
  const parsed = parseConfigText(text, file);
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new CliError(`${file}: expected a mapping of fields (model, method, data, tasks, training, evaluation)`);
  const raw = applySets(parsed as Record<string, unknown>, sets);
  return { config: validateRunConfig(raw, file, dirname(abs)), file: abs, raw };
}

/** Validates a config object; `baseDir` resolves relative data paths and model folders. */
export function validateRunConfig(raw: unknown, file: string, baseDir = process.cwd()): RunConfig {
  const r = runConfigSchema.safeParse(raw);
  if (!r.success) {
    const msgs = r.error.issues.slice(0, 6).map((i) => {
      if (i.code === 'unrecognized_keys') {
        const at = describePath(i.path);
        return `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${at ? `${at}.` : ''}${k}"`).join(', ')}`;
      }
      return `field "${describePath(i.path)}": ${i.message}`;
    });
    throw new CliError(`${file}: ${msgs.join('; ')}`);
  }
  const c = r.data;
  const path = (p: string) => (p === 'spam-assassin' ? p : isAbsolute(p) ? p : resolve(baseDir, p));
  if (c.model !== 'tiny-llama') {
    const m = path(c.model);
    if (!existsSync(m)) throw new CliError(`${file}: field "model": folder not found: ${m}`);
    c.model = m;
  }
  const split = (p: string | null, which: keyof typeof SPAM_ASSASSIN): string | null => {
    if (p === null) return null;
    if (p === 'spam-assassin') return SPAM_ASSASSIN[which];
    const abs = path(p);
    if (!existsSync(abs)) throw new CliError(`${file}: field "data.${which}": file not found: ${abs}`);
    return abs;
  };
  c.data.train = split(c.data.train, 'train')!;
  c.data.validation = split(c.data.validation, 'validation');
  c.data.test = split(c.data.test, 'test');
  c.tasks.forEach((t, i) => {
    if (t.type === 'classification' && !(t.labels && t.labels.length >= 2)) throw new CliError(`${file}: field "tasks[${i}].labels": a classification task needs at least two labels`);
  });
  const bundled = Object.values(SPAM_ASSASSIN);
  if (!c.tasks.length && bundled.includes(c.data.train)) c.tasks = [DEFAULT_TASK];
  if (new Set(c.tasks.map((t) => t.name)).size !== c.tasks.length) throw new CliError(`${file}: field "tasks": task names must be unique`);
  return c;
}

/** `{field}` → the record's field; a missing one names the file, record and field. */
export function fillTemplate(template: string, rec: Record<string, unknown>, where: string): string {
  return template.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, k: string) => {
    const v = rec[k];
    if (v === undefined || v === null) throw new CliError(`${where}: field "${k}" is missing (the template uses {${k}}; fields: ${Object.keys(rec).join(', ')})`);
    return String(v);
  });
}
