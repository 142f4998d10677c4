"""Where training runs and in what precision: `--device`, `--precision`, and the data-parallel world that
`accelerate launch` (or `torchrun`) starts.

    from training.devices import probe, resolve_runtime
    rt = resolve_runtime("auto", "auto")   # Runtime(device='cuda', precision='bf16', world=World(size=1, ...), ...)

The choices are pure functions of what the machine has (`Machine`) and of the launcher's environment, so the
CPU tests pin them down by passing the facts in. The distributed parts (process group, broadcasting a number
from the main process, fastai's sharded DataLoader made to work on gloo) are used only when the launcher set
WORLD_SIZE > 1.

Why not fastai's `learn.distrib_ctx()` as is: fastai 2.8's `DistributedDL` broadcasts the shuffled indices
with `LongTensor(...).cuda()`, which fails on a CPU-only machine (gloo). `data_parallel` below uses the same
fastai `DistributedTrainer` (Accelerate wraps the model in DistributedDataParallel) with a DataLoader whose
broadcast uses the process group's own device.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_BF16_ALIAS = {"auto": "auto", "on": "bf16", "off": "fp32"}   # the deprecated --bf16 → --precision


class DeviceError(ValueError):
    """A device, precision or world-size setting this machine, launcher or data set cannot honour."""


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_dtype(precision: str):
    """The torch autocast dtype of a resolved precision (None: fp32)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def eval_autocast(rt: "Runtime"):
    """The autocast dtype of the no-grad forward passes that measure the model (the final evaluation on valid and
    test, the valid curve, their timing), which run where training runs (`rt`). On a GPU: the training precision's
    (bf16, or fp16 on GPUs without bf16); fp32 runs plain. On the CPU: bfloat16 where the CPU has native bf16,
    unless fp32 (on CMU's windows it ran 1.9x faster than fp32 with test F1 within 0.3 points, AVX512-BF16); the
    served bundle is int8 either way, and `compression.quantize` checks it against the fp32 model. MPS: None."""
    import torch

    if rt.device == "cuda":
        return autocast_dtype(rt.precision)
    if rt.device == "cpu":
        return torch.bfloat16 if rt.precision != "fp32" and cpu_has_native_bf16() else None
    return None


def eval_precision(rt: "Runtime") -> str:
    """`eval_autocast(rt)` in words (metrics.json `train.eval_precision`): bf16, fp16 or fp32."""
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(eval_autocast(rt), "fp32")


# A GPU's no-grad passes run in large batches: up to EVAL_WINDOWS_GPU windows and EVAL_TOKENS_GPU padded tokens a
# batch (512 windows of 256 tokens, 256 of 512: activations of a few hundred MiB for a base-sized model). The CPU
# keeps --eval-batch-size (64): a larger batch is no faster there.
EVAL_WINDOWS_GPU = 512
EVAL_TOKENS_GPU = 512 * 256


def eval_batching(rt: "Runtime", batch_size: int) -> tuple[int, int | None]:
    """(windows a batch, padded tokens a batch or None) of the evaluation passes on `rt`'s device."""
    if rt.device == "cuda":
        return max(batch_size, EVAL_WINDOWS_GPU), EVAL_TOKENS_GPU
    return batch_size, None


def to_device(tree, device):
    """Tensors of a batch (nested in dicts, tuples, lists) on `device`. To a CUDA device they go from pinned memory
    with non-blocking copies, so the host builds the next batch while the GPU works; elsewhere they stay as they
    are when already there (no copy on the CPU)."""
    import torch

    device = torch.device(device) if device is not None else None
    if device is None:
        return tree
    cuda = device.type == "cuda"

    def move(t):
        if isinstance(t, torch.Tensor):
            if t.device == device:
                return t
            return (t.pin_memory() if cuda and t.device.type == "cpu" else t).to(device, non_blocking=cuda)
        if isinstance(t, dict):
            return {k: move(v) for k, v in t.items()}
        if isinstance(t, (tuple, list)):
            return type(t)(move(v) for v in t)
        return t

    return move(tree)


@dataclass(frozen=True)
class Machine:
    """What this process can use (probed once, or given by a test)."""
    cuda: bool = False
    mps: bool = False
    cuda_bf16: bool = False          # the GPU computes bf16 natively (Ampere or newer)
    cpu_bf16: bool = False           # the CPU has native bf16 (AVX512-BF16 / AMX)
    cuda_name: str | None = None


def probe() -> Machine:
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return Machine(cuda=cuda, mps=mps, cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
                   cpu_bf16=cpu_has_native_bf16(), cuda_name=torch.cuda.get_device_name(0) if cuda else None)


