"""PyTorch + HF PEFT reference for bench/gpu-train.mjs, on the same GPU in the same command.

Workloads (the same shapes, random init, random tokens):
  w1    SmolLM-135M-shaped LLaMA (hidden 576, 30 layers, 9 heads / 3 kv, intermediate 1536, vocab 49152, tied),
        LoRA r=8 alpha 16 on q_proj, v_proj, AdamW (lr 2e-4, wd 0.01), grad clip 1.0, batch 8 x 256
  qwen  Qwen2-0.5B-shaped (hidden 896, 24 layers, 14 heads / 2 kv, intermediate 4864, vocab 151936, tied), batch 4 x 256
  gen   greedy generation on the w1 model with LoRA unmerged: 64 new tokens after 32, batch 1 and 8
fp32 with TF32 off (torch.backends.cuda.matmul.allow_tf32 = False, cudnn too), SDPA attention (transformers' default).
Usage: python3 bench/gpu_train_torch.py [w1] [qwen] [gen] [--steps N]   -> one JSON line per workload.
"""
import json, sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from peft import LoraConfig, get_peft_model

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
args = sys.argv[1:]
steps = int(args[args.index('--steps') + 1]) if '--steps' in args else 10
work = [a for a in args if a in ('w1', 'qwen', 'gen')] or ['w1', 'qwen', 'gen']
dev = 'cuda'

W1 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
          num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act='silu',
          tie_word_embeddings=True)
QWEN = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=1000000.0, hidden_act='silu',
            tie_word_embeddings=True)


def build(kind):
    torch.manual_seed(0)
    if kind == 'qwen':
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN))
    else:
        model = LlamaForCausalLM(LlamaConfig(**W1))
    model = model.to(dev, torch.float32)
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=['q_proj', 'v_proj']))


def train(kind, B, T):
    model = build(kind)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    batches = [torch.randint(0, vocab, (B, T), generator=g).to(dev) for _ in range(steps + 2)]

    def step(ids):
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    for i in range(2):  # warm-up: kernels, allocator
        step(batches[i])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(batches[2 + i])
    last = loss.item()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    out = {'bench': 'gpu-train-torch', 'workload': kind, 'batch': f'{B}x{T}', 'steps': steps, 'meanStepMs': round(dt * 1000, 2),
           'tokensPerSecond': round(B * T / dt), 'peakBytes': torch.cuda.max_memory_allocated(),
           'peakReservedBytes': torch.cuda.max_memory_reserved(), 'lastLoss': last,
           'torch': torch.__version__, 'gpu': torch.cuda.get_device_name(0), 'attn': model.config._attn_implementation}
    del model, opt
    torch.cuda.empty_cache()
    return out


@torch.no_grad()
def generate():
    model = build('w1')
    model.eval()
    res = {'bench': 'gpu-generate-torch', 'workload': 'gen', 'newTokens': 64, 'promptTokens': 32, 'torch': torch.__version__}
    g = torch.Generator().manual_seed(2)
    for B in (1, 8):
        ids = torch.randint(0, model.config.vocab_size, (B, 32), generator=g).to(dev)
        kw = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)
        model.generate(input_ids=ids, **kw)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            model.generate(input_ids=ids, **kw)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / reps
        res[f'batch{B}TokensPerSecond'] = round(B * 64 / dt, 1)
    return res


for w in work:
    if w == 'w1':
        print(json.dumps(train('w1', 8, 256)), flush=True)
    elif w == 'qwen':
        print(json.dumps(train('qwen', 4, 256)), flush=True)
    else:
        print(json.dumps(generate()), flush=True)
