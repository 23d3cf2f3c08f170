// A reusable open-addressing hash table from integer keys (< 2^53) to counts. Clearing is O(1) by
// epoch, so one table serves every segment of a corpus without allocating per segment.

export class CountTable {
  private keys = new Float64Array(64);
  private counts = new Int32Array(64);
  private stamps = new Int32Array(64);
  private epoch = 1;
  private mask = 63;

  /** Empties the table, sized for at least `entries` keys. */
  reset(entries: number): void {
    let size = 16;
    while (size < entries * 2) size *= 2;
    if (size > this.keys.length) {
      this.keys = new Float64Array(size);
      this.counts = new Int32Array(size);
      this.stamps = new Int32Array(size);
      this.epoch = 1;
    } else if (++this.epoch === 0x3fffffff) {
      this.stamps.fill(0);
      this.epoch = 1;
    }
    this.mask = size - 1;
  }

  private slot(key: number): number {
    const lo = key >>> 0;
    const hi = (key / 4294967296) | 0;
    let h = Math.imul(lo ^ Math.imul(hi, 0x27d4eb2d), 0x9e3779b1);
    h = (h ^ (h >>> 15)) & this.mask;
    const stamps = this.stamps;
    const keys = this.keys;
    const epoch = this.epoch;
    while (stamps[h] === epoch && keys[h] !== key) h = (h + 1) & this.mask;
    return h;
  }

  /** Adds 1 to key's count. */
  increment(key: number): void {
    const h = this.slot(key);
    if (this.stamps[h] === this.epoch) this.counts[h]++;
    else {
      this.stamps[h] = this.epoch;
      this.keys[h] = key;
      this.counts[h] = 1;
    }
  }

  /** Raises key's count to at least `count`. */
  max(key: number, count: number): void {
    const h = this.slot(key);
    if (this.stamps[h] === this.epoch) {
      if (count > this.counts[h]) this.counts[h] = count;
    } else {
      this.stamps[h] = this.epoch;
      this.keys[h] = key;
      this.counts[h] = count;
    }
  }

  /** -1 when absent; else takes one from a positive count and returns 1, or returns 0 when used up. */
  take(key: number): number {
    const h = this.slot(key);
    if (this.stamps[h] !== this.epoch) return -1;
    if (this.counts[h] > 0) {
      this.counts[h]--;
      return 1;
    }
    return 0;
  }

  /** Calls fn for every (key, count). */
  forEach(fn: (key: number, count: number) => void): void {
    const n = this.mask + 1;
    for (let h = 0; h < n; h++) if (this.stamps[h] === this.epoch) fn(this.keys[h], this.counts[h]);
  }
}
