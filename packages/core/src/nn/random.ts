/**
 * One seeded stream for every random draw peftjs makes (inits, dropout masks, shuffles), so a run is
 * reproducible from `manualSeed` and its position can be saved in a checkpoint and restored.
 */
let state = 0x2545f491;

/** Seeds the stream (PyTorch's torch.manual_seed). */
export function manualSeed(seed: number): void {
  state = seed >>> 0 || 0x2545f491;
}

/** A 32-bit xorshift step; returns the next seed for a tfjs random op. */
export function nextSeed(): number {
  let x = state;
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  state = x >>> 0;
  return state;
}

/** A uniform float in [0, 1). */
export function nextRandom(): number {
  return nextSeed() / 4294967296;
}

export function getRngState(): number {
  return state;
}

export function setRngState(s: number): void {
  state = s >>> 0;
}

/**
 * A seeded PRNG independent of the global stream (mulberry32, uniform in [0, 1)): generation's sampling
 * and the trainer's shuffles are reproducible from their own seeds.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
