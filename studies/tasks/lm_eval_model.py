"""Our ARM and MDM checkpoints as an lm-evaluation-harness model: ``--model arm_mdm``.

lm-eval owns prompts, few-shot sampling, filters and metrics; this class owns what is this
project's own, the three request types of ``lm_eval.api.model.LM``:

- ``loglikelihood``: ``(log p(continuation | context), is_greedy)``. ARM: exact
  (``models.likelihood.arm_loglikelihood``). MDM: minus LLaDA's eq. 6 Monte Carlo bound
  (``models.likelihood.mdm_nll_bound``: ``mc_samples`` passes, the stratified estimator, one pass
  for a single-token continuation, unsupervised CFG at ``cfg_scale``). An MDM has no left-to-right
  greedy decoding; with ``check_greedy=True`` is_greedy says whether LLaDA's low-confidence sampler
  (one token per step, temperature 0) writes exactly the continuation (LLaDA's
  ``suffix_greedy_prediction``; L more passes per request); otherwise it is False, as in LLaDA's
  ``eval_llada.py`` with ``is_check_greedy=False`` (no multiple-choice metric reads it).
- ``generate_until``: ARM decodes with a KV cache (``models.sampling.arm_generate``); MDM runs
  LLaDA's sampler (``models.sampling.generate``) with ``gen_length`` (default: the request's
  ``max_gen_toks``), ``steps`` and ``block_length`` (default: ``gen_length``) and ``remasking``.
  Outputs are cut at EOS, at ``max_gen_toks`` tokens and before the first ``until`` string.
- ``loglikelihood_rolling``: the document in lm-eval's rolling windows of ``max_seq_len - 1``
  predicted tokens, each conditioned on what precedes it inside the window; the window scores
  are summed. Exact for ARM; for MDM each window's eq. 6 bound, so the sum bounds the
  windowed negative log-likelihood (LLaDA's own adapter leaves this unimplemented, LLaDA issue #92).

Tokenization is lm-eval's: the context is encoded alone and the continuation is the rest of the
encoding of context + continuation (trailing spaces of the context move to the continuation), and
every context starts with the EOS token that precedes each document in training (the
EOS-separated packing of ``studies.data.packing``). A context too long for the model loses its
oldest tokens.

Randomness. The MDM masks of a request come from a generator of its own, seeded with
``seed + crc32("task/document/part")``: a document scores the same whatever else shares its batch,
however many processes share the documents and whatever ran before, and the choices of one question
are scored with the same masks (common random numbers, so their difference varies less). Sampling
noise of generation (temperature > 0, random remasking) comes from one generator per task and call,
seeded with ``seed + crc32(task)``. Requests are scored in the order lm-eval gives them,
``batch_size`` documents at a time, so the requests sharing a context (the choices of one question)
share a batch.

``model_args`` (``--model_args checkpoint=PATH,mc_samples=128,cfg_scale=0.5``): see ``ModelArgs``;
``--batch_size`` and ``--device`` are lm-eval's own flags (a ``model_args`` value wins over them).
"""

from __future__ import annotations

import difflib
import logging
import zlib
from dataclasses import dataclass, fields
from itertools import groupby
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from models.likelihood import arm_loglikelihood, mdm_nll_bound, model_device
from models.objective_names import ARM, MDM, check_objective
from models.sampling import REMASKING, arm_generate, generate as mdm_generate

log = logging.getLogger(__name__)

GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p")


class ModelArgsError(ValueError):
    """A ``model_args`` value the model cannot use; the message names the fix."""


