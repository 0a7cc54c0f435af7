"""The Rust sentence encoder (`moe_vla embed`) against a reference computation: a NumPy BERT forward
pass (float64) over the same safetensors, with a pure-Python WordPiece tokenizer, mean-pooled over
the attention mask and L2-normalised as sentence-transformers does. Needs the encoder that
scripts/setup.sh downloads and installs: a missing one fails the test, it is never skipped."""

import json
import os
import struct
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
NAME = "all-MiniLM-L6-v2"

INSTRUCTIONS = [
    "go to the red ball",
    "walk towards the blue cube",
    "crawl under the bar",
    "stop",
    "Please, saunter over to the VERMILION orb!",
    "navigate past the obstacle and reach the purple cone",
    "café: duck beneath the low bar (carefully)",
    "stay put -- do not move an inch",
]


def binary() -> Path:
    path = Path(os.environ.get("MOE_VLA_BIN_DIR") or ROOT / "install/moe_vla/lib/moe_vla") / "moe_vla"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run scripts/setup.sh")
    return path


def encoder_dir() -> Path:
    """The first of the places moe_vla searches that holds the encoder."""
    candidates = []
    if os.environ.get("MOE_VLA_ENCODERS"):
        candidates.append(Path(os.environ["MOE_VLA_ENCODERS"]) / NAME)
    candidates.append(binary().parents[2] / "share/moe_vla/encoders" / NAME)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    candidates.append(cache / "moe_vla/encoders" / NAME)
    for c in candidates:
        if (c / "model.safetensors").is_file():
            return c
    raise RuntimeError(f"{NAME} is not installed (searched {candidates}): run scripts/setup.sh")


def rust_embed(texts) -> list:
    out = subprocess.run(
        [str(binary()), "embed", "--token-states", "--encoder-dir", str(encoder_dir()), *texts],
        capture_output=True, text=True, check=True, timeout=300,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def read_safetensors(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    dtypes = {"F32": np.float32, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return tensors


class WordPiece:
    """BERT's uncased tokenizer: clean, lower-case, strip accents, split on spaces and punctuation,
    then greedy longest-match word pieces; [CLS] ... [SEP]."""

    def __init__(self, tokenizer_json: Path):
        spec = json.loads(tokenizer_json.read_text())
        self.vocab = spec["model"]["vocab"]
        self.max_chars = spec["model"]["max_input_chars_per_word"]

    @staticmethod
    def is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    def words(self, text: str) -> list:
        text = "".join(" " if ch.isspace() else ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf") or ch in "\t\n\r")
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        out = []
        for word in text.split():
            current = ""
            for ch in word:
                if self.is_punct(ch):
                    if current:
                        out.append(current)
                    out.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                out.append(current)
        return out

    def pieces(self, word: str) -> list:
        if len(word) > self.max_chars:
            return [self.vocab["[UNK]"]]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = ("##" if start else "") + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.vocab["[UNK]"]]
            start = end
        return ids

    def __call__(self, text: str) -> list:
        ids = [i for w in self.words(text) for i in self.pieces(w)]
        return [self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]]


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import erf, sqrt

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


def bert_forward(t: dict, cfg: dict, ids: list) -> np.ndarray:
    """Last-layer token states [L, H] in float64."""
    g = {k: v.astype(np.float64) for k, v in t.items() if v.dtype == np.float32}
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    n = len(ids)
    x = g["embeddings.word_embeddings.weight"][ids] + g["embeddings.position_embeddings.weight"][:n]
    x = x + g["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, g["embeddings.LayerNorm.weight"], g["embeddings.LayerNorm.bias"], eps)
    lin = lambda x, p: x @ g[p + ".weight"].T + g[p + ".bias"]  # noqa: E731
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        hd = x.shape[1] // heads
        split = lambda y: y.reshape(n, heads, hd).transpose(1, 0, 2)  # noqa: E731
        q, k, v = (split(lin(x, p + f"attention.self.{m}")) for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
        x = layer_norm(lin(ctx, p + "attention.output.dense") + x, g[p + "attention.output.LayerNorm.weight"], g[p + "attention.output.LayerNorm.bias"], eps)
        ff = lin(gelu(lin(x, p + "intermediate.dense")), p + "output.dense")
        x = layer_norm(ff + x, g[p + "output.LayerNorm.weight"], g[p + "output.LayerNorm.bias"], eps)
    return x


def sentence_embedding(states: np.ndarray) -> np.ndarray:
    # One unpadded sentence: the mask is all ones.
    mean = states.mean(0)
    return mean / max(np.linalg.norm(mean), 1e-12)


@pytest.fixture(scope="module")
def rust():
    return {r["instruction"]: r for r in rust_embed(INSTRUCTIONS)}


def test_rust_embedding_equals_numpy_reference(rust):
    d = encoder_dir()
    tensors = read_safetensors(d / "model.safetensors")
    cfg = json.loads((d / "config.json").read_text())
    tokenize = WordPiece(d / "tokenizer.json")
    worst_embedding = worst_state = 0.0
    for text in INSTRUCTIONS:
        r = rust[text]
        assert r["ids"] == tokenize(text), text
        states = bert_forward(tensors, cfg, r["ids"])
        worst_state = max(worst_state, float(np.abs(np.array(r["token_states"]) - states).max()))
        diff = float(np.abs(np.array(r["embedding"]) - sentence_embedding(states)).max())
        worst_embedding = max(worst_embedding, diff)
        assert diff < 1e-4, f"{text!r}: embedding differs by {diff}"
        assert abs(np.linalg.norm(r["embedding"]) - 1.0) < 1e-5
    print(f"max abs diff: embedding {worst_embedding:.2e}, token states {worst_state:.2e}")
    assert worst_state < 1e-3


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_paraphrases_are_closer_than_unrelated_instructions():
    # (instruction, paraphrase, unrelated instruction)
    triples = [
        ("go to the red ball", "walk over to the red ball", "crawl under the bar"),
        ("crawl under the bar", "duck beneath the bar", "go to the red ball"),
        ("stop", "halt", "go through the doorway"),
        ("go through the doorway", "pass through the door", "stand still"),
        ("go to the blue cube and avoid the obstacle", "head for the blue cube, going around the obstacle", "stop"),
    ]
    texts = sorted({t for triple in triples for t in triple})
    e = {r["instruction"]: np.array(r["embedding"]) for r in rust_embed(texts)}
    for anchor, paraphrase, unrelated in triples:
        close, far = cosine(e[anchor], e[paraphrase]), cosine(e[anchor], e[unrelated])
        print(f"{anchor!r}: paraphrase {close:.3f}, unrelated {far:.3f}")
        assert close > far + 0.1, (anchor, close, far)
