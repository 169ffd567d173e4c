"""Shared helpers of the encoding benchmarks: random Qwen2-shaped models, real input texts, FLOPs.

* ``ensure_model(name_or_dir)`` returns a model directory: an existing one, or a random-weight
  Qwen2-shaped bidirectional model written once (``PRESETS``) under ``benchmarks/.cache`` with a
  byte-level BPE trained on the benchmark text, saved by ``Embedder.save`` so that both
  ``Embedder.load`` and ``sentence_transformers.SentenceTransformer`` load it.
* ``text_pools()`` returns short and long real texts: ``data/corpus/*.jsonl`` (``make data``) when
  present, else docstrings and sources of the installed Python standard library.
* ``forward_flops(config, lengths)`` counts the useful forward FLOPs of encoding texts of the given
  token lengths (matmuls + attention scores; padding never counts).
"""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2Model

from diffembed.model.embedder import Embedder
from diffembed.model.model_dir import ModelDir
from diffembed.model.tokenizer import load_tokenizer, train_bpe_tokenizer

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
CORPUS = ROOT / "data" / "corpus"

# Random-weight Qwen2-shaped models (bidirectional, GQA, rope theta 1e6 like Qwen2.5). Not the
# LM presets of diffembed.train.pretrain (Llama-shaped, no GQA, rope theta 1e4): "base" is the
# "gpu" LM's 12 x 768 but with 4 KV heads, "small" has twice the "cpu" LM's width; deriving them
# from those would change the models the benchmark results were measured on.
PRESETS: dict[str, dict[str, int]] = {
    "small": dict(
        num_hidden_layers=4,
        hidden_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=1024,
        vocab_size=8192,
    ),
    "base": dict(
        num_hidden_layers=12,
        hidden_size=768,
        num_attention_heads=12,
        num_key_value_heads=4,
        intermediate_size=3072,
        vocab_size=8192,
    ),
    # Qwen2.5-0.5B's shape (494M parameters with its full vocabulary), for GPU runs.
    "qwen0.5b": dict(
        num_hidden_layers=24,
        hidden_size=896,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
    ),
}
SHORT_SOURCES = ("gcide", "wordnet", "foldoc", "jargon")
LONG_SOURCES = (
    "manpages",
    "manpages-dev",
    "python-doc",
    "linux-doc",
    "postgresql-doc",
    "perl-doc",
    "sqlite-doc",
    "vim-doc",
    "debian-handbook",
    "debian-reference",
)


@dataclass
class TextPools:
    """Real texts to draw benchmark inputs from, and where they came from."""

    short: list[str]
    long: list[str]
    origin: str


