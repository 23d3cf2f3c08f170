/**
 * AdapterHub's composition blocks (adapters 1.x `composition.py`) as typed values, the nesting rules that
 * validate them, and `composeLayer`: the per-layer recursion every composable tuner layer runs (AdapterHub's
 * ComposableAdapterLayerBase). A method's layer supplies only what its state is and how one adapter acts on
 * it (`ComposeOps`); the block semantics live here once.
 *
 * - `Stack(a, b)`: in each layer the input passes through a, a's output through b.
 * - `Parallel(a, b)`: the batch is replicated (PeftModel does it before the first layer, as AdapterHub's base
 *   model does), each copy runs its own branch; the output batch is k × B, branch i in rows i·B … (i+1)·B − 1.
 * - `Average(a, b, { weights })`: the weighted mean Σ wᵢ·outᵢ of the branches' outputs in each layer (weights
 *   normalised to sum 1 unless `normalizeWeights: false`).
 * - `BatchSplit(a, b, { batchSizes })`: rows 0 … n₀−1 go through a, the next n₁ through b, …
 * - `Split(a, b, { splits })`: token positions 0 … n₀−1 go through a, the next n₁ through b, … (bottleneck adapters).
 * - `Fuse(a, b, c)`: AdapterFusion (Pfeiffer et al., 2021), an attention over the adapters' outputs; only
 *   layers with a fusion layer for exactly these adapters (bottleneck adapters) support it.
 */
import { PeftError } from './errors';

export type CompositionType = 'Stack' | 'Parallel' | 'Average' | 'BatchSplit' | 'Split' | 'Fuse';
export const COMPOSITION_TYPES: readonly CompositionType[] = ['Stack', 'Parallel', 'Average', 'BatchSplit', 'Split', 'Fuse'];

const BLOCK = Symbol.for('peftjs.compositionBlock');

/** The path part under which a tuner layer holds its fusion layers (AdapterHub's `adapter_fusion_layer.<a,b,c>`). */
export const FUSION_MODULE = 'adapter_fusion_layer';

/** A child of a block: an adapter name or a nested block. */
export type AdapterSetup = string | CompositionBlock;

interface BlockBase<T extends CompositionType> {
  readonly [BLOCK]: true;
  readonly type: T;
  readonly children: readonly AdapterSetup[];
}
export type StackBlock = BlockBase<'Stack'>;
export type ParallelBlock = BlockBase<'Parallel'>;
export type FuseBlock = BlockBase<'Fuse'> & {
  /** AdapterHub's fusion name: the fused adapters (a Stack child: its last adapter) joined by commas. */
  readonly name: string;
};
export type AverageBlock = BlockBase<'Average'> & {
  /** One weight per child, as used (normalised unless normalizeWeights was false). */
  readonly weights: readonly number[];
};
export type BatchSplitBlock = BlockBase<'BatchSplit'> & {
  /** Rows of the batch for each child, in order. */
  readonly batchSizes: readonly number[];
};
export type SplitBlock = BlockBase<'Split'> & {
  /** Token positions for each child, in order. */
  readonly splits: readonly number[];
};
export type CompositionBlock = StackBlock | ParallelBlock | FuseBlock | AverageBlock | BatchSplitBlock | SplitBlock;

export function isCompositionBlock(v: unknown): v is CompositionBlock {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[BLOCK] === true;
}

/** AdapterHub's repr: `Stack[a, Fuse[b, c]]`. */
export function compositionToString(setup: AdapterSetup): string {
  return typeof setup === 'string' ? setup : `${setup.type}[${setup.children.map(compositionToString).join(', ')}]`;
}

function checkChildren(type: CompositionType, children: unknown[]): AdapterSetup[] {
  if (!children.length) throw new PeftError('INVALID_ARGUMENT', `${type}: a composition block needs at least one child (adapter names or blocks)`);
  children.forEach((c, i) => {
    if (typeof c === 'string' ? c.length === 0 : !isCompositionBlock(c)) {
      throw new PeftError('INVALID_ARGUMENT', `${type}: child ${i} must be an adapter name or a composition block (Stack, Parallel, Average, BatchSplit, Fuse), got ${c === null ? 'null' : Array.isArray(c) ? 'an array' : typeof c === 'string' ? 'an empty string' : typeof c}`);
    }
  });
  return children as AdapterSetup[];
}

