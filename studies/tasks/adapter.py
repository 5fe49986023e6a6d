"""From a trained model and its tokenizer to the two request types every task is scored with.

- ``loglikelihood(requests)``: for (context, continuation) text pairs, log p(continuation | context):
  exact for ARM (``models.likelihood.arm_nll``), minus LLaDA's eq. 6 Monte Carlo bound for MDM
  (``models.likelihood.mdm_nll_bound``, ``mc_samples`` samples, one for a single-token continuation,
  unsupervised CFG at ``cfg_scale``), so that larger is better for both objectives.
- ``generate(contexts, max_new_tokens=, stop=)``: text continuations. ARM decodes left to right with
  a KV cache (``models.sampling.arm_generate``); MDM runs LLaDA's reverse process
  (``models.sampling.generate``) with ``gen_length = max_new_tokens`` and ``steps`` /
  ``block_length`` from the evaluation settings. Both outputs are cut at EOS and at the first stop
  sequence.

Tokenization follows lm-evaluation-harness: the context is encoded alone and the continuation is
the rest of the encoding of context + continuation (trailing spaces of the context move to the
continuation), so a continuation's tokens are those the model would see in running text. Every
context starts with ``document_start_id`` (EOS by default: the token that precedes every document in
the EOS-separated packing of ``studies.data.packing``). A context too long for the model loses its
oldest tokens; a continuation that cannot fit is an error from ``models.likelihood``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from models.likelihood import arm_nll, mdm_nll_bound
from models.sampling import arm_generate, generate as mdm_generate


@dataclass
class GenerationSettings:
    """How generation runs; read from ``eval.settings`` (unknown keys there are errors).

    ``steps`` and ``block_length`` default to the generation length (one block, one token per step:
    LLaDA's best-quality setting); ``temperature`` 0 is greedy for both objectives."""

    steps: Optional[int] = None
    block_length: Optional[int] = None
    remasking: str = "low_confidence"
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: Optional[int] = None  # overrides every task's default generation length


@dataclass
class EvalSettings:
    """The free-form ``eval.settings`` section, typed: generation, batching, tasks, HumanEval."""

    generation: GenerationSettings = field(default_factory=GenerationSettings)
    batch_size: int = 16
    seed: int = 0
    estimator: str = "stratified"
    task_files: Dict[str, str] = field(default_factory=dict)
    num_samples: int = 1  # code tasks: completions per problem (pass@k for k <= num_samples)
    pass_k: Tuple[int, ...] = (1,)
    timeout: float = 10.0  # code tasks: seconds per program

    @classmethod
    def parse(cls, settings: Optional[Mapping[str, Any]]) -> "EvalSettings":
        """From a plain dict (or OmegaConf mapping); generation keys may sit at top level too."""
        from omegaconf import DictConfig, OmegaConf

        raw = dict(OmegaConf.to_container(settings) if isinstance(settings, DictConfig) else (settings or {}))
        generation = dict(raw.pop("generation", {}) or {})
        gen_keys = set(GenerationSettings.__dataclass_fields__)
        for key in list(raw):
            if key in gen_keys:
                generation[key] = raw.pop(key)
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__) | set(generation) - gen_keys)
        if unknown:
            raise ValueError(
                f"unknown eval.settings key(s) {unknown}; known: {sorted(set(cls.__dataclass_fields__) - {'generation'})} "
                f"and generation keys {sorted(gen_keys)}"
            )
        if "pass_k" in raw:
            raw["pass_k"] = tuple(int(k) for k in raw["pass_k"])
        return cls(generation=GenerationSettings(**generation), **raw)


