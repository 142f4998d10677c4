"""Fine-tune only the top layers of the backbone, from a cache of what the frozen lower layers make of each window.

    python -m training.train --data data/processed/books --train-layers 2      # top 2 layers + the head
    python -m training.train --data ... --time-budget 25m                      # auto: decides from a timed step

Why: on a CPU a full fine-tuning step of 16 x 256 tokens takes seconds (4.4 s on 2 Ice Lake cores in fp32), so a
25-minute budget sees a third of an epoch of long book summaries, and the transformer stays behind a linear model.
The embeddings and lower layers change little when fine-tuning; freeze them, run them once per window, keep
their output (fp16, in memory), and train the top layers and the head for epochs on it: a step then costs the
top layers' forward and backward only. The frozen weights are the backbone's own, so the checkpoint, the ONNX
export and the predictor are exactly those of a full fine-tune: nothing downstream knows the difference.

What is cached is chosen to fit (`training.layerplan` decides, this module computes): the windows of a training
document that the epochs will read, up to --max-windows (each epoch reads the next of a document's cached windows in
a shuffled order, as `--train-windows random` does without the cache: `loaders.cached_dls`), fewer when a time
budget or the memory cannot afford them, spread over the document; and the first window of each valid row, for
fastai's epoch-end loss. With a time budget the first windows are cached and timed, one step of the top layers is
timed on them, and the number kept per document is the one under which the epochs left read the most distinct
windows (`windows_for_epochs`): a window the budget would never reach is not worth its forward pass.

Supported backbones: BERT-like encoders (embeddings, a list of layers taking an additive attention mask, a
linear classifier over the pooled vector), the models `layer_groups` splits by layer. Others are refused with a
clear error; `--train-layers all` fine-tunes them whole.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from training.modeling import MeanPooledClassifier, mean_pool

CACHE_DTYPE = torch.float16   # halves the cache; MiniLM's hidden states are far inside its range (checked per batch)
CACHE_SHARE = 0.4             # with a time budget: the cache may take at most this share of the time left for training
MEMORY_SHARE = 0.5            # ... and this share of the memory available when it starts


class CacheError(RuntimeError):
    """The cached path cannot run as asked (unsupported backbone, not enough memory, overflow): one line."""


def embeddings_and_blocks(model):
    """(embeddings module, list of transformer layers) of a BERT-like classifier, or None."""
    base = model.base_model
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None:
            emb = getattr(base, "embeddings", None)
            return (emb, list(obj)) if emb is not None else None
    return None


def _bert_like(model) -> bool:
    hf = model.hf if isinstance(model, MeanPooledClassifier) else model
    parts = embeddings_and_blocks(model)
    return (parts is not None and isinstance(getattr(hf, "classifier", None), torch.nn.Linear)
            and hasattr(hf, "dropout") and hasattr(hf.base_model, "encoder"))


def check_supported(model, n_train: int) -> int:
    """The number of frozen lower layers for training the top `n_train` (CacheError if it cannot be done)."""
    if not _bert_like(model):
        raise CacheError(f"{type(getattr(model, 'hf', model)).__name__}: training the top layers from a cache needs a "
                         "BERT-like model (embeddings, encoder layers, a linear classifier); use --train-layers all")
    n_layers = len(embeddings_and_blocks(model)[1])
    if not 1 <= n_train < n_layers:
        raise CacheError(f"--train-layers {n_train}: the backbone has {n_layers} layers; train 1 to {n_layers - 1} "
                         "of them from the cache, or all of them (--train-layers all)")
    return n_layers - n_train


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T] bool/int attention mask -> the [B, 1, 1, T] additive float mask the layers take (0 or the dtype's min)."""
    return (~mask.bool())[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def run_blocks(blocks, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    add = additive_mask(mask, hidden.dtype)
    for block in blocks:
        out = block(hidden, attention_mask=add)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def head_logits(model, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The classifier's logits from its last hidden states, pooled as the model pools them."""
    if isinstance(model, MeanPooledClassifier):
        return model.hf.classifier(model.hf.dropout(mean_pool(hidden, mask)))
    pooler = getattr(model.base_model, "pooler", None)
    pooled = pooler(hidden) if pooler is not None else hidden[:, 0]
    return model.classifier(model.dropout(pooled))


@torch.no_grad()
def lower_hidden(model, n_frozen: int, feeds: dict) -> torch.Tensor:
    """Hidden states after the embeddings and the lower `n_frozen` layers for a batch of tokenised windows."""
    emb, blocks = embeddings_and_blocks(model)
    kwargs = {"input_ids": feeds["input_ids"]}
    if "token_type_ids" in feeds:
        kwargs["token_type_ids"] = feeds["token_type_ids"]
    return run_blocks(blocks[:n_frozen], emb(**kwargs), feeds["attention_mask"])


def without_attention_dropout(blocks) -> int:
    """Set the dropout on the attention probabilities of `blocks` to 0 (the hidden-state dropout stays); returns
    how many it found. Why: PyTorch's CPU scaled-dot-product attention has no fused kernel with dropout, so a
    training step falls back to the math path: 0.95 s against 0.61 s a step for MiniLM's top 2 layers on 16 x 256
    tokens (measured on 2 Ice Lake cores). Only the runtime module changes: config.json keeps its value."""
    n = 0
    for block in blocks:
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Dropout) and name.endswith("attention.self.dropout"):
                module.p = 0.0
                n += 1
    return n


class TopLayers(torch.nn.Module):
    """The trainable part: the top layers and the head of `hf_model` (the same parameters, not copies), fed the
    cached lower-layer output. `hf_model` stays reachable (fastai moves it, the valid curve reads it whole).
    The trained layers run without attention-probability dropout (`without_attention_dropout`)."""

    def __init__(self, hf_model, n_frozen: int, cpu_bf16: bool = False):
        super().__init__()
        self.hf_model = hf_model
        self.n_frozen, self.cpu_bf16 = n_frozen, cpu_bf16
        without_attention_dropout(embeddings_and_blocks(hf_model)[1][n_frozen:])

    def forward(self, x):
        hidden, mask = x
        blocks = embeddings_and_blocks(self.hf_model)[1][self.n_frozen:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            hidden = run_blocks(blocks, hidden.float(), mask)
            return head_logits(self.hf_model, hidden, mask).float()


def trainable_groups(groups: list[list], n_frozen: int) -> list[list]:
    """`layer_groups` (embeddings, each layer, the head) less the embeddings and the `n_frozen` lower layers,
    whose parameters get requires_grad False: what the optimizer trains over the cache."""
    for group in groups[:1 + n_frozen]:
        for p in group:
            p.requires_grad_(False)
    return groups[1 + n_frozen:]


# --------------------------------------------------------------------------------------------- the cache
@dataclass
class Cache:
    hidden: list            # one [tokens, hidden] CACHE_DTYPE tensor per cached window (padding dropped)
    rows: list              # rows[i]: indices into `hidden` of row i's cached windows (first one first)
    seconds: float = 0.0

    @property
    def n_windows(self) -> int:
        return len(self.hidden)

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)

    def extended(self, more: "Cache") -> "Cache":
        """This cache with `more`'s windows appended to the same rows (theirs after this one's)."""
        if len(more.rows) != len(self.rows):
            raise ValueError(f"cannot extend a cache of {len(self.rows)} rows with one of {len(more.rows)}")
        k = len(self.hidden)
        return Cache(self.hidden + more.hidden, [a + [k + j for j in b] for a, b in zip(self.rows, more.rows)],
                     self.seconds + more.seconds)


def pick_windows(n_windows: list[int], per_row: int) -> list[list[int]]:
    """For each row, which of its windows to keep: all when it has at most `per_row`, else `per_row` spread
    evenly from the first to the last (the first always kept)."""
    picked = []
    for n in n_windows:
        if n <= per_row:
            picked.append(list(range(n)))
        else:
            picked.append(sorted(set(np.linspace(0, n - 1, per_row).round().astype(int).tolist())))
    return picked


def windows_per_row(encoded, budget_windows: float | None, max_per_row: int) -> int:
    """The most windows per row (1 to `max_per_row`) whose total stays within `budget_windows` (None: no limit);
    at least 1."""
    counts = np.asarray(encoded.n_windows)
    best = 1
    for k in range(1, max(1, max_per_row) + 1):
        if budget_windows is not None and np.minimum(counts, k).sum() > budget_windows:
            break
        best = k
        if k >= counts.max(initial=1):
            break
    return best


def windows_for_epochs(n_windows: list[int], seconds: float, cache_seconds_per_window: float, epoch_seconds: float,
                       max_per_row: int, max_epochs: float) -> tuple[int, float]:
    """How many windows of each row to cache (1 to `max_per_row`, the first window being cached already) when
    `seconds` pay for caching the others (`cache_seconds_per_window` each) and for training epochs
    (`epoch_seconds` each, at most `max_epochs`), each epoch reading one cached window per row and a row reading
    all of its cached windows before any again (`WindowCycle`). The k under which the epochs read the most
    distinct windows (sum over rows of min(cached, epochs)); on a tie the smaller k, which leaves more epochs.
    Returns (k, the epochs it leaves)."""
    counts = np.asarray(n_windows, dtype=float)
    best = (1, 0.0, -1.0)
    for k in range(1, max(1, max_per_row) + 1):
        kept = np.minimum(counts, k)
        extra = (kept.sum() - len(counts)) * cache_seconds_per_window
        epochs = min(float(max_epochs), max(0.0, seconds - extra) / max(epoch_seconds, 1e-9))
        distinct = float(np.minimum(kept, epochs).sum())
        if distinct > best[2] + 1e-9:
            best = (k, epochs, distinct)
        if k >= counts.max(initial=1):
            break
    return best[0], best[1]


def top_step_seconds(net: "TopLayers", cache: Cache, batch_size: int, n_labels: int, device: torch.device,
                     autocast_dtype=None) -> float:
    """Seconds of one training step of the top layers (forward, BCE loss, backward) on `batch_size` cached
    windows of the median length, timed after one untimed step, on `device` (where `net` is); the gradients are
    cleared after. Not the optimizer's update: that would change the weights (it is a few percent of a step)."""
    order = np.argsort([h.shape[0] for h in cache.hidden], kind="stable")
    mid = max(0, min(len(order) - batch_size, len(order) // 2 - batch_size // 2))
    picked = order[mid:mid + batch_size]
    from training.loaders import collate

    (hidden, mask), _ = collate([(cache.hidden[i], np.zeros(n_labels, np.float32)) for i in picked])
    hidden, mask = hidden.to(device), mask.to(device)
    target = torch.zeros(len(picked), n_labels, device=device)
    was = net.training
    net.train()
    use_autocast = autocast_dtype is not None and device.type != "cpu"   # TopLayers autocasts itself on the CPU
    took = math.inf
    try:
        for _ in range(2):
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=use_autocast):
                logits = net((hidden, mask))
            torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            took = time.perf_counter() - t
    finally:
        net.zero_grad(set_to_none=True)
        net.train(was)
    return took


def build_cache(model, n_frozen: int, encoder, encoded, picked: list[list[int]], batch_size: int,
                device: torch.device, autocast_dtype=None, progress=None) -> Cache:
    """Run the frozen part once over the picked windows of every row, through the encoder's own batches
    (`TextEncoder.run_windows`, length-sorted) on `device`. `progress` wraps an iterable and is stepped a batch."""
    from training.inference import stepped

    t = time.perf_counter()
    first = encoded.first_windows()                                     # each row's first window in `encoded`
    sub = encoded.subset([int(first[r] + w) for r, ws in enumerate(picked) for w in ws])
    stored: list = []
    model.eval()

    def forward(feeds: dict) -> np.ndarray:
        """The batch's hidden states, padding dropped, appended to `stored`; returns where each window's went
        (run_windows puts them in window order)."""
        feeds = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            h = lower_hidden(model, n_frozen, feeds)
        h = h.to("cpu", CACHE_DTYPE)
        if not torch.isfinite(h).all():
            raise CacheError(f"the lower layers' output overflows {CACHE_DTYPE} in the cache: use --train-layers all")
        lengths = feeds["attention_mask"].sum(1).tolist()
        start = len(stored)
        stored.extend(h[j, :int(n)].clone() for j, n in enumerate(lengths))
        return np.arange(start, len(stored))[:, None]

    forward, done = stepped(forward, progress, lambda: len(encoder.batches(sub, batch_size, sort=True)))
    slots = encoder.run_windows(forward, sub, batch_size, sort=True)[:, 0] if sub.windows else []
    done()
    hidden = [stored[int(k)] for k in slots]
    rows, k = [], 0
    for ws in picked:
        rows.append(list(range(k, k + len(ws))))
        k += len(ws)
    return Cache(hidden, rows, time.perf_counter() - t)


def memory_available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def bytes_per_window(encoded, hidden_size: int) -> float:
    """Cache bytes per window of `encoded` on average (its real token counts, not the padded length)."""
    tokens = [len(w.ids) for w in encoded.windows]
    return float(np.mean(tokens)) * hidden_size * torch.finfo(CACHE_DTYPE).bits / 8 if tokens else 0.0


def train_step_seconds(model, encoder, encoded, batch_size: int, n_labels: int, device=None,
                       autocast_dtype=None) -> float:
    """Seconds of one full fine-tuning step (forward, BCE loss, backward) on `batch_size` windows of `encoded`
    spread over the data, timed after one untimed step, where and how training will run it: on `device` (the
    model is moved there and back) under `autocast_dtype` autocast (None: fp32). The gradients are cleared after."""
    device = torch.device(device or "cpu")
    pick = np.linspace(0, len(encoded.windows) - 1, min(batch_size, len(encoded.windows))).astype(int)
    feeds = encoder.feeds([encoded.windows[i] for i in pick])
    inputs = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
    target = torch.zeros(len(pick), n_labels, device=device)
    was, home = model.training, next(model.parameters()).device
    model.to(device).train()
    took = math.inf
    try:
        for _ in range(2):
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                logits = model(**inputs).logits
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            took = time.perf_counter() - t
    finally:
        model.zero_grad(set_to_none=True)
        model.to(home).train(was)
    return took