function block<T extends CompositionType, X extends object>(type: T, children: unknown[], extra: X): BlockBase<T> & X {
  const kids = Object.freeze(checkChildren(type, children));
  return Object.freeze({ [BLOCK]: true as const, type, children: kids, ...extra });
}

function lastAdapter(setup: AdapterSetup): string {
  return typeof setup === 'string' ? setup : lastAdapter(setup.children[setup.children.length - 1]);
}

/** Stack: the adapters one after the other in each layer (MAD-X's language + task adapters). */
export function Stack(...children: AdapterSetup[]): StackBlock {
  return block('Stack', children, {});
}

/** Parallel: the batch replicated once per child, each copy through its own adapter; k × B output rows. */
export function Parallel(...children: AdapterSetup[]): ParallelBlock {
  return block('Parallel', children, {});
}

/** Fuse: AdapterFusion over the children's outputs (add the fusion layer first: `addAdapterFusion`). */
export function Fuse(...children: AdapterSetup[]): FuseBlock {
  checkChildren('Fuse', children);
  return block('Fuse', children, { name: children.map(lastAdapter).join(',') });
}

export interface AverageOptions {
  /** One weight per child (default: equal). */
  weights?: number[];
  /** Divide the weights by their sum (default true, as AdapterHub). */
  normalizeWeights?: boolean;
}

type WithOptions<O> = [...AdapterSetup[], O] | AdapterSetup[];

function splitOptions<O extends object>(args: unknown[]): [unknown[], O | undefined] {
  const last = args[args.length - 1];
  if (typeof last === 'object' && last !== null && !isCompositionBlock(last) && !Array.isArray(last)) return [args.slice(0, -1), last as O];
  return [args, undefined];
}

/** Average: the weighted mean of the children's outputs in each layer. `Average('a', 'b', { weights: [0.3, 0.7] })`. */
export function Average(...args: WithOptions<AverageOptions>): AverageBlock {
  const [children, opts = {}] = splitOptions<AverageOptions>(args);
  checkChildren('Average', children);
  const n = children.length;
  let weights = opts.weights ?? Array(n).fill(1 / n);
  if (!Array.isArray(weights) || weights.length !== n || !weights.every((w) => typeof w === 'number' && Number.isFinite(w))) {
    throw new PeftError('INVALID_ARGUMENT', `Average: weights must be ${n} finite numbers, one per child; got ${JSON.stringify(opts.weights)}`);
  }
  if (opts.normalizeWeights ?? true) {
    const sum = weights.reduce((a, b) => a + b, 0);
    if (sum === 0) throw new PeftError('INVALID_ARGUMENT', `Average: weights ${JSON.stringify(weights)} sum to 0 and cannot be normalised (pass normalizeWeights: false to use them as they are)`);
    weights = weights.map((w) => w / sum);
  }
  return block('Average', children, { weights: Object.freeze([...weights]) });
}

export interface BatchSplitOptions {
  /** Rows for each child (one number: the same for every child); they must sum to the batch size. */
  batchSizes: number[] | number;
}

/** BatchSplit: row slices of the batch through different adapters. `BatchSplit('a', 'b', { batchSizes: [2, 3] })`. */
export function BatchSplit(...args: [...AdapterSetup[], BatchSplitOptions]): BatchSplitBlock {
  const [children, opts] = splitOptions<BatchSplitOptions>(args);
  checkChildren('BatchSplit', children);
  if (!opts || opts.batchSizes === undefined) throw new PeftError('INVALID_ARGUMENT', 'BatchSplit: batchSizes is required (the rows of the batch for each child)');
  const sizes = typeof opts.batchSizes === 'number' ? Array(children.length).fill(opts.batchSizes) : opts.batchSizes;
  if (!Array.isArray(sizes) || sizes.length !== children.length || !sizes.every((s) => Number.isInteger(s) && s >= 0)) {
    throw new PeftError('INVALID_ARGUMENT', `BatchSplit: batchSizes must be ${children.length} non-negative integers, one per child (or one for all); got ${JSON.stringify(opts.batchSizes)}`);
  }
  return block('BatchSplit', children, { batchSizes: Object.freeze([...sizes]) });
}

export interface SplitOptions {
  /** Token positions for each child (one number: the same for every child); they must sum to the sequence length. */
  splits: number[] | number;
}