def choose_device(requested: str, m: Machine, launcher_cpu: bool = False) -> str:
    """auto: CUDA when present, else MPS, else the CPU (always the CPU under `accelerate launch --cpu`)."""
    if requested not in DEVICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICES)} (got {requested!r})")
    if requested == "auto":
        return "cpu" if launcher_cpu else "cuda" if m.cuda else "mps" if m.mps else "cpu"
    if launcher_cpu and requested != "cpu":
        raise DeviceError(f"--device {requested} contradicts `accelerate launch --cpu`: drop one of them")
    if requested == "cuda" and not m.cuda:
        raise DeviceError("--device cuda: no CUDA GPU is available to PyTorch here (torch.cuda.is_available() is "
                          "False: a CPU-only torch build or no driver); use --device cpu or auto")
    if requested == "mps" and not m.mps:
        raise DeviceError("--device mps: Apple's MPS backend is not available here "
                          "(torch.backends.mps.is_available() is False); use --device cpu or auto")
    return requested


def choose_precision(requested: str, device: str, m: Machine) -> str:
    """The training precision for `device`: fp32, or bf16/fp16 autocast (weights and optimizer stay fp32).

    auto: CUDA → bf16 where the GPU has it (no loss scaling needed), else fp16 with a gradient scaler;
    CPU → bf16 only on CPUs with native bf16 (elsewhere it is slower than fp32); MPS → fp32."""
    if requested not in PRECISIONS:
        raise DeviceError(f"--precision must be one of {', '.join(PRECISIONS)} (got {requested!r})")
    if device == "cuda":
        if requested == "auto":
            return "bf16" if m.cuda_bf16 else "fp16"
        if requested == "bf16" and not m.cuda_bf16:
            raise DeviceError(f"--precision bf16: this GPU ({m.cuda_name or 'unknown'}) has no native bfloat16 "
                              "(pre-Ampere); use --precision fp16 or auto")
        return requested
    if device == "mps":
        if requested in ("bf16", "fp16"):
            raise DeviceError(f"--precision {requested} on MPS is not supported by this project (untested "
                              "autocast); use --precision fp32 or auto")
        return "fp32"
    if requested == "fp16":
        raise DeviceError("--precision fp16 on the CPU: PyTorch has no fast fp16 CPU kernels and fp16 needs loss "
                          "scaling; use --precision bf16 (autocast) or fp32")
    if requested == "auto":
        return "bf16" if m.cpu_bf16 else "fp32"
    return requested


def fold_bf16_alias(precision: str, bf16: str | None) -> str:
    """--precision from --precision and the deprecated --bf16 (on = bf16, off = fp32, auto = auto)."""
    if bf16 is None:
        return precision
    if bf16 not in _BF16_ALIAS:
        raise DeviceError(f"--bf16 must be auto, on or off (got {bf16!r})")
    mapped = _BF16_ALIAS[bf16]
    if precision not in ("auto", mapped):
        raise DeviceError(f"--bf16 {bf16} (deprecated: means --precision {mapped}) contradicts --precision "
                          f"{precision}: pass --precision only")
    return mapped


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (size 1: a plain run)."""
    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The world torchrun (what `accelerate launch --multi_gpu` runs) describes in WORLD_SIZE/RANK/LOCAL_RANK."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and _flag(env, "ACCELERATE_USE_CPU") and env.get("MASTER_ADDR"):
        # accelerate's plain launcher sets MASTER_ADDR only for --num_processes > 1, yet with --cpu (and no
        # mpirun config) it starts ONE process: training would silently run alone
        raise DeviceError("`accelerate launch --cpu --num_processes N` started a single process (accelerate runs "
                          "several CPU processes only through mpirun); for N CPU processes use `accelerate launch "
                          "--multi_gpu --num_processes N -m training.train --device cpu ...` (or torchrun)")
    try:
        size, rank = int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0))
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError as e:
        raise DeviceError(f"WORLD_SIZE/RANK/LOCAL_RANK from the launcher are not integers: {e}") from e
    if size < 1 or not 0 <= rank < size:
        raise DeviceError(f"launcher environment: RANK {rank} is not within WORLD_SIZE {size}")
    return World(size, rank, local)


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """Rank 0, or no launcher: who prints settings and the summary (needs no process group)."""
    env = os.environ if env is None else env
    return env.get("RANK", "0").strip() in ("", "0")


@dataclass(frozen=True)
class Runtime:
    device: str                      # cpu | cuda | mps
    precision: str                   # fp32 | bf16 | fp16
    world: World = field(default_factory=World)
    device_name: str = "cpu"         # the GPU's name, for the log

    @property
    def torch_device(self) -> str:
        """This process's device: each process of a multi-GPU run owns the GPU of its local rank."""
        if self.device == "cuda":
            return f"cuda:{self.world.local_rank}"
        return self.device

    def describe(self) -> str:
        procs = f", {self.world.size} processes (data-parallel)" if self.world.size > 1 else ""
        how = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + gradient scaler"}[self.precision]
        name = f" ({self.device_name})" if self.device_name != self.device else ""
        return f"{self.device}{name}, {how}{procs}"