@dataclass
class ModelArgs:
    """What ``--model_args`` may set; an unknown key is an error, not a silent default."""

    checkpoint: Optional[str] = None  # a run's Lightning .ckpt file (consolidate a sharded folder first)
    tokenizer: Optional[str] = None  # prepared data folder (tokenizer.json, metadata.json); default: the run's
    mc_samples: int = 128  # Monte Carlo samples of the MDM bound (one pass for a single-token continuation)
    cfg_scale: float = 0.0  # unsupervised classifier-free guidance (MDM; LLaDA eq. 16)
    estimator: str = "stratified"  # MDM bound estimator: stratified | plain (models.likelihood.mask_plan)
    check_greedy: bool = False  # MDM is_greedy through LLaDA's sampler (L extra passes per request)
    batch_size: int = 16  # documents per scoring call; model rows per forward pass
    device: str = "cpu"
    seed: int = 0
    gen_length: Optional[int] = None  # MDM response length (default: the request's max_gen_toks)
    steps: Optional[int] = None  # MDM sampling steps (default: gen_length, one token per step)
    block_length: Optional[int] = None  # MDM semi-autoregressive block (default: gen_length, one block)
    remasking: str = "low_confidence"  # low_confidence | random
    max_gen_toks: int = 256  # a request's max_gen_toks when its task sets none

    @classmethod
    def parse(cls, values: Mapping[str, Any], cli: Optional[Mapping[str, Any]] = None) -> "ModelArgs":
        """From ``model_args`` and lm-eval's ``--batch_size``/``--device`` (``cli``; model_args win)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            hints = [m for key in unknown for m in difflib.get_close_matches(key, known, n=1)]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise ModelArgsError(f"unknown model_args key(s) {unknown} for --model arm_mdm{hint}; known: {known}")
        merged = {k: v for k, v in (cli or {}).items() if k in ("batch_size", "device") and v is not None}
        merged.update(values)
        if isinstance(merged.get("batch_size"), str):
            if not merged["batch_size"].isdigit():
                raise ModelArgsError(f"batch_size={merged['batch_size']!r} is not supported by arm_mdm; pass a number "
                                     "(--batch_size 16)")
            merged["batch_size"] = int(merged["batch_size"])
        args = cls(**merged)
        for name in ("mc_samples", "batch_size", "max_gen_toks"):
            if not isinstance(getattr(args, name), int) or getattr(args, name) < 1:
                raise ModelArgsError(f"{name} must be a positive integer, got {getattr(args, name)!r}")
        if args.remasking not in REMASKING:
            raise ModelArgsError(f"remasking={args.remasking!r}: choose one of {REMASKING}")
        if args.cfg_scale < 0:
            raise ModelArgsError(f"cfg_scale must be >= 0 (LLaDA searches 0, 0.5, 1, 1.5, 2), got {args.cfg_scale}")
        return args


@register_model("arm_mdm")
class ArmMdmLM(LM):
    """lm-eval's ``LM`` over a backbone (token ids -> logits), its objective and a tokenizer."""

    def __init__(self, **model_args):
        super().__init__()
        cli = {k: model_args.pop(k) for k in ("batch_size", "max_batch_size", "device") if k in model_args}
        args = ModelArgs.parse(model_args, cli)
        module, tokenizer, special_ids = load_checkpoint(args)
        self._setup(module.model, tokenizer, objective=module.objective, mask_id=module.mask_id,
                    special_ids=special_ids, args=args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict] = None) -> "ArmMdmLM":
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: Mapping[str, Any], additional_config: Optional[dict] = None) -> "ArmMdmLM":
        """lm-eval always passes its ``--batch_size``/``--device`` beside ``model_args``; a key given in
        both is taken from ``model_args`` instead of failing as a repeated keyword."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**dict(arg_dict), **extra)

    @classmethod
    def from_module(cls, module, tokenizer, *, special_ids: Mapping[str, int], **model_args) -> "ArmMdmLM":
        """From an in-memory ``models.lightning.LanguageModel`` (e.g. during training) and its
        tokenizer; the module stays where it is and is restored to its mode after each request batch."""
        args = ModelArgs.parse(model_args)
        self = cls.__new__(cls)
        LM.__init__(self)
        self._setup(module.model, tokenizer, objective=module.objective, mask_id=module.mask_id,
                    special_ids=special_ids, args=args)
        return self

    def _setup(self, model, tokenizer, *, objective: str, mask_id: Optional[int], special_ids: Mapping[str, int],
               args: ModelArgs) -> None:
        check_objective(objective)
        if objective == MDM and mask_id is None:
            raise ValueError("an MDM needs mask_id (the tokenizer's mask token)")
        self.model, self.tokenizer, self.objective, self.args = model, tokenizer, objective, args
        self.mask_id = mask_id
        self.eos_id, self.pad_id = int(special_ids["eos"]), int(special_ids.get("pad", 0))
        self.max_len = int(model.config.max_seq_len)
        self._device = model_device(model)
        self._warned_greedy = False
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # lm-eval shards the documents by rank
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()

    # ------------------------------------------------------------------ lm-eval's collectives (data parallel)
    def all_gather(self, tensor):
        import torch.distributed as dist

        if self.world_size == 1:
            return tensor
        tensor = tensor.reshape(-1) if tensor.dim() == 0 else tensor
        gathered = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return torch.cat(gathered)

    def gather_object(self, obj, dst=0):
        import torch.distributed as dist

        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world_size > 1:
            dist.barrier()

    # ------------------------------------------------------------------ tokenization
    def tok_encode(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def encode_pair(self, context: str, continuation: str) -> Tuple[List[int], List[int]]:
        """Context ids (EOS first, as every training document is preceded) and continuation ids."""
        context_ids, continuation_ids = split_pair(self.tok_encode, context, continuation)
        return [self.eos_id] + context_ids, continuation_ids

    # ------------------------------------------------------------------ randomness
    def _generator(self, task: Optional[str]) -> torch.Generator:
        """The sampling noise of a task's generation requests: ``seed + crc32(task)``."""
        return torch.Generator().manual_seed(self.args.seed + zlib.crc32((task or "").encode()))

    def _document_generator(self, task: Optional[str], document: Any, part: int = 0) -> torch.Generator:
        """The MDM masks of one request: ``seed + crc32("task/document/part")``."""
        return torch.Generator().manual_seed(self.args.seed + zlib.crc32(f"{task or ''}/{document}/{part}".encode()))

    # ------------------------------------------------------------------ requests
    @torch.no_grad()
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> List[Tuple[float, bool]]:
        results: List[Tuple[float, bool]] = []
        with eval_mode(self.model):
            for task, chunk in _chunks_by_document(requests, self.args.batch_size):
                pairs = [self.encode_pair(*request.args) for request in chunk]
                generators = [self._document_generator(task, document) for document in _documents(chunk)]
                results += self._score_pairs(pairs, generators)
        return results

    def _score_pairs(self, pairs, generators, greedy: bool = True) -> List[Tuple[float, bool]]:
        prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
        batch = self.args.batch_size
        if self.objective == ARM:
            log_prob, greedy = arm_loglikelihood(self.model, prompts, answers, batch_size=batch, max_len=self.max_len,
                                                 pad_id=self.pad_id)
            return list(zip(log_prob.tolist(), greedy.tolist()))
        nll = mdm_nll_bound(self.model, prompts, answers, mask_id=self.mask_id, mc_samples=self.args.mc_samples,
                            cfg_scale=self.args.cfg_scale, batch_size=batch, generator=list(generators),
                            estimator=self.args.estimator, max_len=self.max_len)
        is_greedy = self._mdm_greedy(prompts, answers) if greedy else [False] * len(pairs)
        return list(zip((-nll).tolist(), is_greedy))

    def _mdm_greedy(self, prompts, answers) -> List[bool]:
        """Whether LLaDA's sampler at temperature 0, low-confidence remasking, one token per step,
        writes exactly each answer after its prompt; False for all without ``check_greedy``."""
        if not self.args.check_greedy:
            if not self._warned_greedy:
                log.warning("arm_mdm: is_greedy is False for MDM requests; set check_greedy=True to decode each "
                            "continuation with LLaDA's sampler (metrics such as lambada's acc read it)")
                self._warned_greedy = True
            return [False] * len(answers)
        greedy = [False] * len(answers)
        by_length = sorted(range(len(answers)), key=lambda i: len(answers[i]))
        for length, group in groupby(by_length, key=lambda i: len(answers[i])):
            group = list(group)
            for start in range(0, len(group), self.args.batch_size):
                rows = group[start:start + self.args.batch_size]
                chunk = [_keep_last(prompts[i], self.max_len - length) for i in rows]
                full = mdm_generate(self.model, chunk, gen_length=length, steps=length, block_length=length,
                                    cfg_scale=self.args.cfg_scale, mask_id=self.mask_id, max_len=self.max_len)
                for i, row, prompt in zip(rows, full, chunk):
                    greedy[i] = row[len(prompt):] == answers[i]
        return greedy

    @torch.no_grad()
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        """Sum of the window scores of each document (see the module docstring)."""
        results: List[float] = []
        with eval_mode(self.model):
            for task, group in groupby(requests, key=lambda r: r.task_name):
                group = list(group)
                windows, owners, generators = [], [], []
                for index, (request, document) in enumerate(zip(group, _documents(group))):
                    (text,) = request.args
                    tokens = self.tok_encode(text)
                    for part, window in enumerate(get_rolling_token_windows(tokens, self.eos_id, self.max_len - 1, 1)):
                        windows.append(make_disjoint_window(window))
                        owners.append(index)
                        generators.append(self._document_generator(task, document, part))
                totals = [0.0] * len(group)
                for start in range(0, len(windows), self.args.batch_size):
                    end = start + self.args.batch_size
                    scores = self._score_pairs(windows[start:end], generators[start:end], greedy=False)
                    for owner, (score, _) in zip(owners[start:start + self.args.batch_size], scores):
                        totals[owner] += score
                results += totals
        return results

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        outputs: List[Optional[str]] = [None] * len(requests)
        order = list(range(len(requests)))
        with eval_mode(self.model):
            for task, in_task in groupby(order, key=lambda i: requests[i].task_name):
                generator = self._generator(task)
                groups: Dict[str, List[int]] = {}
                for i in in_task:  # requests with equal generation settings, in their order
                    groups.setdefault(repr(sorted(requests[i].args[1].items())), []).append(i)
                for rows in groups.values():
                    settings = self._generation_settings(requests[rows[0]].args[1])
                    for start in range(0, len(rows), self.args.batch_size):
                        chunk = rows[start:start + self.args.batch_size]
                        texts = self._generate([requests[i].args[0] for i in chunk], generator, **settings)
                        for i, text in zip(chunk, texts):
                            outputs[i] = text
        return outputs

    def _generation_settings(self, gen_kwargs: Mapping[str, Any]) -> Dict[str, Any]:
        unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS))
        if unknown:
            raise ValueError(f"arm_mdm does not support generation_kwargs {unknown}; supported: {list(GEN_KWARGS)}")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        do_sample = bool(gen_kwargs.get("do_sample", False))
        temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0) if do_sample else 0.0
        max_new = int(gen_kwargs.get("max_gen_toks") or self.args.max_gen_toks)
        return {"until": until, "max_new_tokens": max_new, "temperature": temperature,
                "top_p": float(gen_kwargs.get("top_p", 1.0) or 1.0)}

    def _generate(self, contexts: Sequence[str], generator, *, until: Sequence[str], max_new_tokens: int,
                  temperature: float, top_p: float) -> List[str]:
        length = max_new_tokens if self.objective == ARM else (self.args.gen_length or max_new_tokens)
        if length >= self.max_len:
            raise ValueError(
                f"generating {length} tokens leaves no room for a prompt in the model's context of {self.max_len} "
                "tokens; lower max_gen_toks (--gen_kwargs max_gen_toks=N)" + ("" if self.objective == ARM else
                                                                                " or model_args gen_length")
            )
        prompts = [_keep_last([self.eos_id] + self.tok_encode(c), self.max_len - length) for c in contexts]
        if self.objective == ARM:
            produced = arm_generate(self.model, prompts, max_new_tokens=length, temperature=temperature, top_p=top_p,
                                    stop_sequences=[self.tok_encode(s) for s in until], eos_id=self.eos_id,
                                    generator=generator, max_len=self.max_len)
        else:
            full = mdm_generate(self.model, prompts, gen_length=length, steps=self.args.steps or length,
                                block_length=self.args.block_length or length, temperature=temperature,
                                cfg_scale=self.args.cfg_scale, remasking=self.args.remasking, mask_id=self.mask_id,
                                generator=generator, max_len=self.max_len)
            produced = [row[len(p):] for row, p in zip(full, prompts)]
        return [cut_at_stop(self.tok_decode(cut_at_token(ids[:max_new_tokens], self.eos_id)), until) for ids in produced]