/** Split: consecutive token positions through different adapters (AdapterHub's Split). `Split('a', 'b', { splits: [64, 64] })`. */
export function Split(...args: [...AdapterSetup[], SplitOptions]): SplitBlock {
  const [children, opts] = splitOptions<SplitOptions>(args);
  checkChildren('Split', children);
  if (!opts || opts.splits === undefined) throw new PeftError('INVALID_ARGUMENT', 'Split: splits is required (the token positions for each child)');
  const sizes = typeof opts.splits === 'number' ? Array(children.length).fill(opts.splits) : opts.splits;
  if (!Array.isArray(sizes) || sizes.length !== children.length || !sizes.every((s) => Number.isInteger(s) && s >= 0)) {
    throw new PeftError('INVALID_ARGUMENT', `Split: splits must be ${children.length} non-negative integers, one per child (or one for all); got ${JSON.stringify(opts.splits)}`);
  }
  return block('Split', children, { splits: Object.freeze([...sizes]) });
}

/** AdapterHub's ALLOWED_NESTINGS: which children each block may hold. */
export const ALLOWED_NESTINGS: Readonly<Record<CompositionType, readonly ('adapter' | CompositionType)[]>> = {
  Stack: ['adapter', 'Fuse', 'Split', 'Parallel', 'BatchSplit', 'Average'],
  Fuse: ['adapter', 'Stack'],
  Split: ['adapter', 'Split', 'Stack', 'BatchSplit', 'Average'],
  Parallel: ['adapter', 'Stack', 'BatchSplit', 'Average'],
  BatchSplit: ['adapter', 'Stack', 'Split', 'BatchSplit', 'Average'],
  Average: ['adapter', 'Stack', 'Split', 'BatchSplit'],
};

/**
 * AdapterHub's validate_composition: every child is allowed in its parent (ALLOWED_NESTINGS), and below level 1
 * only Stack blocks and adapter names appear (the setup is at most three levels deep). Also: Fuse fuses distinct
 * adapters, and every Parallel of a setup has the same number of branches (the batch is replicated once).
 */
export function validateComposition(setup: AdapterSetup, level = 0, root: AdapterSetup = setup): void {
  if (typeof setup === 'string') return;
  if (level > 1 && setup.type !== 'Stack') {
    throw new PeftError('INVALID_ARGUMENT', `adapter setup ${compositionToString(root)} is too deep: cannot have ${compositionToString(setup)} at level ${level} (below level 1 only Stack blocks and adapter names may appear)`);
  }
  for (const child of setup.children) {
    const kind = typeof child === 'string' ? 'adapter' : child.type;
    if (!ALLOWED_NESTINGS[setup.type].includes(kind)) {
      const allowed = ALLOWED_NESTINGS[setup.type].map((k) => (k === 'adapter' ? 'adapter names' : k)).join(', ');
      throw new PeftError('INVALID_ARGUMENT', `adapter setup ${compositionToString(root)} is invalid: cannot nest ${compositionToString(child)} in ${compositionToString(setup)} (${setup.type} may hold ${allowed})`);
    }
    validateComposition(child, level + 1, root);
  }
  if (setup.type === 'Fuse') {
    const names = setup.children.map(lastAdapter);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) throw new PeftError('INVALID_ARGUMENT', `${compositionToString(setup)}: adapter "${dup}" is fused twice`);
  }
  if (level === 0) {
    const widths = new Set(blocksOf(setup).filter((b) => b.type === 'Parallel').map((b) => b.children.length));
    if (widths.size > 1) throw new PeftError('INVALID_ARGUMENT', `adapter setup ${compositionToString(root)}: its Parallel blocks have different numbers of branches (${[...widths].join(', ')}); the batch is replicated once, so they must agree`);
  }
}

/**
 * AdapterHub's parse_composition: a name becomes `Stack(name)`, a list `Stack(...)` (a list inside it: `Fuse(...)`,
 * adapter-transformers 1.x's nested-list form), a block is validated.
 */
export function parseComposition(setup: unknown, level = 0): CompositionBlock {
  const parsed = parseChild(setup, level);
  const top = typeof parsed === 'string' ? Stack(parsed) : parsed;
  if (level === 0) validateComposition(top);
  return top;
}

function parseChild(setup: unknown, level: number): AdapterSetup {
  if (typeof setup === 'string' || isCompositionBlock(setup)) return setup;
  if (Array.isArray(setup)) {
    const kids = setup.map((c) => parseChild(c, level + 1));
    return level === 1 ? Fuse(...kids) : Stack(...kids);
  }
  throw new PeftError('INVALID_ARGUMENT', `adapter setup must be an adapter name, a list of names, or a composition block (Stack, Parallel, Average, BatchSplit, Fuse); got ${setup === null ? 'null' : typeof setup}`);
}

