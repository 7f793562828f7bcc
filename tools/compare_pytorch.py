#!/usr/bin/env python3
"""linrec's RWKV-4 and RWKV-6 against the same models in PyTorch.

Reads a file written by `rwkv_grads --out` (the weights as train_rwkv checkpoints name them,
"model.<name>", plus one batch, its loss and every gradient), builds the identical model in
PyTorch (docs/models.md; weights stored [in, out], y = x W), and
  1. checks the loss and every parameter's gradient on that batch against linrec's, in float64
     and in float32 (relative error: max |a - b| / max |b| per tensor; the check is <= 1e-4);
  2. with --time-steps K, times K training steps (forward, backward, clip, AdamW) of PyTorch eager
     and of torch.compile at the file's shapes, and prints tokens/s.

Each WKV is PyTorch's best pure form we know: chunks of --chunk steps, inside a chunk the pairwise
form with cumulative log-decays (RWKV-6: every exponent <= 0, so strong decays cannot overflow;
RWKV-4: every weight relative to its row's largest exponent), across chunks one state update per
chunk. RWKV-LM's and flash-linear-attention's kernels are not used.

Only the Python standard library and PyTorch are needed (safetensors is read by hand).
"""
import argparse
import json
import struct
import sys
import time

import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    meta = header.pop("__metadata__", {})
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[base + start : base + end]), dtype=torch.float32).reshape(
            info["shape"]
        )
    return tensors, meta


def token_shift(x):
    return F.pad(x, (0, 0, 1, -1))  # y[:, 0] = 0, y[:, t] = x[:, t-1]


def wkv6(r, k, v, w, u, chunk):
    """y_t[i] = sum_j r_t[j] (u[j] k_t[j] v_t[i] + S_{t-1}[j,i]), S_t = d_t S_{t-1} + k_t v_t^T, d = exp(-exp(w))."""
    B, T, C = r.shape
    H, N = u.shape
    pad = (-T) % chunk
    heads = lambda x: x.view(B, T, H, N).transpose(1, 2)  # [B,H,T,N]
    r, k, v, lw = heads(r), heads(k), heads(v), -torch.exp(heads(w))
    if pad:  # padded steps: no key, no receptance, decay 1
        r, k, v, lw = (F.pad(x, (0, 0, 0, pad)) for x in (r, k, v, lw))
    n = (T + pad) // chunk
    r, k, v, lw = (x.reshape(B, H, n, chunk, N) for x in (r, k, v, lw))
    c = lw.cumsum(3)  # inclusive cumulative log-decay
    c_prev = c - lw  # exclusive
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=r.device).tril(-1)  # s < t
    diff = (c_prev.unsqueeze(4) - c.unsqueeze(3)).masked_fill(~lower[:, :, None], float("-inf"))
    A = (r.unsqueeze(4) * k.unsqueeze(3) * diff.exp()).sum(-1)  # [B,H,n,t,s]
    y = A @ v + (r * u.view(1, H, 1, 1, N) * k).sum(-1, keepdim=True) * v
    # chunk-start states: S_{m+1} = e^{c_end} S_m + sum_s e^{c_end - c_s} k_s v_s^T
    c_end = c[:, :, :, -1:, :]
    increments = (k * (c_end - c).exp()).transpose(-1, -2) @ v  # [B,H,n,N,N]
    decays = c_end.squeeze(3).exp().unsqueeze(-1)  # [B,H,n,N,1]
    r_in = r * c_prev.exp()
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device)
    inter = []
    for m in range(n):
        inter.append(r_in[:, :, m] @ S)
        S = decays[:, :, m] * S + increments[:, :, m]
    y = y + torch.stack(inter, 2)
    return y.reshape(B, H, n * chunk, N)[:, :, :T].transpose(1, 2).reshape(B, T, C)


