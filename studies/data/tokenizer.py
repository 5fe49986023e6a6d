"""Tokenizers (Hugging Face ``tokenizers``): train a byte-level BPE, load a tokenizer.json, or load a
pretrained tokenizer from a hub folder.

Byte-level BPE (GPT-2, Radford et al. 2019) is lossless on any UTF-8 text, so packed shards decode
back to exactly the documents that went in. The special tokens are part of the vocabulary: a trained
tokenizer puts pad, bos, eos, mask at ids 0, 1, 2, 3; the mask token is the "M" of the
masked-diffusion forward process (LLaDA, Nie et al. 2025, Sec. 2.1).

Special tokens of a pretrained tokenizer: for each of pad, bos, eos and mask, a config value that is
not the schema's default wins (LLaDA's grid sets ``mask_token: "<|mdm_mask|>"``, which its vocabulary
holds but its tokenizer_config.json does not name); else the token that the folder's
``tokenizer_config.json`` names (``bos_token`` etc., a string or ``{"content": ...}``), else the one
its ``special_tokens_map.json`` names, else the schema's default. A loaded tokenizer keeps its own
ids; tokens missing from its vocabulary are added at its end, in the order pad, bos, eos, mask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional

from .config import TokenizerConfig

SPECIAL_NAMES = ("pad", "bos", "eos", "mask")
# The files of a tokenizer in the hub's format that preparation reads (the first is required).
PRETRAINED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def special_tokens(cfg: TokenizerConfig) -> Dict[str, str]:
    """The config's special token strings (those of a trained or tokenizer.json tokenizer)."""
    return {"pad": cfg.pad_token, "bos": cfg.bos_token, "eos": cfg.eos_token, "mask": cfg.mask_token}


def train_bpe(texts: Iterable[str], cfg: TokenizerConfig):
    """Train a byte-level BPE with ``cfg.vocab_size`` entries (special tokens included)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[special_tokens(cfg)[k] for k in SPECIAL_NAMES],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_batches(texts), trainer=trainer)
    return tokenizer


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[List[str]]:
    batch: List[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _with_special_tokens(tokenizer, tokens: Dict[str, str]):
    from tokenizers import AddedToken

    missing = list(dict.fromkeys(t for t in tokens.values() if tokenizer.token_to_id(t) is None))
    if missing:
        tokenizer.add_special_tokens([AddedToken(t, special=True) for t in missing])
    return tokenizer


def load_tokenizer(path: str, cfg: TokenizerConfig):
    """Load ``path`` (a tokenizer.json) and make sure the config's four special tokens exist in it."""
    from tokenizers import Tokenizer

    if not Path(path).is_file():
        raise FileNotFoundError(f"data.tokenizer.path={path!r} does not exist; give a tokenizer.json file")
    return _with_special_tokens(Tokenizer.from_file(str(path)), special_tokens(cfg))


# ---- pretrained tokenizers (the hub's folder format) -----------------------------------------------

def _looks_like_path(name: str) -> bool:
    """A hub repository id is ``name`` or ``owner/name``; anything else is meant as a local folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def pretrained_is_local(cfg: TokenizerConfig) -> bool:
    """Whether ``cfg.pretrained`` names a local folder (else a hub repository id)."""
    name = cfg.pretrained
    if Path(os.path.expanduser(name)).is_dir():
        return True
    if _looks_like_path(name):
        raise FileNotFoundError(
            f"data.tokenizer.pretrained={name!r} is not a folder; give a folder holding tokenizer.json "
            "(and optionally tokenizer_config.json / special_tokens_map.json) or a hub id such as 'gpt2'"
        )
    return False


def pretrained_folder(cfg: TokenizerConfig) -> Path:
    """The local folder of ``cfg.pretrained``: itself, or its hub snapshot (downloaded into the Hugging
    Face cache, tokenizer files only)."""
    if pretrained_is_local(cfg):
        folder = Path(os.path.expanduser(cfg.pretrained))
    else:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(cfg.pretrained, revision=cfg.revision, allow_patterns=list(PRETRAINED_FILES)))
        except Exception as error:  # offline, unknown repo, gated repo: say what was asked for
            raise OSError(
                f"could not fetch the tokenizer of hub repository {cfg.pretrained!r} (revision "
                f"{cfg.revision or 'main'}): {type(error).__name__}: {error}"
            ) from error
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"data.tokenizer.pretrained={cfg.pretrained!r}: {folder} holds no tokenizer.json (the fast tokenizer "
            "file of the hub's format); a tokenizer that ships only a sentencepiece model must be converted first"
        )
    return folder


def _token_string(value) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def declared_special_tokens(folder: Path) -> Dict[str, str]:
    """The special tokens a hub-format folder names: tokenizer_config.json first, then
    special_tokens_map.json for those it leaves out."""
    declared: Dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = Path(folder) / name
        if not file.is_file():
            continue
        with open(file) as f:
            entries = json.load(f)
        for key in SPECIAL_NAMES:
            token = _token_string(entries.get(f"{key}_token"))
            if token is not None:
                declared.setdefault(key, token)
    return declared


def resolve_special_tokens(cfg: TokenizerConfig, declared: Dict[str, str]) -> Dict[str, str]:
    """A config value that is not the schema's default, else the tokenizer's own, else the default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TokenizerConfig)}
    resolved = {}
    for key, value in special_tokens(cfg).items():
        resolved[key] = value if value != defaults[f"{key}_token"] else declared.get(key, value)
    return resolved


def load_pretrained(cfg: TokenizerConfig):
    """(tokenizer, special token strings, {"pretrained", "revision", "commit"}) of ``cfg.pretrained``."""
    from tokenizers import Tokenizer

    folder = pretrained_folder(cfg)
    tokens = resolve_special_tokens(cfg, declared_special_tokens(folder))
    tokenizer = _with_special_tokens(Tokenizer.from_file(str(folder / "tokenizer.json")), tokens)
    local = pretrained_is_local(cfg)
    # A hub snapshot lives in .../snapshots/<commit>/: the commit pins what "main" meant at the time.
    commit = None if local else folder.name
    return tokenizer, tokens, {"pretrained": cfg.pretrained, "revision": cfg.revision, "commit": commit}


def special_ids(tokenizer, tokens: Dict[str, str]) -> Dict[str, int]:
    ids = {name: tokenizer.token_to_id(tok) for name, tok in tokens.items()}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    return ids


def tokenizer_hash(tokenizer) -> str:
    """SHA-256 of the serialized tokenizer: shards are only valid with the tokenizer that made them."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def vocab_size(tokenizer) -> int:
    """The model's vocabulary size: every id the tokenizer can emit, special tokens included."""
    return tokenizer.get_vocab_size(with_added_tokens=True)