/** The adapter names of a setup, each once, in first-seen order. */
export function flattenComposition(setup: AdapterSetup): string[] {
  const out: string[] = [];
  const walk = (s: AdapterSetup) => {
    if (typeof s === 'string') {
      if (!out.includes(s)) out.push(s);
    } else s.children.forEach(walk);
  };
  walk(setup);
  return out;
}

/** Every block of a setup, the setup first. */
export function blocksOf(setup: AdapterSetup): CompositionBlock[] {
  if (typeof setup === 'string') return [];
  return [setup, ...setup.children.flatMap(blocksOf)];
}

/** How many copies of the batch the setup runs (AdapterHub's parallel_channels): a Parallel's branch count, else 1. */
export function parallelChannels(setup: AdapterSetup): number {
  if (typeof setup === 'string') return 1;
  const inner = Math.max(1, ...setup.children.map(parallelChannels));
  return setup.type === 'Parallel' ? setup.children.length : inner;
}

/** Whether the setup is just one adapter (a name, or a Stack of one name): no composition to run. */
export function isSingleAdapter(setup: AdapterSetup): boolean {
  return typeof setup === 'string' || (setup.type === 'Stack' && setup.children.length === 1 && typeof setup.children[0] === 'string');
}

// ——— JSON (composition.json) ———

export type CompositionJson = string | { type: CompositionType; children: CompositionJson[]; weights?: number[]; batch_sizes?: number[]; splits?: number[] };

export function compositionToJson(setup: AdapterSetup): CompositionJson {
  if (typeof setup === 'string') return setup;
  const out: CompositionJson = { type: setup.type, children: setup.children.map(compositionToJson) };
  if (setup.type === 'Average') out.weights = [...setup.weights];
  if (setup.type === 'BatchSplit') out.batch_sizes = [...setup.batchSizes];
  if (setup.type === 'Split') out.splits = [...setup.splits];
  return out;
}

/** Reads a setup written by compositionToJson; errors name `source` and the offending entry. */
export function compositionFromJson(json: unknown, source: string): AdapterSetup {
  if (typeof json === 'string') return json;
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PeftError('INVALID_FILE', `${source}: a composition entry must be an adapter name or {"type", "children"}, got ${JSON.stringify(json)?.slice(0, 80)}`);
  const o = json as Record<string, unknown>;
  if (!COMPOSITION_TYPES.includes(o.type as CompositionType)) throw new PeftError('INVALID_FILE', `${source}: unknown composition block type ${JSON.stringify(o.type)}; expected one of ${COMPOSITION_TYPES.join(', ')}`);
  if (!Array.isArray(o.children)) throw new PeftError('INVALID_FILE', `${source}: field "children" of a ${String(o.type)} block must be a list`);
  const kids = o.children.map((c) => compositionFromJson(c, source));
  try {
    switch (o.type as CompositionType) {
      case 'Stack':
        return Stack(...kids);
      case 'Parallel':
        return Parallel(...kids);
      case 'Fuse':
        return Fuse(...kids);
      case 'Average':
        return Average(...kids, { weights: o.weights as number[], normalizeWeights: false });
      case 'BatchSplit':
        return BatchSplit(...kids, { batchSizes: o.batch_sizes as number[] });
      case 'Split':
        return Split(...kids, { splits: o.splits as number[] });
    }
  } catch (e) {
    if (PeftError.isInstance(e)) throw new PeftError('INVALID_FILE', `${source}: ${e.message}`);
    throw e;
  }
}

// ——— the per-layer recursion ———

/**
 * What a composable layer supplies to `composeLayer`: its state type S (e.g. LoRA's input, accumulated delta and
 * base output) and how one adapter acts on it. Rows are the batch dimension (axis 0).
 */
