// HF PEFT's merge_utils (task arithmetic, TIES, DARE, magnitude pruning) over flat float64 task tensors
// of one shape. Written from the papers' definitions as HF PEFT 0.21 computes them.
import { PeftError } from '@peftjs/core';

export type MajoritySignMethod = 'total' | 'frequency';
export type Random = () => number;

function checkDensity(density: number | undefined | null, what: string): number {
  if (typeof density !== 'number' || Number.isNaN(density)) {
    throw new PeftError('INVALID_ARGUMENT', `addWeightedAdapter: "density" is required by combinationType "${what}" (a number in [0, 1])`);
  }
  if (density < 0) throw new PeftError('INVALID_ARGUMENT', `addWeightedAdapter: "density" must be >= 0, got ${density}`);
  return density;
}

/** Keeps the int(density·n) largest |values| (HF's magnitude_based_pruning), the rest zero. */
export function magnitudePruning(t: Float64Array, density: number): Float64Array {
  const k = Math.trunc(density * t.length);
  const out = new Float64Array(t.length);
  if (k <= 0) return out;
  const order = [...t.keys()].sort((i, j) => Math.abs(t[j]) - Math.abs(t[i]) || i - j);
  for (let i = 0; i < k; i++) out[order[i]] = t[order[i]];
  return out;
}

/** Keeps each value with probability `density` (HF's random_pruning), divided by density when rescaled. */
export function randomPruning(t: Float64Array, density: number, rescale: boolean, rand: Random): Float64Array {
  const out = new Float64Array(t.length);
  for (let i = 0; i < t.length; i++) if (rand() < density) out[i] = rescale ? t[i] / density : t[i];
  return out;
}

/** HF's prune: density ≥ 1 keeps everything. */
export function prune(t: Float64Array, density: number, method: 'magnitude' | 'random', rescale = false, rand?: Random): Float64Array {
  if (density >= 1) return t;
  if (density < 0) throw new PeftError('INVALID_ARGUMENT', `addWeightedAdapter: "density" must be >= 0, got ${density}`);
  return method === 'magnitude' ? magnitudePruning(t, density) : randomPruning(t, density, rescale, rand!);
}

/** Σᵢ wᵢ·tᵢ. */
export function taskArithmetic(tensors: Float64Array[], weights: number[]): Float64Array {
  const out = new Float64Array(tensors[0].length);
  tensors.forEach((t, k) => {
    const w = weights[k];
    for (let i = 0; i < t.length; i++) out[i] += t[i] * w;
  });
  return out;
}

/**
 * TIES's sign election and disjoint merge over (already pruned) task tensors: the majority sign per entry
 * from the unweighted tensors (`total`: the sign of their sum, `frequency`: of the count of signs; ties
 * go to +), then the mean of the weighted entries that agree with it (entries of sign 0 never agree).
 */
export function disjointMergeWithElectedSign(tensors: Float64Array[], weights: number[], method: MajoritySignMethod): Float64Array {
  const n = tensors[0].length;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let mag = 0;
    for (const t of tensors) mag += method === 'total' ? t[i] : Math.sign(t[i]);
    const majority = mag >= 0 ? 1 : -1;
    let sum = 0;
    let kept = 0;
    tensors.forEach((t, k) => {
      if (Math.sign(t[i]) === majority) {
        sum += t[i] * weights[k];
        kept++;
      }
    });
    out[i] = sum / Math.max(kept, 1);
  }
  return out;
}

export function magnitudePrune(tensors: Float64Array[], weights: number[], density: number | undefined): Float64Array {
  const d = checkDensity(density, 'magnitude_prune');
  return taskArithmetic(tensors.map((t) => prune(t, d, 'magnitude')), weights);
}

export function ties(tensors: Float64Array[], weights: number[], density: number | undefined, method: MajoritySignMethod): Float64Array {
  const d = checkDensity(density, 'ties');
  return disjointMergeWithElectedSign(tensors.map((t) => prune(t, d, 'magnitude')), weights, method);
}

export function dareLinear(tensors: Float64Array[], weights: number[], density: number | undefined, rand: Random): Float64Array {
  const d = checkDensity(density, 'dare_linear');
  return taskArithmetic(tensors.map((t) => prune(t, d, 'random', true, rand)), weights);
}

export function dareTies(tensors: Float64Array[], weights: number[], density: number | undefined, method: MajoritySignMethod, rand: Random): Float64Array {
  const d = checkDensity(density, 'dare_ties');
  return disjointMergeWithElectedSign(tensors.map((t) => prune(t, d, 'random', true, rand)), weights, method);
}

/** torch.quantile's default (linear interpolation between the two nearest order statistics). */
export function quantile(values: Float64Array, q: number): number {
  if (!(q >= 0 && q <= 1)) throw new PeftError('INVALID_ARGUMENT', `addWeightedAdapter: "svdClamp" must be a quantile in [0, 1], got ${q}`);
  const s = Float64Array.from(values).sort();
  const pos = q * (s.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
