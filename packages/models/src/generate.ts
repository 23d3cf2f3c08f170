import * as tf from '@tensorflow/tfjs';
import { KVCache, PeftError, mulberry32, nextSeed, type ForwardFn, type GenerateOptions, type IdsLike, type ModelConfig } from '@peftjs/core';

async function toRows(x: IdsLike, what: string): Promise<number[][]> {
  if (x instanceof tf.Tensor) {
    if (x.rank !== 2) throw new PeftError('INVALID_ARGUMENT', `generate: ${what} must be [batch, seq], got [${x.shape}]`);
    return (await x.array()) as number[][];
  }
  if (!Array.isArray(x) || !x.every(Array.isArray)) throw new PeftError('INVALID_ARGUMENT', `generate: ${what} must be number[][] or a 2-D tensor`);
  const len = x[0]?.length ?? 0;
  if (!x.every((r) => r.length === len)) throw new PeftError('INVALID_ARGUMENT', `generate: every row of ${what} must have the same length (pad the batch)`);
  return x.map((r) => r.slice());
}

function asList(v: number | number[] | null | undefined): number[] {
  if (v === undefined || v === null) return [];
  return Array.isArray(v) ? v : [v];
}

/**
 * HF's logits warpers in their order (temperature, top-k, top-p), then a draw from the softmax.
 * Works on one row of logits in place.
 */
export function sampleToken(logits: Float32Array, opts: { temperature: number; topK: number; topP: number }, rand: () => number): number {
  const v = logits.length;
  const { temperature, topK, topP } = opts;
  if (temperature !== 1) for (let i = 0; i < v; i++) logits[i] /= temperature;
  // indices sorted by logit, descending (ties keep the lower index first)
  const order = new Int32Array(v);
  for (let i = 0; i < v; i++) order[i] = i;
  order.sort((a, b) => logits[b] - logits[a] || a - b);
  let keep = v;
  if (topK > 0) keep = Math.min(keep, topK);
  if (topP < 1) {
    // HF TopPLogitsWarper: drop the lowest-probability tokens whose total mass is ≤ 1 - top_p, keep ≥ 1
    const mx = logits[order[0]];
    let z = 0;
    for (let j = 0; j < keep; j++) z += Math.exp(logits[order[j]] - mx);
    let tail = 0;
    let k = keep;
    for (let j = keep - 1; j > 0; j--) {
      tail += Math.exp(logits[order[j]] - mx) / z;
      if (tail <= 1 - topP) k = j;
      else break;
    }
    keep = k;
  }
  const mx = logits[order[0]];
  const p = new Float64Array(keep);
  let z = 0;
  for (let j = 0; j < keep; j++) z += p[j] = Math.exp(logits[order[j]] - mx);
  let r = rand() * z;
  for (let j = 0; j < keep; j++) {
    r -= p[j];
    if (r < 0) return order[j];
  }
  return order[keep - 1];
}

/**
 * Position ids from the attention mask, as HF's generation does: cumsum(mask) - 1, with masked
 * positions set to 1; the last `t` columns.
 */
export function positionsFromMask(mask: number[][], t: number): number[][] {
  return mask.map((row) => {
    const out = new Array<number>(row.length);
    let c = 0;
    for (let i = 0; i < row.length; i++) {
      c += row[i];
      out[i] = row[i] === 0 ? 1 : c - 1;
    }
    return out.slice(row.length - t);
  });
}

/**
 * The generation loop shared by every causal LM here: greedy or sampled, with the KV cache, eos
 * handling (a finished row is padded with padTokenId), and left-padded prompts.
 */