class ModelAdapter:
    """Scores and generates text with a backbone (``model``: token ids -> logits) and a tokenizer.

    ``objective``: "arm" or "mdm". ``mask_id`` is required for MDM. ``generator`` seeds the Monte
    Carlo masks and any sampling noise, so an evaluation is reproducible."""

    def __init__(self, model, tokenizer, *, objective: str, eos_id: int, mask_id: Optional[int] = None,
                 pad_id: int = 0, document_start_id: Optional[int] = None, mc_samples: int = 128,
                 cfg_scale: float = 0.0, settings: Optional[EvalSettings] = None,
                 max_len: Optional[int] = None):
        if objective not in ("arm", "mdm"):
            raise ValueError(f"objective must be 'arm' or 'mdm', got {objective!r}")
        if objective == "mdm" and mask_id is None:
            raise ValueError("an MDM adapter needs mask_id (the tokenizer's mask token)")
        if mc_samples < 1:
            raise ValueError(f"mc_samples must be at least 1, got {mc_samples}")
        self.model, self.tokenizer, self.objective = model, tokenizer, objective
        self.eos_id, self.mask_id, self.pad_id = eos_id, mask_id, pad_id
        self.document_start_id = eos_id if document_start_id is None else document_start_id
        self.mc_samples, self.cfg_scale = mc_samples, cfg_scale
        self.settings = settings or EvalSettings()
        config = getattr(model, "config", None)
        self.max_len = max_len or getattr(config, "max_seq_len", None)
        self.generator = torch.Generator().manual_seed(self.settings.seed)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_module(cls, module, tokenizer, *, special_ids: Mapping[str, int], mc_samples: int = 128,
                    cfg_scale: float = 0.0, settings: Optional[EvalSettings] = None) -> "ModelAdapter":
        """From a ``models.lightning.LanguageModel`` (its backbone, objective and mask id)."""
        return cls(module.model, tokenizer, objective=module.objective, eos_id=int(special_ids["eos"]),
                   mask_id=module.mask_id, pad_id=int(special_ids.get("pad", 0)), mc_samples=mc_samples,
                   cfg_scale=cfg_scale, settings=settings)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    # ------------------------------------------------------------------ tokenization
    def encode(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def encode_pair(self, context: str, continuation: str) -> Tuple[List[int], List[int]]:
        """Context ids (with the document-start token) and continuation ids, lm-eval style."""
        context_ids, continuation_ids = split_pair(self.encode, context, continuation)
        return [self.document_start_id] + context_ids, continuation_ids

    # ------------------------------------------------------------------ requests
    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[Tuple[str, str]]) -> List[float]:
        """log p(continuation | context) per (context, continuation) pair (ARM exact, MDM eq. 6 bound)."""
        if not requests:
            return []
        pairs = [self.encode_pair(c, x) for c, x in requests]
        prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
        batch = self.settings.batch_size
        with eval_mode(self.model):
            if self.objective == "arm":
                nll = arm_nll(self.model, prompts, answers, batch_size=batch, max_len=self.max_len, pad_id=self.pad_id)
            else:
                nll = mdm_nll_bound(self.model, prompts, answers, mask_id=self.mask_id, mc_samples=self.mc_samples,
                                    cfg_scale=self.cfg_scale, batch_size=batch, generator=self.generator,
                                    estimator=self.settings.estimator, max_len=self.max_len)
        return (-nll).tolist()

    @torch.no_grad()
    def generate(self, contexts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = (),
                 temperature: Optional[float] = None) -> List[str]:
        """Text continuations of ``contexts``, cut at EOS and before the first ``stop`` string."""
        if not contexts:
            return []
        g = self.settings.generation
        max_new_tokens = g.max_new_tokens or max_new_tokens
        temperature = g.temperature if temperature is None else temperature
        if self.max_len is not None and max_new_tokens >= self.max_len:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
                f"{self.max_len} tokens; lower eval.settings.max_new_tokens"
            )
        keep = None if self.max_len is None else self.max_len - max_new_tokens
        prompts = [self._truncate([self.document_start_id] + self.encode(c), keep) for c in contexts]
        outputs: List[List[int]] = []
        batch = self.settings.batch_size
        with eval_mode(self.model):
            for start in range(0, len(prompts), batch):
                chunk = prompts[start:start + batch]
                if self.objective == "arm":
                    stop_ids = [self.encode(s) for s in stop]
                    outputs += arm_generate(self.model, chunk, max_new_tokens=max_new_tokens, temperature=temperature,
                                            top_p=g.top_p, stop_sequences=stop_ids, eos_id=self.eos_id,
                                            generator=self.generator, max_len=self.max_len)
                else:
                    full = mdm_generate(self.model, chunk, gen_length=max_new_tokens,
                                        steps=g.steps or max_new_tokens, block_length=g.block_length or max_new_tokens,
                                        temperature=temperature, cfg_scale=self.cfg_scale, remasking=g.remasking,
                                        mask_id=self.mask_id, generator=self.generator, max_len=self.max_len)
                    outputs += [row[len(p):] for row, p in zip(full, chunk)]
        return [cut_at_stop(self.decode(cut_at_token(ids, self.eos_id)), stop) for ids in outputs]

    @staticmethod
    def _truncate(ids: List[int], keep: Optional[int]) -> List[int]:
        return ids if keep is None or len(ids) <= keep else ids[-keep:]


def split_pair(encode, context: str, continuation: str) -> Tuple[List[int], List[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness splits a request: trailing spaces of the
    context move to the continuation, and the continuation is the rest of the encoding of the whole, so
    a merge across the boundary is scored as the model would read it (separate encodings where the whole
    does not start with the context's)."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(context + continuation)
    context_ids = encode(context)
    if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
        continuation_ids = whole[len(context_ids):]
    else:  # a merge across the boundary: fall back to separate encodings
        continuation_ids = encode(continuation)
    if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens; it cannot be scored")
    return context_ids, continuation_ids


def cut_at_token(ids: Sequence[int], token: int) -> List[int]:
    ids = list(ids)
    return ids[: ids.index(token)] if token in ids else ids


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


class eval_mode:
    """Put a module in eval mode for the duration and restore its previous mode."""

    def __init__(self, model):
        self.model = model
        self.was_training = bool(getattr(model, "training", False))

    def __enter__(self):
        if hasattr(self.model, "eval"):
            self.model.eval()

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


def load_tokenizer(path) -> Any:
    """A ``tokenizers.Tokenizer`` from a tokenizer.json file."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist (a prepared data folder holds tokenizer.json)")
    return Tokenizer.from_file(str(path))


def load_checkpoint_adapter(checkpoint, data_dir, *, mc_samples: int = 128, cfg_scale: float = 0.0,
                            settings: Optional[EvalSettings] = None, device: str = "cpu") -> ModelAdapter:
    """An adapter for a Lightning checkpoint of ``models.lightning.LanguageModel`` and the prepared
    data folder holding its tokenizer.json and metadata.json (special ids)."""
    from models.lightning import LanguageModel
    from studies.data.prepare import load_metadata

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        from studies.consolidate import sharded_checkpoint_error

        raise IsADirectoryError(sharded_checkpoint_error(checkpoint))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    module = LanguageModel.load_from_checkpoint(str(checkpoint), map_location=device, weights_only=False)
    module.eval()
    metadata = load_metadata(data_dir)
    tokenizer = load_tokenizer(Path(data_dir) / "tokenizer.json")
    return ModelAdapter.from_module(module, tokenizer, special_ids=metadata["special_ids"], mc_samples=mc_samples,
                                    cfg_scale=cfg_scale, settings=settings)


__all__ = ["ModelAdapter", "EvalSettings", "GenerationSettings", "load_tokenizer", "load_checkpoint_adapter",
           "cut_at_stop"]