def wkv4(w, u, k, v, chunk):
    """RWKV-4: y_t = (N_{t-1} + e^{u+k_t} v_t) / (D_{t-1} + e^{u+k_t}), N_t = e^{-w} N_{t-1} + e^{k_t} v_t (D: v = 1).

    Per chunk, the pairwise form in log space (every weight relative to its row's largest exponent);
    across chunks the states as (scale, exponent) pairs, as linrec keeps them."""
    B, T, C = k.shape
    pad = (-T) % chunk
    if pad:  # padded steps: after the last real one, their outputs are dropped
        k, v = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    n = (T + pad) // chunk
    k, v = k.view(B, n, chunk, C), v.view(B, n, chunk, C)
    pos = torch.arange(chunk, device=k.device, dtype=k.dtype)
    lag = (pos.view(-1, 1) - 1 - pos.view(1, -1)).view(chunk, chunk, 1)  # t - 1 - s
    lower = (lag >= 0)
    num_s = torch.zeros(B, C, dtype=k.dtype, device=k.device)
    den_s = torch.zeros_like(num_s)
    exp_state = torch.full_like(num_s, -1e38)  # an empty state
    outs = []
    for m in range(n):
        km, vm = k[:, m], v[:, m]  # [B,L,C]
        pair = (km.unsqueeze(1) - lag * w).masked_fill(~lower, float("-inf"))  # [B,t,s,C]
        bonus = u + km  # [B,L,C]
        state = exp_state.unsqueeze(1) - pos.view(1, -1, 1) * w  # the carried state seen at step t
        top = torch.maximum(torch.maximum(pair.amax(2), bonus), state)  # [B,L,C]
        weights = (pair - top.unsqueeze(2)).exp()
        e_bonus, e_state = (bonus - top).exp(), (state - top).exp()
        num = (weights * vm.unsqueeze(1)).sum(2) + e_bonus * vm + e_state * num_s.unsqueeze(1)
        den = weights.sum(2) + e_bonus + e_state * den_s.unsqueeze(1)
        outs.append(num / den)
        # the state after the chunk: e^{-L w} state + sum_s e^{k_s - (L-1-s) w} (v_s, 1)
        last = km - (chunk - 1 - pos.view(1, -1, 1)) * w
        carried = exp_state - chunk * w
        new_exp = torch.maximum(last.amax(1), carried)
        we = (last - new_exp.unsqueeze(1)).exp()
        ce = (carried - new_exp).exp()
        num_s = (we * vm).sum(1) + ce * num_s
        den_s = we.sum(1) + ce * den_s
        exp_state = new_exp
    return torch.cat(outs, 1)[:, :T]


class RWKV4Blocks:
    def time_mix(self, x, pre, chunk):
        w = lambda n: self.w(pre + n)
        shifted = token_shift(x)
        mix = lambda name: shifted + w(name) * (x - shifted)
        k = mix("time_mix_k") @ w("key.weight")
        v = mix("time_mix_v") @ w("value.weight")
        r = mix("time_mix_r") @ w("receptance.weight")
        y = wkv4(torch.exp(w("time_decay")), w("time_first"), k, v, chunk)
        return (torch.sigmoid(r) * y) @ w("output.weight")

    def channel_mix(self, x, pre):
        w = lambda n: self.w(pre + n)
        shifted = token_shift(x)
        mix = lambda name: shifted + w(name) * (x - shifted)
        k = torch.relu(mix("time_mix_k") @ w("key.weight")) ** 2
        r = torch.sigmoid(mix("time_mix_r") @ w("receptance.weight"))
        return r * (k @ w("value.weight"))


