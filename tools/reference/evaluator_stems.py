"""Records NLTK's Porter stems (PorterStemmer(), mode NLTK_EXTENSIONS) for the evaluator's stemmer test.

Usage: python3 evaluator_stems.py OUT.json [--pairs pairs.json ...] [--words words.txt ...] [--sample N]

Words come from sentence-pair files (tokenized as rouge-score does: lowercase, runs of [a-z0-9])
and from word lists (one word a line; kept when it is [a-z0-9]+ after lowercasing). --sample keeps
every k-th word list entry so that about N of them remain (pair words are always kept).
nltk need not be installed: Debian's python3-nltk .deb unpacked and put on PYTHONPATH works
(dpkg -x python3-nltk_3.8-1_all.deb root; PYTHONPATH=root/usr/lib/python3/dist-packages).
"""
import argparse
import json
import re

import nltk
from nltk.stem.porter import PorterStemmer

ap = argparse.ArgumentParser()
ap.add_argument('out')
ap.add_argument('--pairs', action='append', default=[])
ap.add_argument('--words', action='append', default=[])
ap.add_argument('--sample', type=int, default=0)
args = ap.parse_args()

pair_words = set()
for path in args.pairs:
    for p in json.load(open(path, encoding='utf-8')):
        for key in ('hyp', 'ref', 'ref2'):
            pair_words.update(re.sub(r'[^a-z0-9]+', ' ', p.get(key, '').lower()).split())

list_words = set()
for path in args.words:
    for line in open(path, encoding='utf-8', errors='replace'):
        w = line.strip().lower()
        if re.fullmatch(r'[a-z0-9]+', w):
            list_words.add(w)
list_words = sorted(list_words - pair_words)
if args.sample and len(list_words) > args.sample:
    step = len(list_words) / args.sample
    list_words = [list_words[int(i * step)] for i in range(args.sample)]

st = PorterStemmer()
words = sorted(pair_words | set(list_words))
stems = {w: st.stem(w) for w in words}
json.dump({'nltk': nltk.__version__, 'mode': st.mode, 'count': len(stems), 'stems': stems},
          open(args.out, 'w', encoding='utf-8'), indent=0, sort_keys=True)
print(f'nltk {nltk.__version__}: {len(stems)} words ({len(pair_words)} from pairs), '
      f'{sum(1 for w, s in stems.items() if w != s)} changed by stemming')
