// ROUGE (rouge1, rouge2, rougeL) of 10k sentence pairs (the metric fixture's 400 pairs × 25): ours, and
// torchmetrics' ROUGEScore (rouge-score's algorithm) in the same command when python3 has it.
// Usage: (cd packages/evaluator && npx tsup) && node bench/evaluator-rouge.mjs [--repeat 25] [--stem]
import { arg, loadPairs, loadMetrics, time, pythonHas, runPython } from './evaluator-common.mjs';

const repeat = Number(arg('repeat', '25'));
const stem = process.argv.includes('--stem');
const types = ['rouge1', 'rouge2', 'rougeL'];
const { rougeScore } = await loadMetrics();
const { hyps, refs, pairs, pairsPath } = loadPairs(repeat);
console.log(`ROUGE ${types.join('/')}${stem ? ' with stemming' : ''} of ${hyps.length} pairs (${pairs} fixture pairs × ${repeat})`);

rougeScore(hyps.slice(0, 1000), refs.slice(0, 1000), { rougeTypes: types, useStemmer: stem }); // warm the JIT
const ours = time(() => rougeScore(hyps, refs, { rougeTypes: types, useStemmer: stem }));
const m = ours.value.mean;
console.log(`peftjs:       ${ours.seconds.toFixed(3)} s  rouge1 F ${m.rouge1.fmeasure}  rougeL F ${m.rougeL.fmeasure}`);

if (pythonHas('torchmetrics') && (!stem || pythonHas('nltk'))) {
  const ref = runPython(
    `import json, sys, time, torchmetrics
from torchmetrics.text.rouge import ROUGEScore
pairs = json.load(open(sys.argv[1])); rep = int(sys.argv[2]); stem = sys.argv[3] == '1'
hyps = [p['hyp'] for p in pairs] * rep; refs = [p['ref'] for p in pairs] * rep
metric = ROUGEScore(use_stemmer=stem, rouge_keys=('rouge1', 'rouge2', 'rougeL'))
t0 = time.perf_counter(); s = metric(hyps, refs); dt = time.perf_counter() - t0
print(json.dumps({'seconds': dt, 'rouge1': float(s['rouge1_fmeasure']), 'rougeL': float(s['rougeL_fmeasure']), 'version': torchmetrics.__version__}))`,
    [pairsPath, String(repeat), stem ? '1' : '0'],
  );
  if (ref) {
    console.log(`torchmetrics: ${ref.seconds.toFixed(3)} s  rouge1 F ${ref.rouge1}  rougeL F ${ref.rougeL}  (torchmetrics ${ref.version})`);
    console.log(`|mean difference| rouge1 ${Math.abs(ref.rouge1 - m.rouge1.fmeasure)} rougeL ${Math.abs(ref.rougeL - m.rougeL.fmeasure)}`);
    console.log(`ratio: peftjs is ${(ref.seconds / ours.seconds).toFixed(1)}× faster than torchmetrics`);
  }
} else {
  console.log(`torchmetrics: reference missing (python3 cannot import torchmetrics${stem ? ' and nltk' : ''}); the issue records 5.0 s for 10k pairs on the device machine`);
}
