import * as z from './schema';
import { PeftError } from './errors';
import { MAX_JSON_DEPTH, checkJsonDepth } from './io/fs';

/** float32's largest finite value: a config number beyond it can only become ±Inf (then NaN) in the model. */
const FLOAT32_MAX = 3.4028234663852886e38;

/** A value from a config briefly, for a message (never whole: it may be huge or deep). */
function brief(v: unknown): string {
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return v === undefined ? 'nothing' : `an ${typeof v}`;
}

/** Refuses numbers float32 cannot hold (lora_alpha 1e308 …), naming the field; no recursion. */
function checkNumbers(data: Record<string, unknown>, where: string, snake: boolean): void {
  const stack: [unknown, string][] = Object.entries(data).map(([k, v]) => [v, snake ? camelToSnake(k) : k]);
  while (stack.length) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'number') {
      if (!Number.isFinite(v) || Math.abs(v) > FLOAT32_MAX) {
        throw new PeftError('INVALID_CONFIG', `${where}: field "${path}" = ${v} is beyond float32's range; the model could only compute Inf or NaN with it`);
      }
    } else if (v && typeof v === 'object') {
      for (const [k, c] of Object.entries(v)) stack.push([c, `${path}.${k}`]);
    }
  }
}
/** HF PEFT's task types. */
export const TaskType = {
  CAUSAL_LM: 'CAUSAL_LM',
  SEQ_CLS: 'SEQ_CLS',
  SEQ_2_SEQ_LM: 'SEQ_2_SEQ_LM',
  TOKEN_CLS: 'TOKEN_CLS',
  QUESTION_ANS: 'QUESTION_ANS',
  FEATURE_EXTRACTION: 'FEATURE_EXTRACTION',
} as const;
export type TaskType = (typeof TaskType)[keyof typeof TaskType];

export const camelToSnake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
export const snakeToCamel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Fields every PEFT config has (HF's PeftConfigMixin + PeftConfig). */
export const basePeftConfigShape = {
  taskType: z.enum(Object.values(TaskType) as [TaskType, ...TaskType[]]).nullable().default(null),
  baseModelNameOrPath: z.string().nullable().default(null),
  revision: z.string().nullable().default(null),
  inferenceMode: z.boolean().default(false),
  autoMapping: z.unknown().nullable().default(null),
  /** The HF PEFT file-format version this config was written for. */
  peftVersion: z.string().default('0.21.0'),
};

/** Target spec shared by injection methods: a regex string (full match), a list of names, or 'all-linear'. */
export const targetModulesSchema = z.union([z.string(), z.array(z.string())]).nullable();

export type ConfigShape = z.ZodRawShape;

/** Static side of a config class: what the registry needs to build one from HF's JSON. */
export interface PeftConfigClass<C extends PeftConfig = PeftConfig> {
  new (input?: any): C;
  readonly peftType: string;
  /** camelCase fields with their schemas and defaults. */
  readonly shape: ConfigShape;
  /**
   * HF keys peftjs accepts only at their default value (features it does not implement); they are
   * written back on save so the file has every key HF writes.
   */
  readonly hfOnlyDefaults: Record<string, unknown>;
}

function describeIssue(issue: z.ZodIssue, snake: boolean): string {
  const name = (k: PropertyKey) => (snake ? camelToSnake(String(k)) : String(k));
  if (issue.code === 'unrecognized_keys') {
    return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${name(k)}"`).join(', ')}`;
  }
  const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : name(p))).join('.');
  return `field "${path}": ${issue.message}`;
}

