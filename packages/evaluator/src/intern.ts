// Interns substrings by their code units without creating a string per token: tokens of a corpus
// become small integer ids straight from (line, start, end) ranges.

export class RangeInterner {
  private arena = new Uint16Array(1024);
  private arenaUsed = 0;
  private starts = new Int32Array(64);
  private lens = new Int32Array(64);
  private hashes = new Int32Array(64);
  private table = new Int32Array(128); // entry id + 1; 0 = empty
  private mask = 127;
  size = 0;

  private static hash(s: string, start: number, end: number): number {
    let h = 0x811c9dc5 | 0;
    for (let i = start; i < end; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    return h ^ (h >>> 16);
  }

  private equals(id: number, s: string, start: number, end: number): boolean {
    const len = end - start;
    if (this.lens[id] !== len) return false;
    const a = this.arena;
    const off = this.starts[id];
    for (let i = 0; i < len; i++) if (a[off + i] !== s.charCodeAt(start + i)) return false;
    return true;
  }

  /** The id of s[start, end), or -1 if it was never interned. */
  find(s: string, start: number, end: number): number {
    const h = RangeInterner.hash(s, start, end);
    let slot = h & this.mask;
    for (;;) {
      const e = this.table[slot];
      if (e === 0) return -1;
      if (this.hashes[e - 1] === h && this.equals(e - 1, s, start, end)) return e - 1;
      slot = (slot + 1) & this.mask;
    }
  }

  /** The id of s[start, end), interning it when new. */
  id(s: string, start: number, end: number): number {
    const h = RangeInterner.hash(s, start, end);
    let slot = h & this.mask;
    for (;;) {
      const e = this.table[slot];
      if (e === 0) break;
      if (this.hashes[e - 1] === h && this.equals(e - 1, s, start, end)) return e - 1;
      slot = (slot + 1) & this.mask;
    }
    const id = this.size++;
    const len = end - start;
    if (this.arenaUsed + len > this.arena.length) {
      let n = this.arena.length * 2;
      while (n < this.arenaUsed + len) n *= 2;
      const a = new Uint16Array(n);
      a.set(this.arena.subarray(0, this.arenaUsed));
      this.arena = a;
    }
    for (let i = 0; i < len; i++) this.arena[this.arenaUsed + i] = s.charCodeAt(start + i);
    if (id >= this.starts.length) {
      this.starts = grow(this.starts);
      this.lens = grow(this.lens);
      this.hashes = grow(this.hashes);
    }
    this.starts[id] = this.arenaUsed;
    this.lens[id] = len;
    this.hashes[id] = h;
    this.arenaUsed += len;
    this.table[slot] = id + 1;
    if (this.size * 2 > this.mask) this.rehash();
    return id;
  }

  private rehash(): void {
    const size = (this.mask + 1) * 2;
    this.table = new Int32Array(size);
    this.mask = size - 1;
    for (let id = 0; id < this.size; id++) {
      let slot = this.hashes[id] & this.mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & this.mask;
      this.table[slot] = id + 1;
    }
  }
}

function grow(a: Int32Array): Int32Array<ArrayBuffer> {
  const b = new Int32Array(a.length * 2);
  b.set(a);
  return b;
}