class RWKV(torch.nn.Module):
    def __init__(self, weights, config, dtype, device):
        super().__init__()
        self.cfg = config
        self.p = torch.nn.ParameterDict(
            {name[len("model.") :].replace(".", "/"): torch.nn.Parameter(t.to(device=device, dtype=dtype))
             for name, t in weights.items() if name.startswith("model.")}
        )

    def w(self, name):
        return self.p[name.replace(".", "/")]

    def time_mix(self, x, pre, chunk):
        if self.cfg["version"] == 4:
            return RWKV4Blocks.time_mix(self, x, pre, chunk)
        w = lambda n: self.w(pre + n)
        C, H = x.shape[-1], self.cfg["dim"] // self.cfg["head_size"]
        xx = token_shift(x) - x
        lora = torch.tanh((x + xx * w("time_maa_x")) @ w("time_maa_w1"))
        w2 = w("time_maa_w2")
        maa = [w("time_maa_w"), w("time_maa_k"), w("time_maa_v"), w("time_maa_r"), w("time_maa_g")]
        mixed = [x + xx * (maa[i] + lora[..., i * 32 : (i + 1) * 32] @ w2[i]) for i in range(5)]
        r = mixed[3] @ w("receptance.weight")
        k = mixed[1] @ w("key.weight")
        v = mixed[2] @ w("value.weight")
        g = F.silu(mixed[4] @ w("gate.weight"))
        dec = w("time_decay") + torch.tanh(mixed[0] @ w("time_decay_w1")) @ w("time_decay_w2")
        y = wkv6(r, k, v, dec, w("time_faaaa"), chunk)
        B, T, _ = y.shape
        y = F.group_norm(y.reshape(B * T, C), H, w("ln_x.weight"), w("ln_x.bias"), eps=1e-5 * 64).view(B, T, C)
        return (y * g) @ w("output.weight")

    def channel_mix(self, x, pre):
        if self.cfg["version"] == 4:
            return RWKV4Blocks.channel_mix(self, x, pre)
        w = lambda n: self.w(pre + n)
        xx = token_shift(x) - x
        k = torch.relu((x + xx * w("time_maa_k")) @ w("key.weight")) ** 2
        r = torch.sigmoid((x + xx * w("time_maa_r")) @ w("receptance.weight"))
        return r * (k @ w("value.weight"))

    def forward(self, ids, targets, chunk):
        C = self.cfg["dim"]
        ln = lambda x, n: F.layer_norm(x, (C,), self.w(n + ".weight"), self.w(n + ".bias"), 1e-5)
        x = ln(F.embedding(ids, self.w("emb.weight")), "blocks.0.ln0")
        for l in range(self.cfg["layers"]):
            b = f"blocks.{l}."
            x = x + self.time_mix(ln(x, b + "ln1"), b + "att.", chunk)
            x = x + self.channel_mix(ln(x, b + "ln2"), b + "ffn.")
        logits = ln(x, "ln_out") @ self.w("head.weight")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def relative_error(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    scale = b.abs().max().item()
    err = (a - b).abs().max().item()
    return err / scale if scale > 0 else err


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="written by rwkv_grads --out")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--chunk", type=int, default=32, help="WKV chunk length")
    ap.add_argument("--time-steps", type=int, default=0, help="time this many training steps (eager and compiled)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    tensors, meta = load_safetensors(args.file)
    cfg = json.loads(meta["config"])
    ids = tensors["batch.ids"].long().to(args.device)
    targets = tensors["batch.targets"].long().to(args.device)
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
          + f"; RWKV-{cfg['version']} dim {cfg['dim']} layers {cfg['layers']} head {cfg['head_size']}, batch {cfg['batch']} x ctx {cfg['ctx']}")

    worst_all = 0.0
    for dtype in (torch.float64, torch.float32):
        model = RWKV(tensors, cfg, dtype, args.device)
        loss = model(ids, targets, args.chunk)
        loss.backward()
        loss_err = abs(loss.item() - tensors["loss"].item()) / abs(loss.item())
        worst, worst_name = loss_err, "loss"
        for key, param in model.p.items():
            name = key.replace("/", ".")
            err = relative_error(tensors["grad." + name], param.grad)
            if err > worst:
                worst, worst_name = err, "grad " + name
        print(f"{str(dtype):14s} loss {loss.item():.7f} (linrec {tensors['loss'].item():.7f}, rel {loss_err:.2e}); "
              f"{len(model.p)} gradients; largest relative error {worst:.2e} ({worst_name})")
        worst_all = max(worst_all, worst)
    ok = worst_all <= args.tolerance
    print(f"gradient check: {'PASS' if ok else 'FAIL'} (largest {worst_all:.2e}, tolerance {args.tolerance:g})")

    if args.time_steps > 0:
        tokens = ids.numel()
        for mode in ["eager"] + ([] if args.no_compile else ["compile"]):
            model = RWKV(tensors, cfg, torch.float32, args.device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
            fn = model if mode == "eager" else torch.compile(model)

            def step():
                loss = fn(ids, targets, args.chunk)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss

            start = time.perf_counter()
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            warm = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.time_steps):
                last = step().item()  # one sync per step, as linrec's trainer reads each loss
            seconds = time.perf_counter() - start
            print(json.dumps({"pytorch": mode, "steps": args.time_steps, "seconds": round(seconds, 6),
                              "tokens_per_second": round(args.time_steps * tokens / seconds, 1),
                              "warmup_seconds": round(warm, 2), "loss": round(last, 6)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
