"""The `hf` backend: batched sampling and teacher-forced scoring on plain transformers (CPU or CUDA).

Sampling: requests (prompt x n) are sorted by prompt length, left-padded and decoded in batches by
engines/decode.py, our loop over the model's forward pass and KV cache, which drops a row from the batch as
soon as it finishes (`model.generate` decodes padding for it until the batch's longest row ends). Each
sequence gets its own `torch.Generator` seeded from (base seed, request), so a sample depends on its seed, not
on which batch it landed in. `Completion.logprobs` holds each sampled token's log-prob under the untempered
model (no full-vocabulary logits are kept: at batch 64 x 256 steps they would take gigabytes).

Scoring: prompt + response token ids (tokenised by prompts.py exactly as training does), left-padded with
explicit position ids, one forward pass per batch; only the response positions' logits are computed
(`logits_to_keep`), in chunks bounded by `max_score_tokens` so the vocabulary-sized logits fit in memory.

    from sftadapt.engines import make_engine, Sampling
    engine = make_engine("smollm2-135m")   # dtype auto: bf16 only where the hardware runs it natively
    outs = engine.generate([prompt], Sampling(n=4, temperature=1.0, max_new_tokens=256))
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import torch

from sftadapt.data import prompts as P
from sftadapt.data.budget import config_context
from sftadapt.engines import facts
from sftadapt.engines.base import Completion, Sampling, TokenScores, derive_seed, refuse_unknown
from sftadapt.engines.decode import SeededSampler, decode, hits_stop


class HFEngine:
    seeded = True  # engine.options.seeded (facts.py); unseeded rows draw their generator's seed at random

    def __init__(
        self,
        model,
        tokenizer,
        name: str,
        batch_size: int = 32,
        max_score_tokens: int = 4096,
        score_model=None,
        precision: dict | None = None,
    ):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.context_length = config_context(model.config)  # read now: close() drops the model
        generation = getattr(model, "generation_config", None)
        self.end_ids = facts.end_ids(tokenizer, getattr(generation, "eos_token_id", None))
        # scoring may run in another precision than sampling (exact fp32 log-probs beside fast bf16 samples)
        self.score_model = score_model if score_model is not None else model
        self.batch_size, self.max_score_tokens = batch_size, max_score_tokens
        self.device = next(model.parameters()).device
        self.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.precision = precision or {"generate": self.dtype, "score": self.dtype}
        # counters for compute accounting and the engine-overhead benchmark
        self.stats = {"generated_tokens": 0, "scored_tokens": 0, "generate_seconds": 0.0, "score_seconds": 0.0}

    OPTIONS = ("device", "max_score_tokens", "trust_remote_code")  # what `engine.options` may set for hf

    @classmethod
    def from_config(cls, spec: str, options: dict, **common) -> HFEngine:
        refuse_unknown(options, cls.OPTIONS, "hf")
        return cls.from_model(spec, **common, **options)

    @classmethod
    def from_model(
        cls,
        spec: str,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 32,
        max_score_tokens: int = 4096,
        trust_remote_code: bool = False,
        score_dtype: str | None = None,
    ) -> HFEngine:
        """`dtype` for sampling and `score_dtype` (default: the same) for scoring, each auto | float32 |
        bfloat16 as sftadapt.runtime.precision resolves it; two precisions keep two copies of the weights."""
        from sftadapt.runtime.models import inference_dtype, load_model, load_tokenizer
        from sftadapt.runtime.precision import describe

        gen = inference_dtype(spec, dtype, device)
        scoring = inference_dtype(spec, score_dtype or dtype, device)
        tok = load_tokenizer(spec, trust_remote_code=trust_remote_code)
        model = load_model(spec, dtype=gen, device=device, trust_remote_code=trust_remote_code)
        score_model = (
            model
            if scoring == gen
            else load_model(spec, dtype=scoring, device=device, trust_remote_code=trust_remote_code)
        )
        precision = {"generate": gen, "score": scoring, "detail": describe(dtype, gen, device)}
        return cls(
            model,
            tok,
            spec,
            batch_size=batch_size,
            max_score_tokens=max_score_tokens,
            score_model=score_model,
            precision=precision,
        )

    # ------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], params: Sampling, seeds: Sequence[Sequence[int]] | None = None
    ) -> list[list[Completion]]:
        start = time.perf_counter()
        prompt_ids = [P.prompt_token_ids(self.tokenizer, p) for p in prompts]
        rooms = facts.fit([len(ids) for ids in prompt_ids], params.max_new_tokens, self.context_length, "hf engine")
        draw = random.SystemRandom()
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        eos = P.end_token_id(self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        for requests in generate_batches([len(ids) for ids in prompt_ids], params.n, self.batch_size):
            batch = [
                (i, j, seeds[i][j] if seeds is not None else derive_seed(params.seed, prompts[i], j))
                for i, j in requests
            ]
            input_ids, attention = _left_pad([prompt_ids[i] for i, _, _ in batch], pad, self.device)
            used = [s if self.seeded else draw.getrandbits(63) for _, _, s in batch]
            sampler = SeededSampler([torch.Generator().manual_seed(s) for s in used], params.temperature, params.top_p)
            stop = (lambda ids: hits_stop(self.tokenizer, ids, params.stop)) if params.stop else None
            limits = [rooms[i] for i, _, _ in batch]
            tokens, logprobs = decode(
                self.model, input_ids, attention, sampler, max(limits), self.end_ids, stop, limits=limits
            )
            for row, (i, j, seed) in enumerate(batch):
                results[i][j] = self._finish(tokens[row], logprobs[row], params, seed if self.seeded else None)
        self.stats["generate_seconds"] += time.perf_counter() - start
        return results  # type: ignore[return-value]

    def _finish(self, ids: list[int], logprobs: list[float], params: Sampling, seed: int | None) -> Completion:
        reason = "length"
        cut = next((k for k, t in enumerate(ids) if t in self.end_ids), None)
        if cut is not None:
            ids, logprobs, reason = ids[:cut], logprobs[:cut], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in params.stop:
            if stop in text:
                text, reason = text[: text.index(stop)], "stop"
        self.stats["generated_tokens"] += len(ids) + (reason == "stop")
        return Completion(text=text, token_ids=ids, logprobs=logprobs, finish_reason=reason, seed=seed)

    # ------------------------------------------------------------ score
    @torch.no_grad()
    def score(
        self, prompts: Sequence[str], responses: Sequence[str], entropy: bool = False, hidden: bool = False
    ) -> list[TokenScores]:
        start = time.perf_counter()
        pairs = P.score_pairs(self.tokenizer, prompts, responses)
        results: list[TokenScores | None] = [None] * len(pairs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for rows in score_batches([(len(p), len(r)) for p, r in pairs], self.max_score_tokens):
            longest = max(len(pairs[k][1]) for k in rows)
            for k, scores in zip(rows, self._score_batch([pairs[k] for k in rows], longest, pad, entropy, hidden)):
                results[k] = scores
        self.stats["score_seconds"] += time.perf_counter() - start
        self.stats["scored_tokens"] += sum(len(r) for _, r in pairs)
        return results  # type: ignore[return-value]

    def _score_batch(self, pairs, longest: int, pad: int, entropy: bool, hidden: bool = False) -> list[TokenScores]:
        input_ids, attention = _left_pad([p + r for p, r in pairs], pad, self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.score_model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            logits_to_keep=longest + 1,
            use_cache=False,
            output_hidden_states=hidden,
        )
        # the last layer's states at the response tokens (left padding: a row's response is its last n positions)
        last = out.hidden_states[-1].float() if hidden else None
        # logits at position t predict token t+1: drop the last position's, align with the last `longest` tokens
        logits = out.logits[:, :-1].float()
        logp_all = torch.log_softmax(logits, dim=-1)
        targets = input_ids[:, -longest:]
        token_logp = logp_all.gather(-1, targets[..., None])[..., 0]
        ent = -(logp_all.exp() * logp_all).sum(-1) if entropy else None
        scores = []
        for row, (_, response_ids) in enumerate(pairs):
            n = len(response_ids)
            scores.append(
                TokenScores(
                    token_ids=list(response_ids),
                    logprobs=token_logp[row, longest - n :].tolist(),
                    entropies=ent[row, longest - n :].tolist() if ent is not None else None,
                    hidden=last[row, last.shape[1] - n :].mean(0).tolist() if last is not None and n else None,
                )
            )
        return scores

    def close(self) -> None:
        self.model = self.score_model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def generate_batches(prompt_lengths: Sequence[int], n: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """The batches `HFEngine.generate` runs, as (prompt index, sample index) requests: prompt x n, longest
    prompt first (a stable sort: similar lengths share a batch, less padding), cut every `batch_size`. The ray
    backend cuts its pieces with it too, so each replica runs the very batches one engine would."""
    requests = [(i, j) for i in range(len(prompt_lengths)) for j in range(n)]
    requests.sort(key=lambda r: -prompt_lengths[r[0]])
    return [requests[b : b + batch_size] for b in range(0, len(requests), batch_size)]


def score_batches(pair_lengths: Sequence[tuple[int, int]], max_score_tokens: int) -> list[list[int]]:
    """The batches `HFEngine.score` runs, as pair indices: (prompt, response) token counts sorted longest pair
    first; a batch grows while its response-position logits (rows x longest response) stay within
    `max_score_tokens` (a single pair over it is a batch of its own)."""
    order = sorted(range(len(pair_lengths)), key=lambda k: -(pair_lengths[k][0] + pair_lengths[k][1]))
    batches: list[list[int]] = []
    rows: list[int] = []
    longest = 0
    for k in order:
        new_longest = max(longest, pair_lengths[k][1])
        if rows and (len(rows) + 1) * new_longest > max_score_tokens:
            batches.append(rows)
            rows, new_longest = [], pair_lengths[k][1]
        rows.append(k)
        longest = new_longest
    if rows:
        batches.append(rows)
    return batches


def _left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)