def text_pools(max_long: int = 3000) -> TextPools:
    """Short texts (definitions) and long ones (documents) from ``data/corpus`` or the stdlib."""
    short: list[str] = []
    long: list[str] = []
    files = [CORPUS / f for f in ("eval.jsonl", "finetune.jsonl") if (CORPUS / f).exists()]
    for file in files:
        with file.open(encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                if doc["source"] in SHORT_SOURCES:
                    short.append(doc["text"])
                elif doc["source"] in LONG_SOURCES and len(long) < max_long:
                    long.append(doc["text"])
    if len(short) >= 5000 and len(long) >= 200:
        return TextPools(short, long, f"data/corpus ({', '.join(f.name for f in files)})")
    return _stdlib_pools(max_long)


def _stdlib_pools(max_long: int) -> TextPools:
    """Docstrings (short) and module sources (long) of the installed Python standard library."""
    short: list[str] = []
    long: list[str] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        if len(long) < max_long and len(source) > 2000:
            long.append(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 30:
                    short.append(doc.split("\n\n")[0].strip())
    return TextPools(short, long, f"Python standard library sources ({stdlib})")


def _slice(text: str, offsets: list[tuple[int, int]], start: int, n: int) -> str:
    """The text covered by tokens ``start .. start+n-1`` (by character offsets)."""
    return text[offsets[start][0] : offsets[min(start + n, len(offsets)) - 1][1]]


def build_sets(
    tokenizer: PreTrainedTokenizerBase,
    pools: TextPools,
    sets: Sequence[str] = ("a", "b", "c"),
    scale: float = 1.0,
    seed: int = 0,
) -> dict[str, list[str]]:
    """The benchmark inputs, in tokens of ``tokenizer``.

    ``a``: 5,000 short texts of 10-60 tokens; ``b``: 2,000 texts of 20-2,000 tokens, lengths
    log-uniform (long-tailed), cut from documents; ``c``: 100 documents of 4k-8k tokens (documents
    joined until long enough). ``scale`` multiplies the counts (for quick runs).
    """
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    if "a" in sets:
        n = max(1, round(5000 * scale))
        cand = rng.sample(pools.short, min(len(pools.short), 4 * n))
        lengths = [len(x) for x in tokenizer(cand, add_special_tokens=True)["input_ids"]]
        out["a"] = [t for t, k in zip(cand, lengths, strict=True) if 10 <= k <= 60][:n]
    long_docs = list(pools.long)
    rng.shuffle(long_docs)
    cache: dict[int, list[tuple[int, int]]] = {}

    def offsets_of(i: int) -> list[tuple[int, int]]:
        if i not in cache:
            enc = tokenizer(
                long_docs[i][:200_000], add_special_tokens=False, return_offsets_mapping=True
            )
            cache[i] = enc["offset_mapping"]
        return cache[i]

    if "b" in sets:
        n = max(1, round(2000 * scale))
        texts = []
        while len(texts) < n:
            want = int(round(20 * 100 ** rng.random())) - 1  # log-uniform 20..2000 (+ BOS)
            i = rng.randrange(min(len(long_docs), 400))
            offsets = offsets_of(i)
            if len(offsets) < 40:
                continue
            want = min(want, len(offsets))
            start = rng.randrange(0, len(offsets) - want + 1)
            texts.append(_slice(long_docs[i], offsets, start, want))
        out["b"] = texts
    if "c" in sets:
        n = max(1, round(100 * scale))
        texts = []
        for _ in range(n):
            want = rng.randint(4096, 8192) - 1
            parts: list[str] = []
            while sum(len(x) for x in parts) < 8 * want:  # ~3-5 characters a token
                parts.append(long_docs[rng.randrange(len(long_docs))][:100_000])
            joined = "\n\n".join(parts)
            offsets = tokenizer(joined, add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"
            ]
            start = rng.randrange(0, max(1, len(offsets) - want))
            texts.append(_slice(joined, offsets, start, want))
        out["c"] = texts
    return out


def document_of(tokenizer: PreTrainedTokenizerBase, pools: TextPools, n_tokens: int) -> str:
    """One text of about ``n_tokens`` tokens (special tokens included): documents joined."""
    parts: list[str] = []
    i = 0
    while sum(len(x) for x in parts) < 8 * n_tokens:
        parts.append(pools.long[i % len(pools.long)])
        i += 1
    joined = "\n\n".join(parts)
    offsets = tokenizer(joined, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    return _slice(joined, offsets, 0, n_tokens - 1)


def ensure_model(name_or_dir: str, max_length: int = 8192) -> Path:
    """A model directory: ``name_or_dir`` itself, or the cached random model of that preset."""
    if name_or_dir not in PRESETS:
        path = Path(name_or_dir)
        if not ModelDir(path).has("config.json"):
            raise SystemExit(f"{path}: not a model directory and not one of {sorted(PRESETS)}")
        return path
    out = CACHE / f"qwen2-{name_or_dir}"
    if ModelDir(out).is_ours:
        return out
    sizes = PRESETS[name_or_dir]
    pools = text_pools(max_long=600)
    sample = pools.short[:20000] + [t[:20000] for t in pools.long[:600]]
    tok = train_bpe_tokenizer(sample, vocab_size=min(8192, sizes["vocab_size"]))
    config = Qwen2Config(
        **sizes,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    config.is_causal = False
    torch.manual_seed(0)
    staging = CACHE / f".staging-{name_or_dir}"
    model = Qwen2Model(config).eval()
    model.save_pretrained(staging)
    tok.save_pretrained(staging)
    # AutoTokenizer resolves qwen2 directories to Qwen2Tokenizer: embed with what loads back.
    emb = Embedder(model, load_tokenizer(staging), max_length=max_length)
    emb.save(out)
    for f in staging.iterdir():
        f.unlink()
    staging.rmdir()
    return out


def body_params(config: Qwen2Config) -> int:
    """Matmul parameters of the transformer body (no embedding table, no LM head)."""
    h, nh, kvh = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or h // nh
    per_layer = h * nh * hd + 2 * h * kvh * hd + nh * hd * h + 3 * h * config.intermediate_size
    return config.num_hidden_layers * per_layer


def forward_flops(config: Qwen2Config, lengths: Sequence[int]) -> float:
    """Useful forward FLOPs of encoding texts of ``lengths`` tokens (each attending to itself).

    Per token: 2 x body matmul parameters, plus 4 x layers x L x (heads x head_dim) for QK^T
    and AV over its own text of L tokens. Pads and the LM head are never counted.
    """
    nh = config.num_attention_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // nh
    body = 2.0 * body_params(config)
    attn = 4.0 * config.num_hidden_layers * nh * hd
    return float(sum(n * (body + attn * n) for n in lengths))


def device_name(device: torch.device) -> str:
    """A readable name of the device the benchmark ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