# ----------------------------------------------------------------------------- helpers


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


def _documents(requests) -> List[Any]:
    """Each request's document id (its position in ``requests`` where lm-eval gives none)."""
    return [r.doc_id if r.doc_id is not None else f"request{n}" for n, r in enumerate(requests)]


def _chunks_by_document(requests, batch_size: int):
    """(task, requests) chunks of at most ``batch_size`` documents, in order; a request without a
    document id counts as a document of its own."""
    chunk, task, docs = [], None, set()
    for number, request in enumerate(requests):
        doc = (request.doc_id if request.doc_id is not None else ("request", number))
        if chunk and (request.task_name != task or (doc not in docs and len(docs) == batch_size)):
            yield task, chunk
            chunk, docs = [], set()
        chunk.append(request)
        task = request.task_name
        docs.add(doc)
    if chunk:
        yield task, chunk


def _keep_last(ids: List[int], keep: int) -> List[int]:
    return ids if len(ids) <= keep else ids[-keep:]


def load_checkpoint(args: ModelArgs):
    """(LanguageModel on ``args.device`` in eval mode, tokenizer, special ids) for ``args.checkpoint``."""
    if args.checkpoint is None:
        raise ModelArgsError("--model arm_mdm needs model_args checkpoint=PATH (a run's .ckpt file, e.g. "
                             "RUN/checkpoints/final.ckpt)")
    from studies.checkpoint_inputs import CheckpointInputError, check_checkpoint_file, checkpoint_run_data

    checkpoint = Path(args.checkpoint)
    try:
        check_checkpoint_file(checkpoint, fix="pass model_args checkpoint=PATH of a run's .ckpt file")
    except CheckpointInputError as error:
        raise ModelArgsError(str(error)) from None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelArgsError(f"device {args.device} was asked for but CUDA is not available; pass --device cpu")
    if args.tokenizer:
        data_dir = Path(args.tokenizer)
    else:
        try:
            _, data_dir = checkpoint_run_data(checkpoint, fix="pass tokenizer=PREPARED_DATA_DIR in model_args")
        except CheckpointInputError as error:
            raise ModelArgsError(str(error)) from None
    if data_dir.is_file():  # a tokenizer.json inside a prepared folder
        data_dir = data_dir.parent
    if not (data_dir / "tokenizer.json").is_file() or not (data_dir / "metadata.json").is_file():
        raise ModelArgsError(f"tokenizer={data_dir} is not a prepared data folder (it needs tokenizer.json and "
                             "metadata.json); pass the folder `python -m studies.data prepare` wrote")

    from tokenizers import Tokenizer

    from models.lightning import LanguageModel
    from studies.data.layout import load_metadata

    module = LanguageModel.load_from_checkpoint(str(checkpoint), map_location=args.device, weights_only=False)
    module.eval()
    tokenizer = Tokenizer.from_file(str(data_dir / "tokenizer.json"))
    return module, tokenizer, load_metadata(data_dir)["special_ids"]


__all__ = ["ArmMdmLM", "ModelArgs", "ModelArgsError", "split_pair", "cut_at_token", "cut_at_stop", "eval_mode", "load_checkpoint"]
