/**
 * The schema builder configs are written with, exported by core as `z`: zod's chaining API
 * (`z.number().int().positive().nullable().default(null)`) over zod's mini build. Classic zod is not
 * tree-shakable — any use brings 455 kB minified into a browser bundle; zod/mini's functions cost only
 * what is used (the configs here: about 40 kB). Each method returns a new zod/mini schema with these
 * methods attached, so a schema is a real zod schema (`safeParse`, `z.input`, `z.output`) and the issues
 * and messages are zod's own (English locale), which the config errors quote beside the field's name.
 *
 * What configs use is here: number, string, boolean, unknown, literal, enum, union, array, record, tuple,
 * object (strict, passthrough) and default, nullable, optional, int, positive, nonnegative, gt, gte, lt,
 * lte, min, max, describe.
 */
import * as zm from 'zod/mini';
import en from 'zod/v4/locales/en.js';

// zod/mini has no messages until a locale is set; set English when the first schema is built (not as an
// import side effect, which a bundler may drop)
let localeSet = false;

type Any = zm.ZodMiniType;

export interface Chain<T extends Any> {
  optional(): Schema<zm.ZodMiniOptional<T>>;
  nullable(): Schema<zm.ZodMiniNullable<T>>;
  default(value: zm.core.util.NoUndefined<zm.output<T>>): Schema<zm.ZodMiniDefault<T>>;
  /** An integer (numbers). */
  int(): Schema<T>;
  /** > 0 (numbers). */
  positive(): Schema<T>;
  /** ≥ 0 (numbers). */
  nonnegative(): Schema<T>;
  gt(n: number): Schema<T>;
  gte(n: number): Schema<T>;
  lt(n: number): Schema<T>;
  lte(n: number): Schema<T>;
  /** ≥ n for a number, at least n long for a string or an array, as zod's. */
  min(n: number): Schema<T>;
  /** ≤ n for a number, at most n long for a string or an array, as zod's. */
  max(n: number): Schema<T>;
  describe(description: string): Schema<T>;
}

/** A zod/mini schema with zod's chaining methods. */
export type Schema<T extends Any> = T & Chain<T>;

export interface ObjectChain<S extends zm.core.$ZodLooseShape> {
  /** Unknown keys are an issue (`unrecognized_keys`). */
  strict(): Schema<zm.ZodMiniObject<S, zm.core.$strict>> & ObjectChain<S>;
  /** Unknown keys are kept. */
  passthrough(): Schema<zm.ZodMiniObject<S, zm.core.$loose>> & ObjectChain<S>;
}

const sized = (s: Any) => ['string', 'array'].includes(s._zod.def.type);

function chain<T extends Any>(s: T): Schema<T> {
  if (!localeSet) {
    zm.config(en());
    localeSet = true;
  }
  // the checks are numbers' and lengths' (as zod's methods of those types); typed loosely here
  const check = (c: unknown) => chain(s.check(c as zm.core.$ZodCheck<zm.output<T>>));
  const methods: Chain<T> = {
    optional: () => chain(zm.optional(s)),
    nullable: () => chain(zm.nullable(s)),
    default: (v) => chain(zm._default(s, v)),
    int: () => check(zm.int()),
    positive: () => check(zm.positive()),
    nonnegative: () => check(zm.nonnegative()),
    gt: (n) => check(zm.gt(n)),
    gte: (n) => check(zm.gte(n)),
    lt: (n) => check(zm.lt(n)),
    lte: (n) => check(zm.lte(n)),
    min: (n) => check(sized(s) ? zm.minLength(n) : zm.gte(n)),
    max: (n) => check(sized(s) ? zm.maxLength(n) : zm.lte(n)),
    describe: (d) => {
      const c = s.clone();
      zm.globalRegistry.add(c, { description: d });
      return chain(c);
    },
  };
  return Object.assign(s, methods);
}

function objectChain<T extends Any, S extends zm.core.$ZodLooseShape>(s: T, shape: S): Schema<T> & ObjectChain<S> {
  const methods: ObjectChain<S> = {
    strict: () => objectChain(zm.strictObject(shape), shape),
    passthrough: () => objectChain(zm.looseObject(shape), shape),
  };
  return Object.assign(chain(s), methods);
}

export const number = () => chain(zm.number());
export const string = () => chain(zm.string());
export const boolean = () => chain(zm.boolean());
export const unknown = () => chain(zm.unknown());
export const literal = <const V extends zm.core.util.Literal>(value: V) => chain(zm.literal(value));
function _enum<const V extends readonly [string, ...string[]]>(values: V) {
  return chain(zm.enum(values));
}
export { _enum as enum };
export const union = <const O extends readonly [Any, ...Any[]]>(options: O) => chain(zm.union(options));
export const array = <E extends Any>(element: E) => chain(zm.array(element));
export const record = <K extends zm.core.$ZodRecordKey, V extends Any>(key: K, value: V) => chain(zm.record(key, value));
export const tuple = <const I extends readonly [Any, ...Any[]]>(items: I) => chain(zm.tuple(items));
/** Unknown keys are dropped (zod's default); `.strict()` refuses them, `.passthrough()` keeps them. */
export const object = <S extends zm.core.$ZodLooseShape>(shape: S) => objectChain(zm.object(shape), shape);

export type input<T> = zm.input<T>;
export type output<T> = zm.output<T>;
// `infer` is a keyword in type positions: declared under another name, exported as zod's (a bundled .d.ts
// that wrote `type infer<T> = …` would not parse)
type Infer<T> = zm.output<T>;
export type { Infer as infer };
export type ZodType = Any;
export type ZodRawShape = zm.core.$ZodLooseShape;
export type ZodObject<S extends ZodRawShape = ZodRawShape> = zm.ZodMiniObject<S>;
export type ZodIssue = zm.core.$ZodIssue;
