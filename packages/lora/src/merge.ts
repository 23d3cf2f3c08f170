// HF PEFT's LoraModel.add_weighted_adapter: a new LoRA adapter combining existing ones (linear, cat, svd,
// TIES, DARE, magnitude pruning and their SVD forms), computed in float64 from the adapters' weights.
import * as tf from '@tensorflow/tfjs';
import { ModulesToSaveWrapper, PeftError, mulberry32, nextSeed, type PeftModel, type WeightedAdapterOptions } from '@peftjs/core';
import type { LoraConfig } from './config';
import { LoraEmbedding, LoraLinear } from './layer';
import { dareLinear, dareTies, magnitudePrune, quantile, taskArithmetic, ties, type MajoritySignMethod, type Random } from './merge_utils';
import { svdOfProduct, truncatedSvd, type Svd } from './svd';

export const COMBINATION_TYPES = [
  'svd',
  'linear',
  'cat',
  'ties',
  'ties_svd',
  'dare_linear',
  'dare_ties',
  'dare_linear_svd',
  'dare_ties_svd',
  'magnitude_prune',
  'magnitude_prune_svd',
] as const;
export type CombinationType = (typeof COMBINATION_TYPES)[number];

const FACTOR_TYPES = new Set<string>(['linear', 'ties', 'dare_linear', 'dare_ties', 'magnitude_prune']);

/** One adapter's factors in a layer: A [r, n], B [m, r] (B·A is [out, in] for a Linear, [dim, vocab] for an Embedding). */
interface Factors {
  r: number;
  a: Float64Array;
  b: Float64Array;
  scaling: number;
}

const where = 'addWeightedAdapter';

function fail(msg: string): never {
  throw new PeftError('INVALID_ARGUMENT', `${where}: ${msg}`);
}

function loraVars(layer: LoraLinear | LoraEmbedding, name: string): { a: tf.Variable; b: tf.Variable } | undefined {
  if (!layer.has(name)) return undefined;
  if (layer instanceof LoraLinear) return { a: layer.loraA.get(name)!.weight, b: layer.loraB.get(name)!.weight };
  return { a: layer.loraEmbeddingA.get(name)!, b: layer.loraEmbeddingB.get(name)! };
}

async function readFactors(layer: LoraLinear | LoraEmbedding, name: string): Promise<Factors | undefined> {
  const v = loraVars(layer, name);
  if (!v) return undefined;
  const [a, b] = await Promise.all([v.a.data(), v.b.data()]);
  return { r: v.a.shape[0], a: Float64Array.from(a), b: Float64Array.from(b), scaling: layer.scaling[name] };
}

/** B·A (m×r times r×n) times `scale`, row-major. */
function product(f: Factors, m: number, n: number, scale: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < f.r; p++) {
      const x = f.b[i * f.r + p] * scale;
      if (x === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += x * f.a[p * n + j];
    }
  }
  return out;
}

