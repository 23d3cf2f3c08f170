"""Reference outputs of HF transformers for this package's tests (run where transformers is installed):
    python3 packages/models/test-data/hf_reference.py packages/models/test-data/hf_reference.json
- the tiny byte-level BPE tokenizer (tiny-bpe/) through PreTrainedTokenizerFast: encode, batch padding,
  truncation, decode;
- greedy generation of the fixture base models from a left-padded batch (HF derives position ids from
  the attention mask in generate, and stops rows at eos)."""
import json, os, sys
import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from safetensors.torch import load_file

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, '..', '..', '..'))
out = {'transformers': transformers.__version__, 'torch': torch.__version__}

tok = PreTrainedTokenizerFast.from_pretrained(os.path.join(here, 'tiny-bpe'))
texts = ['The quick brown fox.', "It's the model's weights", 'héllo wörld 😀 2024!', 'hi</s><pad>',
         '  two  spaces\nnew line\ttab', 'The lazy dog sleeps; the fox runs away.']
out['tokenizer'] = {
    'texts': texts,
    'encode': [tok(t)['input_ids'] for t in texts],
    'encode_no_special': [tok(t, add_special_tokens=False)['input_ids'] for t in texts],
    'decode_skip': [tok.decode(tok(t)['input_ids'], skip_special_tokens=True) for t in texts],
    'batch_left': tok(texts[:3], padding=True)['input_ids'],
    'batch_left_mask': tok(texts[:3], padding=True)['attention_mask'],
    'batch_right_trunc': tok(texts, padding=True, truncation=True, max_length=6, padding_side='right')['input_ids'],
    'batch_right_trunc_mask': tok(texts, padding=True, truncation=True, max_length=6, padding_side='right')['attention_mask'],
    'pad_token_id': tok.pad_token_id, 'eos_token_id': tok.eos_token_id, 'bos_token_id': tok.bos_token_id,
}

gens = {}
for case in ['llama_lora_qv', 'qwen2_lora', 'gpt2_lora_cattn']:
    d = os.path.join(root, 'fixtures', 'hf-peft', case)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(d, 'base')).eval()
    t = load_file(os.path.join(d, 'tensors.safetensors'))
    ids, mask = t['input_ids'], t['attention_mask']
    with torch.no_grad():
        # eos disabled so every row runs its full length; pad id 0 for the left padding
        g = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    gens[case] = {'input_ids': ids.tolist(), 'attention_mask': mask.tolist(), 'max_new_tokens': 8, 'generated': g.tolist()}
out['generate'] = gens

with open(sys.argv[1], 'w') as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
print('wrote', sys.argv[1])
