"""Extra reference figures for the evaluator tests, beyond fixtures/metrics/reference.json:
sacrebleu 2.6 (tokenize none, smoothing variants, effective order, two references per sentence,
chrF++, chrF with two references, sentence chrF, signatures) and ROUGE with two references
(torchmetrics' accumulate='best'), and rougeLsum from rouge-score when it is importable.

Usage: python3 evaluator_ref.py pairs.json out.json
Runs where sacrebleu (and torchmetrics) are installed: the device machine.
"""
import json
import sys

pairs = json.load(open(sys.argv[1], encoding='utf-8'))
hyps = [p['hyp'] for p in pairs]
refs = [p['ref'] for p in pairs]
refs2 = [p['ref2'] for p in pairs]
res = {}


def bleu_fig(b, metric=None):
    d = {'score': b.score, 'counts': list(b.counts), 'totals': list(b.totals), 'precisions': list(b.precisions),
         'bp': b.bp, 'sys_len': b.sys_len, 'ref_len': b.ref_len}
    if metric is not None:
        d['signature'] = str(metric.get_signature())
    return d


try:
    import sacrebleu
    from sacrebleu.metrics import BLEU, CHRF
    res['sacrebleu'] = sacrebleu.__version__
    cases = {
        'none': dict(tokenize='none'),
        'floor': dict(smooth_method='floor'),
        'floor_0.5': dict(smooth_method='floor', smooth_value=0.5),
        'add-k': dict(smooth_method='add-k'),
        'add-k_2': dict(smooth_method='add-k', smooth_value=2),
        'smooth_none': dict(smooth_method='none'),
        'effective_order': dict(effective_order=True),
        'intl_lowercase': dict(tokenize='intl', lowercase=True),
        'max_order_2': dict(max_ngram_order=2),
    }
    res['corpus_bleu'] = {}
    for name, kw in cases.items():
        m = BLEU(**kw)
        res['corpus_bleu'][name] = bleu_fig(m.corpus_score(hyps, [refs]), m)
    m = BLEU(tokenize='char')
    res['corpus_bleu']['char_2ref'] = bleu_fig(m.corpus_score(hyps, [refs, refs2]), m)
    # Variable number of references: the second one missing for every third sentence.
    refs2_var = [None if i % 3 == 0 else r for i, r in enumerate(refs2)]
    m = BLEU()
    res['corpus_bleu']['var_refs'] = bleu_fig(m.corpus_score(hyps, [refs, refs2_var]), m)
    res['sentence_bleu_2ref'] = [sacrebleu.sentence_bleu(h, [r, r2]).score for h, r, r2 in zip(hyps, refs, refs2)]
    res['sentence_bleu_floor'] = [sacrebleu.sentence_bleu(h, [r], smooth_method='floor').score for h, r in zip(hyps, refs)]
    res['sentence_bleu_add-k'] = [sacrebleu.sentence_bleu(h, [r], smooth_method='add-k').score for h, r in zip(hyps, refs)]
    res['sentence_bleu_char_lc'] = [sacrebleu.sentence_bleu(h, [r], tokenize='char', lowercase=True).score for h, r in zip(hyps, refs)]
    res['corpus_chrf'] = {}
    for name, kw, rs in [('chrf', {}, [refs]), ('chrf_2ref', {}, [refs, refs2]),
                         ('chrf++', dict(word_order=2), [refs]), ('chrf++_2ref', dict(word_order=2), [refs, refs2]),
                         ('chrf_lowercase', dict(lowercase=True), [refs]), ('chrf_whitespace', dict(whitespace=True), [refs]),
                         ('chrf_eps', dict(eps_smoothing=True), [refs]), ('chrf_beta1', dict(beta=1), [refs])]:
        m = CHRF(**kw)
        s = m.corpus_score(hyps, rs)
        res['corpus_chrf'][name] = {'score': s.score, 'name': s.name, 'signature': str(m.get_signature())}
    res['sentence_chrf'] = [sacrebleu.sentence_chrf(h, [r]).score for h, r in zip(hyps, refs)]
    res['sentence_chrf++'] = [sacrebleu.sentence_chrf(h, [r], word_order=2).score for h, r in zip(hyps, refs)]
except ImportError as e:
    res['sacrebleu_error'] = repr(e)

try:
    import torchmetrics
    from torchmetrics.text.rouge import ROUGEScore
    res['torchmetrics'] = torchmetrics.__version__
    rs = ROUGEScore(rouge_keys=('rouge1', 'rouge2', 'rougeL'))
    res['rouge_2ref_best'] = [{k: float(v) for k, v in rs(h, [r, r2]).items()} for h, r, r2 in zip(hyps, refs, refs2)]
    rs = ROUGEScore(rouge_keys=('rouge1', 'rouge2', 'rougeL'), accumulate='avg')
    res['rouge_2ref_avg'] = [{k: float(v) for k, v in rs(h, [r, r2]).items()} for h, r, r2 in zip(hyps, refs, refs2)]
except ImportError as e:
    res['torchmetrics_error'] = repr(e)

try:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        from rouge import rouge_scorer  # google-research layout
    # Multi-line texts: groups of three sentences joined by newlines.
    groups = [(('\n'.join(hyps[i:i + 3])), '\n'.join(refs[i:i + 3])) for i in range(0, len(hyps), 3)]
    res['rouge_lsum_groups'] = [{'hyp': h, 'ref': r} for h, r in groups]
    for stem in (False, True):
        sc = rouge_scorer.RougeScorer(['rouge1', 'rougeL', 'rougeLsum'], use_stemmer=stem)
        out = []
        for h, r in groups:
            s = sc.score(r, h)
            out.append({f'{k}_{f}': getattr(v, f) for k, v in s.items() for f in ('precision', 'recall', 'fmeasure')})
        res['rouge_lsum' + ('_stem' if stem else '')] = out
except ImportError as e:
    res['rouge_score_error'] = repr(e)

json.dump(res, open(sys.argv[2], 'w', encoding='utf-8'))
print('wrote', sys.argv[2], sorted(res.keys()))