function deepEqual(a: unknown, b: unknown): boolean {
  // values are depth-checked before they get here, so JSON.stringify cannot overflow the stack
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Base of every method's config. Fields are camelCase in TypeScript and snake_case on disk; both
 * directions are validated against the class's zod shape, and unknown fields are rejected by name.
 */
export abstract class PeftConfig {
  declare taskType: TaskType | null;
  declare baseModelNameOrPath: string | null;
  declare revision: string | null;
  declare inferenceMode: boolean;
  declare autoMapping: unknown;
  declare peftVersion: string;

  get peftType(): string {
    return (this.constructor as PeftConfigClass).peftType;
  }

  /** Validates `input` (camelCase) against the class's shape and assigns the result. */
  protected init(input: unknown, where = this.constructor.name): void {
    const cls = this.constructor as PeftConfigClass;
    const parsed = parseFields(cls.shape, input ?? {}, where, false);
    Object.assign(this, parsed);
    this.validate();
  }

  /** Cross-field checks; throw PeftError('INVALID_CONFIG') naming the field. */
  protected validate(): void {}

  /** HF's adapter_config.json object (snake_case keys, every key HF writes). */
  toJSON(): Record<string, unknown> {
    const cls = this.constructor as PeftConfigClass;
    const out: Record<string, unknown> = { ...cls.hfOnlyDefaults };
    for (const key of Object.keys(cls.shape)) {
      const v = (this as unknown as Record<string, unknown>)[key];
      out[camelToSnake(key)] = v === undefined ? null : v;
    }
    out.peft_type = cls.peftType;
    return out;
  }

  /** A copy with some fields changed, validated again. */
  with(changes: Record<string, unknown>): this {
    const cls = this.constructor as PeftConfigClass;
    const cur: Record<string, unknown> = {};
    for (const key of Object.keys(cls.shape)) cur[key] = (this as unknown as Record<string, unknown>)[key];
    return new (cls as unknown as new (i: unknown) => this)({ ...cur, ...changes });
  }
}

/** Parses camelCase (or, with `snake`, snake_case) input against a shape; errors name the field. */
export function parseFields(shape: ConfigShape, input: unknown, where: string, snake: boolean): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new PeftError('INVALID_CONFIG', `${where}: expected an object of config fields`);
  }
  try {
    checkJsonDepth(input, where, MAX_JSON_DEPTH);
  } catch (e) {
    throw new PeftError('INVALID_CONFIG', (e as Error).message);
  }
  const result = z.object(shape).strict().safeParse(input);
  if (!result.success) {
    throw new PeftError('INVALID_CONFIG', `${where}: ${result.error.issues.slice(0, 8).map((i) => describeIssue(i, snake)).join('; ')}`);
  }
  checkNumbers(result.data as Record<string, unknown>, where, snake);
  return result.data as Record<string, unknown>;
}

/**
 * Builds a config from HF's adapter_config.json: snake_case keys, HF-only keys checked to be at their
 * defaults, unknown keys rejected by name.
 */
export function configFromHfJson<C extends PeftConfig>(cls: PeftConfigClass<C>, json: Record<string, unknown>, source: string): C {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PeftError('INVALID_CONFIG', `${source}: expected a JSON object`);
  try {
    checkJsonDepth(json, source, MAX_JSON_DEPTH);
  } catch (e) {
    throw new PeftError('INVALID_CONFIG', (e as Error).message);
  }
  const camel: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [key, value] of Object.entries(json)) {
    if (key === 'peft_type') {
      if (value !== cls.peftType) {
        throw new PeftError('INVALID_CONFIG', `${source}: peft_type ${brief(value)} where ${cls.peftType} was expected`);
      }
      continue;
    }
    if (key in cls.hfOnlyDefaults) {
      const def = cls.hfOnlyDefaults[key];
      const isEmpty = value === null || deepEqual(value, {}) || deepEqual(value, []);
      if (!deepEqual(value, def) && !(isEmpty && (def === null || deepEqual(def, {}) || deepEqual(def, [])))) {
        throw new PeftError(
          'UNSUPPORTED',
          `${source}: field "${key}" = ${brief(value)} is not supported by peftjs (only ${JSON.stringify(def)})`,
        );
      }
      continue;
    }
    const ck = snakeToCamel(key);
    if (!(ck in cls.shape)) {
      unknown.push(key);
      continue;
    }
    camel[ck] = value;
  }
  if (unknown.length) {
    const names = unknown.slice(0, 8).map((k) => brief(k)).join(', ') + (unknown.length > 8 ? ` and ${unknown.length - 8} more` : '');
    throw new PeftError('INVALID_CONFIG', `${source}: unknown field${unknown.length > 1 ? 's' : ''} ${names} for ${cls.peftType}`);
  }
  // validate with snake_case names in messages, then build
  parseFields(cls.shape, camel, source, true);
  return new cls(camel);
}
