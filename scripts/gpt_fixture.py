"""The byte-level decoder's forward pass in numpy (float64), an implementation independent of
repflow's candle one: random nanoGPT-named weights of a tiny shape, two rows of bytes, every
hidden state, the logits and the loss. Writes tests/fixtures/gpt-tiny/{config.json,
model.safetensors, expected.json}; tests/language.rs checks repflow against it to 1e-4.

    python3 scripts/gpt_fixture.py
"""

import json
import math
import pathlib

import numpy as np
from safetensors.numpy import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gpt-tiny"
CONFIG = {"vocab_size": 256, "n_positions": 16, "n_embd": 24, "n_layer": 2, "n_head": 3}


def weights(rng):
    d, v, p = CONFIG["n_embd"], CONFIG["vocab_size"], CONFIG["n_positions"]
    w = {
        "transformer.wte.weight": rng.normal(0, 0.3, (v, d)),
        "transformer.wpe.weight": rng.normal(0, 0.3, (p, d)),
        "transformer.ln_f.weight": 1 + rng.normal(0, 0.1, d),
        "transformer.ln_f.bias": rng.normal(0, 0.1, d),
    }
    for layer in range(CONFIG["n_layer"]):
        h = f"transformer.h.{layer}."
        for name, (rows, cols) in {
            "attn.c_attn": (3 * d, d),
            "attn.c_proj": (d, d),
            "mlp.c_fc": (4 * d, d),
            "mlp.c_proj": (d, 4 * d),
        }.items():
            w[h + name + ".weight"] = rng.normal(0, 1 / math.sqrt(cols), (rows, cols))
            w[h + name + ".bias"] = rng.normal(0, 0.1, rows)
        for ln in ("ln_1", "ln_2"):
            w[h + ln + ".weight"] = 1 + rng.normal(0, 0.1, d)
            w[h + ln + ".bias"] = rng.normal(0, 0.1, d)
    # float32 as stored; the reference computes in float64 from exactly these values
    return {k: v.astype(np.float32) for k, v in w.items()}


def layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def forward(w, ids):
    w = {k: v.astype(np.float64) for k, v in w.items()}
    d, heads = CONFIG["n_embd"], CONFIG["n_head"]
    dh = d // heads
    b, t = ids.shape
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][:t]
    states = [x]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for layer in range(CONFIG["n_layer"]):
        h = f"transformer.h.{layer}."
        lin = lambda name, z: z @ w[h + name + ".weight"].T + w[h + name + ".bias"]
        a = layer_norm(x, w[h + "ln_1.weight"], w[h + "ln_1.bias"])
        q, k, v = np.split(lin("attn.c_attn", a), 3, axis=-1)
        split = lambda z: z.reshape(b, t, heads, dh).transpose(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        p = s / s.sum(-1, keepdims=True)
        ctx = (p @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + lin("attn.c_proj", ctx)
        f = lin("mlp.c_proj", gelu(lin("mlp.c_fc", layer_norm(x, w[h + "ln_2.weight"], w[h + "ln_2.bias"]))))
        x = x + f
        states.append(x)
    logits = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]) @ w["transformer.wte.weight"].T
    return states, logits


def main():
    rng = np.random.RandomState(7)
    w = weights(rng)
    texts = ["\na small cat sat", "\nthe dog ran far"]
    ids = np.array([list(t.encode()) for t in texts], dtype=np.int64)
    states, logits = forward(w, ids)
    # the loss of the rows as (input, next byte) pairs, as Gpt::loss takes them
    _, next_logits = forward(w, ids[:, :-1])
    z = next_logits - next_logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    target = ids[:, 1:]
    loss = -np.take_along_axis(logp, target[..., None], -1).mean()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    save_file(w, str(OUT / "model.safetensors"))
    (OUT / "expected.json").write_text(
        json.dumps(
            {
                "ids": ids.tolist(),
                "states": [s.tolist() for s in states],
                "logits": logits.tolist(),
                "loss": float(loss),
            }
        )
    )
    print(f"wrote {OUT}: {len(states)} states, loss {loss:.6f}")


if __name__ == "__main__":
    main()