function checkOptions(peft: PeftModel, adapters: unknown, weights: unknown, adapterName: string, o: WeightedAdapterOptions) {
  if (!Array.isArray(adapters) || !adapters.length || !adapters.every((a) => typeof a === 'string')) fail('"adapters" must be a non-empty list of adapter names');
  for (const a of adapters) {
    if (!Object.hasOwn(peft.peftConfig, a)) fail(`adapter "${a}" (in "adapters") does not exist; adapters: ${Object.keys(peft.peftConfig).join(', ')}`);
    const c = peft.peftConfig[a];
    if (c.peftType !== 'LORA') throw new PeftError('UNSUPPORTED', `${where}: adapter "${a}" is ${c.peftType}; only LORA adapters can be combined`);
    if ((c as LoraConfig).useDora) throw new PeftError('UNSUPPORTED', `${where}: adapter "${a}" uses DoRA; its magnitude vector cannot be combined`);
  }
  if (new Set(adapters).size !== adapters.length) fail('"adapters" names an adapter twice');
  if (!Array.isArray(weights) || weights.length !== adapters.length || !weights.every((w) => typeof w === 'number' && Number.isFinite(w))) {
    fail(`"weights" must be ${adapters.length} finite number(s), one per adapter`);
  }
  if (Object.hasOwn(peft.peftConfig, adapterName)) fail(`an adapter named "${adapterName}" (adapterName) already exists`);
  const type = o.combinationType ?? 'svd';
  if (!(COMBINATION_TYPES as readonly string[]).includes(type)) fail(`"combinationType" must be one of ${COMBINATION_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  const sign = o.majoritySignMethod ?? 'total';
  if (sign !== 'total' && sign !== 'frequency') fail(`"majoritySignMethod" must be "total" or "frequency", got ${JSON.stringify(sign)}`);
  if (o.svdRank != null && !(Number.isInteger(o.svdRank) && o.svdRank > 0)) fail(`"svdRank" must be a positive integer, got ${o.svdRank}`);
  if (o.svdClamp != null && !(typeof o.svdClamp === 'number' && o.svdClamp >= 0 && o.svdClamp <= 1)) fail(`"svdClamp" must be a quantile in [0, 1], got ${o.svdClamp}`);
  if (o.svdFullMatrices != null && typeof o.svdFullMatrices !== 'boolean') fail('"svdFullMatrices" must be a boolean');
  if (o.density != null && !(typeof o.density === 'number' && o.density >= 0 && o.density <= 1)) fail(`"density" must be in [0, 1], got ${o.density}`);
  if (o.seed != null && !Number.isInteger(o.seed)) fail(`"seed" must be an integer, got ${o.seed}`);
  return { type: type as CombinationType, sign: sign as MajoritySignMethod };
}

/**
 * The new adapter's rank and target modules, as HF's _check_add_weighted_adapter: linear and the factor
 * types need equal ranks (kept), `cat` sums them, the SVD types take svdRank or the largest.
 */
function newRankAndTargets(peft: PeftModel, adapters: string[], type: CombinationType, svdRank: number | null | undefined) {
  const configs = adapters.map((a) => peft.peftConfig[a] as LoraConfig);
  const ranks = configs.map((c) => Math.max(c.r, ...Object.values(c.rankPattern ?? {})));
  let rank: number;
  if (FACTOR_TYPES.has(type)) {
    if (new Set(ranks).size !== 1) fail(`combinationType "${type}" needs adapters of one rank; ranks are ${adapters.map((a, i) => `${a}: ${ranks[i]}`).join(', ')} (use "cat" or an SVD type)`);
    rank = ranks[0];
  } else if (type === 'cat') rank = ranks.reduce((x, y) => x + y, 0);
  else rank = svdRank ?? Math.max(...ranks);
  const targets = configs.map((c) => c.targetModules);
  const kinds = new Set(targets.map((t) => (typeof t === 'string' ? 'string' : Array.isArray(t) ? 'list' : 'none')));
  if (kinds.has('none')) fail('an adapter has no target_modules');
  if (kinds.size > 1) fail('the adapters\' target_modules mix a regex string and a list; HF does not combine those');
  let targetModules: string | string[];
  if (kinds.has('string')) targetModules = targets.map((t) => `(${t as string})`).join('|');
  else targetModules = [...new Set((targets as string[][]).flat())];
  return { rank, targetModules };
}

/** B_new [m, rank], A_new [rank, n] from an SVD (U·S truncated, Vᵀ truncated), clamped at a quantile if asked. */
function factorsFromSvd(d: Svd, rank: number, clamp: number | null | undefined, layerName: string): { a: Float64Array; b: Float64Array } {
  const { m, n, k } = d;
  if (rank > Math.min(m, n)) fail(`the new rank ${rank} exceeds min(out, in) = ${Math.min(m, n)} of layer "${layerName}" (HF's SVD cannot give it either)`);
  const b = new Float64Array(m * rank);
  const a = new Float64Array(rank * n);
  for (let j = 0; j < Math.min(rank, k); j++) {
    for (let i = 0; i < m; i++) b[i * rank + j] = d.u[i * k + j] * d.s[j];
    for (let i = 0; i < n; i++) a[j * n + i] = d.v[i * k + j];
  }
  if (clamp != null) {
    const dist = new Float64Array(b.length + a.length);
    dist.set(b, 0);
    dist.set(a, b.length);
    const hi = quantile(dist, clamp);
    const lo = -hi;
    for (const t of [a, b]) for (let i = 0; i < t.length; i++) t[i] = Math.min(Math.max(t[i], lo), hi);
  }
  return { a, b };
}

function combineFactorTensors(type: string, tensors: Float64Array[], weights: number[], density: number | null | undefined, sign: MajoritySignMethod, rand: Random): Float64Array {
  const d = density ?? undefined;
  switch (type) {
    case 'linear':
    case 'svd':
      return taskArithmetic(tensors, weights);
    case 'ties':
    case 'ties_svd':
      return ties(tensors, weights, d, sign);
    case 'dare_linear':
    case 'dare_linear_svd':
      return dareLinear(tensors, weights, d, rand);
    case 'dare_ties':
    case 'dare_ties_svd':
      return dareTies(tensors, weights, d, sign, rand);
    default:
      return magnitudePrune(tensors, weights, d);
  }
}

/** The new adapter's A [rank, n] and B [m, rank] of one layer. */
function combineLayer(
  type: CombinationType,
  found: { f: Factors; w: number }[],
  m: number,
  n: number,
  rank: number,
  o: WeightedAdapterOptions,
  sign: MajoritySignMethod,
  rand: Random,
  layerName: string,
): { a: Float64Array; b: Float64Array } {
  if (type === 'cat') {
    // rows of A: each adapter's A times weight·scaling, stacked; columns of B: each B, side by side
    const a = new Float64Array(rank * n);
    const b = new Float64Array(m * rank);
    let row = 0;
    for (const { f, w } of found) {
      for (let p = 0; p < f.r; p++, row++) {
        for (let j = 0; j < n; j++) a[row * n + j] = f.a[p * n + j] * w * f.scaling;
        for (let i = 0; i < m; i++) b[i * rank + row] = f.b[i * f.r + p];
      }
    }
    return { a, b };
  }
  if (FACTOR_TYPES.has(type)) {
    // weight·scaling split over both factors as ±√|w·s| on A and √|w·s| on B, each factor combined alone
    for (const { f } of found) if (f.r !== rank) fail(`layer "${layerName}": an adapter has rank ${f.r} here, not ${rank} (rank_pattern); combinationType "${type}" needs one rank`);
    const ws = found.map(({ f, w }) => w * f.scaling);
    const wA = ws.map((x) => Math.sqrt(Math.abs(x)) * (x >= 0 ? 1 : -1));
    const wB = ws.map((x) => Math.sqrt(Math.abs(x)));
    const a = combineFactorTensors(type, found.map(({ f }) => f.a), wA, o.density, sign, rand);
    const b = combineFactorTensors(type, found.map(({ f }) => f.b), wB, o.density, sign, rand);
    return { a, b };
  }
  // SVD types: the delta weights sᵢBᵢAᵢ (scaling included) combined with the weights, then the best
  // rank-`rank` factors of the result (HF PEFT ≥ 0.21 applies the scaling once here, not twice)
  const ws = found.map(({ w }) => w);
  let d: Svd;
  if (rank > Math.min(m, n)) fail(`the new rank ${rank} exceeds min(out, in) = ${Math.min(m, n)} of layer "${layerName}" (HF's SVD cannot give it either)`);
  if (type === 'svd') {
    // ΣᵢwᵢsᵢBᵢAᵢ = [w₁s₁B₁ …] · [A₁; …]: decomposed through its factors (the ranks' cost, not the layer's)
    const c = found.reduce((acc, { f }) => acc + f.r, 0);
    const p = new Float64Array(m * c);
    const q = new Float64Array(c * n);
    let col = 0;
    found.forEach(({ f }, k) => {
      const scale = ws[k] * f.scaling;
      for (let r = 0; r < f.r; r++, col++) {
        for (let i = 0; i < m; i++) p[i * c + col] = f.b[i * f.r + r] * scale;
        q.set(f.a.subarray(r * n, (r + 1) * n), col * n);
      }
    });
    d = rank <= c ? svdOfProduct(p, q, m, c, n) : truncatedSvd(product({ r: c, a: q, b: p, scaling: 1 }, m, n, 1), m, n, rank);
  } else {
    const deltas = found.map(({ f }) => product(f, m, n, f.scaling));
    d = truncatedSvd(combineFactorTensors(type, deltas, ws, o.density, sign, rand), m, n, rank);
  }
  return factorsFromSvd(d, rank, o.svdClamp, layerName);
}

/**
 * LoRA's addWeightedAdapter (see PeftModel.addWeightedAdapter): the new adapter is added with HF's config
 * (r = lora_alpha = the new rank, target_modules the union, rank/alpha patterns cleared), frozen and
 * inactive, and its A and B set per layer. All or nothing: on an error the new adapter is removed.
 */
export async function addWeightedLoraAdapter(args: {
  peft: PeftModel;
  adapters: string[];
  weights: number[];
  adapterName: string;
  options: WeightedAdapterOptions;
}): Promise<void> {
  const { peft, adapterName, options: o } = args;
  const { sign, type: requested } = checkOptions(peft, args.adapters, args.weights, adapterName, o);
  const adapters = [...args.adapters];
  const weights = [...args.weights];
  const type: CombinationType = adapters.length === 1 ? 'linear' : requested;
  for (const [key, m] of peft.namedModules()) {
    if (m instanceof ModulesToSaveWrapper && adapters.filter((a) => m.copies.has(a)).length > 1) {
      fail(`adapters ${adapters.filter((a) => m.copies.has(a)).join(', ')} each hold their own copy of "${key}" (modules_to_save); those cannot be combined`);
    }
  }
  if (['ties', 'ties_svd', 'dare_linear', 'dare_ties', 'dare_linear_svd', 'dare_ties_svd', 'magnitude_prune', 'magnitude_prune_svd'].includes(type) && o.density == null) {
    fail(`"density" is required by combinationType "${type}"`);
  }
  const { rank, targetModules } = newRankAndTargets(peft, adapters, type, o.svdRank);
  const first = peft.peftConfig[adapters[0]] as LoraConfig;
  // r = lora_alpha = rank and no rsLoRA: the new adapter's scaling is 1, the sources' scalings are in its weights
  const config = first.with({ r: rank, loraAlpha: rank, useRslora: false, targetModules, alphaPattern: {}, rankPattern: {} });
  const rand = mulberry32(o.seed ?? nextSeed());
  peft.addAdapter(adapterName, config);
  try {
    for (const [key, layer] of peft.namedModules()) {
      if (!(layer instanceof LoraLinear) && !(layer instanceof LoraEmbedding)) continue;
      const target = loraVars(layer, adapterName);
      if (!target) continue;
      const found: { f: Factors; w: number }[] = [];
      for (let i = 0; i < adapters.length; i++) {
        const f = await readFactors(layer, adapters[i]);
        if (f) found.push({ f, w: weights[i] });
      }
      if (!found.length) fail(`layer "${key}" holds none of the adapters ${adapters.join(', ')}`);
      const m = target.b.shape[0]!;
      const n = target.a.shape[1]!;
      const { a, b } = combineLayer(type, found, m, n, rank, o, sign, rand, key);
      const ta = tf.tensor(Float32Array.from(a), target.a.shape);
      const tb = tf.tensor(Float32Array.from(b), target.b.shape);
      target.a.assign(ta);
      target.b.assign(tb);
      tf.dispose([ta, tb]);
    }
  } catch (e) {
    peft.deleteAdapter(adapterName);
    throw e;
  }
}