export interface ComposeOps<S> {
  /** Whether this layer holds adapter `name` (adapters it lacks leave the state unchanged). */
  has(name: string): boolean;
  rows(state: S): number;
  /** Rows begin … begin + size − 1 of the state. */
  slice(state: S, begin: number, size: number): S;
  /** The states' rows one after the other. */
  concat(states: S[]): S;
  /** Σ wᵢ · stateᵢ (the outputs' weighted mean). */
  average(states: S[], weights: readonly number[]): S;
  /** The state after adapter `name`. */
  single(name: string, state: S): S;
  /** Before an adapter runs (AdapterHub's pre_block / pre_forward): its input and skip connection from the state. */
  preBlock?(setup: AdapterSetup, state: S): S;
  /** Split: the state's sequence length, token positions begin … begin + size − 1, and states joined along the sequence. */
  seqLength?(state: S): number;
  sliceSeq?(state: S, begin: number, size: number): S;
  concatSeq?(states: S[]): S;
  /** Fuse; `run(child, state)` runs one child (an adapter or a Stack) on the block's input. Absent: Fuse is refused. */
  fuse?(block: FuseBlock, state: S, run: (child: AdapterSetup, state: S) => S): S;
  /** Names the layer in errors (its module path or type). */
  where?: string;
}

/** Whether the setup names any adapter this layer holds (otherwise the layer runs its base only). */
export function touchesLayer(setup: AdapterSetup, has: (name: string) => boolean): boolean {
  return flattenComposition(setup).some(has);
}

/**
 * Runs `setup` through one layer (AdapterHub's compose): the blocks' semantics, on the layer's own state. Each
 * child of Parallel, BatchSplit, Average and Fuse computes what it computes alone: an adapter gets its own
 * pre-processing (`preBlock`), a nested Stack its adapters'. (AdapterHub's code also pre-processes at the outer
 * block, so a Stack inside Parallel / Average / Fuse would add the decoder's residual twice; peftjs does not.)
 */
export function composeLayer<S>(setup: AdapterSetup, state: S, ops: ComposeOps<S>): S {
  const pre = (s: AdapterSetup, st: S) => (ops.preBlock ? ops.preBlock(s, st) : st);
  const child = (c: AdapterSetup, st: S): S => (typeof c === 'string' ? (ops.has(c) ? ops.single(c, pre(c, st)) : st) : run(c, st));
  const at = ops.where ? ` at ${ops.where}` : '';
  const run = (s: AdapterSetup, st: S): S => {
    if (typeof s === 'string') return child(s, st);
    switch (s.type) {
      case 'Stack':
        for (const c of s.children) st = child(c, st);
        return st;
      case 'Parallel': {
        const k = s.children.length;
        const rows = ops.rows(st);
        if (rows % k !== 0) throw new PeftError('INVALID_ARGUMENT', `${compositionToString(s)}${at}: the batch of ${rows} rows is not ${k} replicas (run it through PeftModel.forward, which replicates the batch)`);
        const b = rows / k;
        return ops.concat(s.children.map((c, i) => child(c, ops.slice(st, i * b, b))));
      }
      case 'BatchSplit': {
        const rows = ops.rows(st);
        const total = s.batchSizes.reduce((a, n) => a + n, 0);
        if (total !== rows) throw new PeftError('INVALID_ARGUMENT', `${compositionToString(s)}${at}: batchSizes [${s.batchSizes.join(', ')}] sum to ${total}, but the batch has ${rows} rows`);
        let begin = 0;
        const parts: S[] = [];
        s.children.forEach((c, i) => {
          const n = s.batchSizes[i];
          if (n > 0) parts.push(child(c, ops.slice(st, begin, n)));
          begin += n;
        });
        return ops.concat(parts);
      }
      case 'Split': {
        if (!ops.seqLength || !ops.sliceSeq || !ops.concatSeq) throw new PeftError('UNSUPPORTED', `${compositionToString(s)}: Split is not supported${ops.where ? ` by ${ops.where}` : ''}`);
        const len = ops.seqLength(st);
        const total = s.splits.reduce((a, n) => a + n, 0);
        if (total !== len) throw new PeftError('INVALID_ARGUMENT', `${compositionToString(s)}${at}: splits [${s.splits.join(', ')}] sum to ${total}, but the sequence has ${len} positions (a key/value cache decodes one position at a time: Split does not generate)`);
        let begin = 0;
        const parts: S[] = [];
        s.children.forEach((c, i) => {
          const n = s.splits[i];
          if (n > 0) parts.push(child(c, ops.sliceSeq!(st, begin, n)));
          begin += n;
        });
        return ops.concatSeq(parts);
      }
      case 'Average': {
        const start = st;
        return ops.average(s.children.map((c) => child(c, start)), s.weights);
      }
      case 'Fuse':
        if (!ops.fuse) throw new PeftError('UNSUPPORTED', `${compositionToString(s)}: Fuse is not supported${ops.where ? ` by ${ops.where}` : ''}`);
        return ops.fuse(s, st, child);
    }
  };
  return run(setup, state);
}
