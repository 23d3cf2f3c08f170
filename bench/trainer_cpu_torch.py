"""PyTorch + HF PEFT reference for bench/trainer-cpu.mjs: the same model (packages/tiny-llama/model), LoRA r=8
(alpha 16) on q_proj, v_proj, torch.optim.AdamW, batch 8 x 128 random tokens, fp32 on the CPU.
Usage: python3 bench/trainer_cpu_torch.py [threads ...]   (default: 1 2)  -> one JSON line per thread count."""
import json, sys, time, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

B, T, STEPS = 8, 128, 5
for threads in [int(a) for a in sys.argv[1:]] or [1, 2]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained('packages/tiny-llama/model', torch_dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=['q_proj', 'v_proj']))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.01)
    ids = torch.randint(0, model.config.vocab_size, (B, T))
    times = []
    for s in range(STEPS + 1):
        t = time.perf_counter()
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
    mean = sum(times[1:]) / STEPS
    print(json.dumps({'bench': 'trainer-cpu-torch', 'threads': threads, 'torch': torch.__version__, 'stepMs': [round(x * 1000) for x in times[1:]],
                      'meanStepMs': round(mean * 1000), 'tokensPerSecond': round(B * T / mean), 'attn': model.config._attn_implementation}))
