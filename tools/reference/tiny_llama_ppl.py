"""HF reference for perplexity on peftjs-tiny-llama: the texts in fixtures/tiny-llama/ppl_texts.json, each
tokenized (no special tokens), scored with labels = input ids (HF shifts them inside the model). Writes the
summed NLL and predicted-token count of each text and the token-weighted perplexity over all of them.
Usage (GPU machine): python3 tools/reference/tiny_llama_ppl.py"""
import json, math, os, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
root = os.path.join(os.path.dirname(__file__), '..', '..')
mdir = os.path.join(root, 'packages', 'tiny-llama', 'model')
fx = os.path.join(root, 'fixtures', 'tiny-llama')
texts = json.load(open(os.path.join(fx, 'ppl_texts.json')))
tok = AutoTokenizer.from_pretrained(mdir)
model = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32).eval()
rows = []
with torch.no_grad():
    for t in texts:
        ids = torch.tensor([tok(t, add_special_tokens=False)['input_ids']])
        logits = model(input_ids=ids).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits.double(), ids[0, 1:], reduction='sum').item()
        rows.append({'nll': nll, 'tokens': ids.shape[1] - 1})
total = sum(r['nll'] for r in rows); n = sum(r['tokens'] for r in rows)
json.dump({'per_text': rows, 'perplexity': math.exp(total / n)}, open(os.path.join(fx, 'ppl_reference.json'), 'w'), indent=1)
print('perplexity', math.exp(total / n), rows)