def resolve_runtime(device: str = "auto", precision: str = "auto", env: Mapping[str, str] | None = None,
                    machine: Machine | None = None) -> Runtime:
    """Device, precision and world for this process; DeviceError (one line) for anything that cannot run.

    `accelerate launch --mixed_precision bf16|fp16` is honoured when --precision is auto; an explicit
    --precision that contradicts it is an error (the launcher's setting would otherwise be silently ignored)."""
    env = os.environ if env is None else env
    m = probe() if machine is None else machine
    world = world_from_env(env)
    dev = choose_device(device, m, launcher_cpu=_flag(env, "ACCELERATE_USE_CPU"))
    launcher_mp = env.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
    if launcher_mp not in ("", "no"):
        if launcher_mp not in ("bf16", "fp16"):
            raise DeviceError(f"accelerate launch --mixed_precision {launcher_mp} is not supported: use bf16 or fp16")
        if precision == "auto":
            precision = launcher_mp
        elif precision != launcher_mp:
            raise DeviceError(f"--precision {precision} contradicts `accelerate launch --mixed_precision "
                              f"{launcher_mp}`: drop one of them")
    prec = choose_precision(precision, dev, m)
    if world.size > 1 and dev == "mps":
        raise DeviceError("several processes need CUDA GPUs or the CPU (gloo): MPS has no process-group backend")
    return Runtime(dev, prec, world, m.cuda_name if dev == "cuda" else dev)


# --------------------------------------------------------------------------------------------- world size
def per_process_batch(batch_size: int, n_train: int, world_size: int) -> int:
    """--batch-size is the global batch of one optimizer step: each process takes batch_size / world_size rows,
    so a run on N processes follows the same schedule (steps, learning rates) as on one."""
    if world_size == 1:
        return batch_size
    if world_size > n_train:
        raise DeviceError(f"{world_size} processes but only {n_train} training rows: each process needs rows of "
                          "its own; use fewer processes")
    if batch_size % world_size:
        raise DeviceError(f"--batch-size {batch_size} is the global batch and must split evenly over the "
                          f"{world_size} processes: use a multiple of {world_size}")
    if steps_per_epoch(n_train, batch_size, world_size) < 1:
        raise DeviceError(f"{n_train} training rows make no full batch of {batch_size} over {world_size} "
                          "processes: lower --batch-size or use fewer processes")
    return batch_size // world_size


def steps_per_epoch(n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps in one pass over the training rows. fastai drops the last partial batch; with N processes
    fastai's DistributedDL pads the shuffled rows to a multiple of N and gives each process one contiguous
    share, batched by batch_size / N."""
    if world_size == 1:
        return n_train // batch_size
    return -(-n_train // world_size) // (batch_size // world_size)


# --------------------------------------------------------------------------------------------- distributed
def start(rt: Runtime) -> None:
    """Join the launcher's process group (gloo on the CPU, NCCL on GPUs) through Accelerate."""
    if rt.world.size == 1:
        return
    from accelerate import PartialState

    PartialState(cpu=rt.device == "cpu")


def finish(rt: Runtime) -> None:
    """Leave the process group once no collective is left (the main process then evaluates alone)."""
    import torch.distributed as dist

    if rt.world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _comm_device():
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_int(value: int, rt: Runtime) -> int:
    """The main process's `value` on every process (a plain run returns it unchanged)."""
    if rt.world.size == 1:
        return int(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(value)], dtype=torch.long, device=_comm_device())
    dist.broadcast(t, 0)
    return int(t.item())


def _trainer_class():
    """fastai's DistributedTrainer with a DataLoader whose index broadcast works on gloo (see the docstring)."""
    from fastai.distributed import DistributedDL, DistributedTrainer

    class ProcessGroupDL(DistributedDL):
        def _broadcast(self, t, rank):
            import torch
            import torch.distributed as dist

            t = torch.tensor(t, dtype=torch.long, device=_comm_device())
            dist.broadcast(t, rank)
            return t.cpu().tolist()

    class Trainer(DistributedTrainer):
        def _wrap_dl(self, dl):
            return dl if isinstance(dl, ProcessGroupDL) else ProcessGroupDL(dl, device=self.learn.model.device)

    return Trainer


@contextlib.contextmanager
def data_parallel(learn, rt: Runtime):
    """Train `learn` data-parallel across the launcher's processes (a no-op for one process). Each process
    reads its share of every epoch; DistributedDataParallel averages the gradients, so every optimizer step
    is one global step."""
    if rt.world.size == 1:
        yield learn
        return
    from accelerate.utils import DistributedDataParallelKwargs

    # mixed_precision="no": the precision is ours (make_learner), Accelerate must not add a second autocast.
    # find_unused_parameters: with mean pooling the backbone's own pooler gets no gradient, which plain DDP
    # reports as an error after the first step.
    trainer = _trainer_class()(sync_bn=False, cpu=rt.device == "cpu", mixed_precision="no",
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    learn.add_cb(trainer)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)