export async function generateLoop(
  model: { config: ModelConfig; generationDefaults?: { eosTokenId?: number | number[] | null; padTokenId?: number | null } },
  opts: GenerateOptions,
  forward: ForwardFn,
  ownForward: boolean,
): Promise<number[][]> {
  const rows = await toRows(opts.inputIds, 'inputIds');
  const batch = rows.length;
  if (batch === 0 || rows[0].length === 0) throw new PeftError('INVALID_ARGUMENT', 'generate: inputIds is empty');
  const maxNewTokens = opts.maxNewTokens ?? 20;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new PeftError('INVALID_ARGUMENT', `generate: maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
  const gd = model.generationDefaults ?? {};
  const eos = asList(opts.eosTokenId ?? gd.eosTokenId ?? model.config.eosTokenId);
  const pad = opts.padTokenId ?? gd.padTokenId ?? model.config.padTokenId ?? eos[0] ?? 0;

  let mask: number[][];
  if (opts.attentionMask !== undefined) {
    mask = await toRows(opts.attentionMask, 'attentionMask');
    if (mask.length !== batch || mask[0].length !== rows[0].length) {
      throw new PeftError('INVALID_ARGUMENT', `generate: attentionMask must be [${batch}, ${rows[0].length}] like inputIds`);
    }
  } else {
    // HF: the mask is derived from the pad token when the prompt contains it and it is not the eos token
    const padId = opts.padTokenId ?? gd.padTokenId ?? model.config.padTokenId;
    const derive = padId !== undefined && padId !== null && !eos.includes(padId) && rows.some((r) => r.includes(padId));
    mask = rows.map((r) => r.map((id) => (derive && id === padId ? 0 : 1)));
  }

  const doSample = !!opts.doSample;
  const temperature = opts.temperature ?? 1;
  const topK = opts.topK ?? 0;
  const topP = opts.topP ?? 1;
  if (doSample) {
    if (!(temperature > 0)) throw new PeftError('INVALID_ARGUMENT', `generate: temperature must be > 0, got ${temperature}`);
    if (!(topP > 0 && topP <= 1)) throw new PeftError('INVALID_ARGUMENT', `generate: topP must be in (0, 1], got ${topP}`);
    if (!Number.isInteger(topK) || topK < 0) throw new PeftError('INVALID_ARGUMENT', `generate: topK must be a non-negative integer, got ${topK}`);
  }
  const rand = mulberry32(opts.seed ?? nextSeed());

  const out = rows.map((r) => r.slice());
  const unfinished = new Array<boolean>(batch).fill(true);
  // sized for the whole generation: on webgpu the cache's slabs are allocated once (see withPast)
  let cache = new KVCache(rows[0].length + maxNewTokens);
  const caches = new Set<KVCache>([cache]);
  /** One forward of `step` (ids [B, t]); returns the argmax ids [B] (greedy) or the last logits [B, V]. */
  const runStep = (step: IdsLike, t: number): tf.Tensor => {
    // copies: the loop extends `mask` in place, and a replacement forward may keep what it was given
    const inputs = { inputIds: step, attentionMask: mask.map((r) => r.slice()), positionIds: positionsFromMask(mask, t), pastKeyValues: cache, useCache: true };
    let nextCache: KVCache | undefined;
    const picked = tf.tidy(() => {
      const res = forward(ownForward ? { ...inputs, logitsToKeep: 1 } as typeof inputs : inputs);
      nextCache = res.pastKeyValues;
      const [b, tt, v] = res.logits.shape as number[];
      // one position (the LM head limited by logitsToKeep, or a decode step): a reshape, not a copy
      const last = (tt === 1 ? res.logits : tf.slice(res.logits, [0, tt - 1, 0], [b, 1, v])).reshape([b, v]);
      return doSample ? last.toFloat() : tf.argMax(last, -1);
    });
    if (nextCache && nextCache !== cache) {
      cache = nextCache;
      caches.add(cache);
    }
    return picked;
  };
  /** Records step n's tokens (a finished row gets the pad id); false once every row has finished. */
  const accept = (tokens: ArrayLike<number>): boolean => {
    for (let i = 0; i < batch; i++) {
      const tok = unfinished[i] ? tokens[i] : pad;
      out[i].push(tok);
      if (unfinished[i] && eos.includes(tok)) unfinished[i] = false;
    }
    return unfinished.some(Boolean);
  };
  try {
    if (!doSample && tf.getBackend() === 'webgpu') {
      await greedyPipelined(rows, maxNewTokens, mask, runStep, accept);
      return out;
    }
    let step: number[][] = rows;
    for (let n = 0; n < maxNewTokens; n++) {
      const picked = runStep(step, step[0].length);
      const data = await picked.data();
      picked.dispose();
      const v = doSample ? data.length / batch : 0;
      const tokens: number[] = [];
      for (let i = 0; i < batch; i++) {
        tokens.push(doSample ? sampleToken((data as Float32Array).slice(i * v, (i + 1) * v), { temperature, topK, topP }, rand) : (data[i] as number));
        mask[i].push(1);
      }
      const more = accept(tokens);
      step = out.map((r) => [r[r.length - 1]]);
      if (!more) break;
    }
  } finally {
    for (const c of caches) c.dispose();
  }
  return out;
}

/**
 * Greedy decoding on webgpu without waiting for each token: step n+1 is recorded with step n's argmax
 * ids still on the GPU (no upload), while step n's ids are read back asynchronously, so the GPU's work
 * and the read-back's latency overlap the CPU's recording of the next step. A finished row is fed its
 * own argmax rather than the pad id: rows never interact, and its outputs are replaced by the pad id
 * (`accept`), so the tokens are HF's. Once every row has finished, the one step recorded ahead is
 * discarded.
 */
async function greedyPipelined(
  rows: number[][],
  maxNewTokens: number,
  mask: number[][],
  runStep: (step: IdsLike, t: number) => tf.Tensor,
  accept: (tokens: ArrayLike<number>) => boolean,
): Promise<void> {
  const batch = rows.length;
  let ahead: { ids: tf.Tensor; read: Promise<ArrayLike<number>> } | null = null;
  try {
    for (let n = 0; n < maxNewTokens; n++) {
      // the previous step's argmax, still on the GPU, is this step's input
      const ids = ahead ? ahead.ids.reshape([batch, 1]) : null;
      let picked: tf.Tensor;
      try {
        picked = runStep(ids ?? rows, ids ? 1 : rows[0].length);
      } finally {
        ids?.dispose();
      }
      for (const r of mask) r.push(1);
      const next = { ids: picked, read: picked.data() as Promise<ArrayLike<number>> };
      if (ahead) {
        const prev = ahead;
        ahead = next;
        const more = accept(await prev.read);
        prev.ids.dispose();
        if (!more) return;
      } else {
        ahead = next;
      }
    }
    if (ahead) accept(await ahead.read);
  } finally {
    if (ahead) {
      // a read still in flight: let it settle before its tensor goes
      const a = ahead;
      await a.read.catch(() => undefined);
      a.ids.dispose();
    }
  }
}
