// Corpus BLEU of 100k sentence pairs (the metric fixture's 400 pairs × 250): ours, and sacrebleu in the
// same command when python3 has it; prints both times and the ratio.
// Usage: (cd packages/evaluator && npx tsup) && node bench/evaluator-bleu.mjs [--repeat 250] [--tokenize 13a]
import { arg, loadPairs, loadMetrics, time, pythonHas, runPython } from './evaluator-common.mjs';

const repeat = Number(arg('repeat', '250'));
const tokenize = arg('tokenize', '13a');
const { corpusBleu } = await loadMetrics();
const { hyps, refs, pairs, pairsPath } = loadPairs(repeat);
console.log(`corpus BLEU (tok ${tokenize}) of ${hyps.length} pairs (${pairs} fixture pairs × ${repeat})`);

corpusBleu(hyps.slice(0, 2000), [refs.slice(0, 2000)], { tokenize }); // warm the JIT
const ours = time(() => corpusBleu(hyps, [refs], { tokenize }));
console.log(`peftjs:    ${ours.seconds.toFixed(3)} s  BLEU ${ours.value.score}  ${ours.value.signature}`);

if (pythonHas('sacrebleu')) {
  const ref = runPython(
    `import json, sys, time, sacrebleu
pairs = json.load(open(sys.argv[1])); rep = int(sys.argv[2])
hyps = [p['hyp'] for p in pairs] * rep; refs = [p['ref'] for p in pairs] * rep
t0 = time.perf_counter(); b = sacrebleu.corpus_bleu(hyps, [refs], tokenize=sys.argv[3]); dt = time.perf_counter() - t0
print(json.dumps({'seconds': dt, 'score': b.score, 'version': sacrebleu.__version__}))`,
    [pairsPath, String(repeat), tokenize],
  );
  if (ref) {
    console.log(`sacrebleu: ${ref.seconds.toFixed(3)} s  BLEU ${ref.score}  (sacrebleu ${ref.version})`);
    console.log(`|score difference| ${Math.abs(ref.score - ours.value.score)}`);
    console.log(`ratio: peftjs is ${(ref.seconds / ours.seconds).toFixed(1)}× faster than sacrebleu`);
  }
} else {
  console.log('sacrebleu: reference missing (python3 cannot import sacrebleu); the design notes record 9.7 s for 100k pairs on the device machine');
}
