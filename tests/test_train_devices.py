"""Training devices, precision and data-parallel runs, on a CPU-only machine.

The device and precision choices are pure functions of what the machine has: tested here by passing the facts
in (and once through monkeypatched torch probes). Wrong settings are tested through the real command. A real
2-process run on the CPU (`accelerate launch`, gloo) trains a tiny random BERT and is compared with one process.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import config
from tests.test_train import tiny_backbone  # noqa: F401  (the seeded tiny BERT the F1 tolerance was measured on)
from tests.tiny_bundle import sample_texts
from training import devices
from training.devices import DeviceError, Machine, Runtime, World

LABELS = ["Fantasy", "Romance", "Mystery", "Science Fiction", "Horror"]
CPU_ONLY = Machine()
CPU_BF16 = Machine(cpu_bf16=True)
AMPERE = Machine(cuda=True, cuda_bf16=True, cuda_name="A100")
TURING = Machine(cuda=True, cuda_bf16=False, cuda_name="T4")
MAC = Machine(mps=True)


# --------------------------------------------------------------------------------------------- device choice
@pytest.mark.parametrize("machine, expected", [(CPU_ONLY, "cpu"), (MAC, "mps"), (AMPERE, "cuda"),
                                               (Machine(cuda=True, mps=True), "cuda")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(machine, expected):
    assert devices.choose_device("auto", machine) == expected


def test_accelerate_launch_cpu_forces_the_cpu_and_contradicts_an_explicit_gpu():
    assert devices.choose_device("auto", AMPERE, launcher_cpu=True) == "cpu"
    with pytest.raises(DeviceError, match="accelerate launch --cpu"):
        devices.choose_device("cuda", AMPERE, launcher_cpu=True)


@pytest.mark.parametrize("device, machine, message", [
    ("cuda", CPU_ONLY, "no CUDA GPU"), ("cuda", MAC, "no CUDA GPU"), ("mps", AMPERE, "MPS backend is not available"),
    ("tpu", CPU_ONLY, "--device must be one of")])
def test_a_device_the_machine_lacks_is_an_error(device, machine, message):
    with pytest.raises(DeviceError, match=message):
        devices.choose_device(device, machine)


# --------------------------------------------------------------------------------------------- precision choice
@pytest.mark.parametrize("requested, device, machine, expected", [
    ("auto", "cuda", AMPERE, "bf16"),         # bf16 where the GPU has it: no loss scaling needed
    ("auto", "cuda", TURING, "fp16"),         # else fp16 (with a gradient scaler)
    ("fp16", "cuda", AMPERE, "fp16"),
    ("fp32", "cuda", AMPERE, "fp32"),
    ("auto", "cpu", CPU_BF16, "bf16"),        # today's CPU rule: bf16 autocast only with native bf16
    ("auto", "cpu", CPU_ONLY, "fp32"),
    ("bf16", "cpu", CPU_ONLY, "bf16"),        # asked for explicitly: honoured (slower there, but valid)
    ("auto", "mps", MAC, "fp32"),
])
def test_precision_per_device(requested, device, machine, expected):
    assert devices.choose_precision(requested, device, machine) == expected


@pytest.mark.parametrize("requested, device, machine, message", [
    ("fp16", "cpu", CPU_BF16, "fp16 on the CPU"),
    ("bf16", "cuda", TURING, "no native bfloat16"),
    ("fp16", "mps", MAC, "not supported by this project"),
    ("fp8", "cuda", AMPERE, "--precision must be one of"),
])
def test_a_precision_the_device_cannot_run_is_an_error(requested, device, machine, message):
    with pytest.raises(DeviceError, match=message):
        devices.choose_precision(requested, device, machine)


def test_probe_reads_what_torch_reports(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    rt = devices.resolve_runtime("auto", "auto", env={})
    assert (rt.device, rt.precision, rt.device_name, rt.torch_device) == ("cuda", "fp16", "Tesla T4", "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    rt = devices.resolve_runtime("auto", "auto", env={})
    assert (rt.device, rt.precision) == ("mps", "fp32")


def test_deprecated_bf16_flag_maps_to_precision():
    assert [devices.fold_bf16_alias("auto", b) for b in ("on", "off", "auto", None)] == ["bf16", "fp32", "auto", "auto"]
    assert devices.fold_bf16_alias("bf16", "on") == "bf16"
    with pytest.raises(DeviceError, match="contradicts --precision fp32"):
        devices.fold_bf16_alias("fp32", "on")


def test_accelerate_mixed_precision_is_honoured_unless_it_contradicts_precision():
    env = {"ACCELERATE_MIXED_PRECISION": "fp16"}
    assert devices.resolve_runtime("auto", "auto", env=env, machine=TURING).precision == "fp16"
    with pytest.raises(DeviceError, match="contradicts `accelerate launch --mixed_precision fp16`"):
        devices.resolve_runtime("auto", "bf16", env=env, machine=AMPERE)
    with pytest.raises(DeviceError, match="fp16 on the CPU"):  # the launcher's fp16 on a CPU run
        devices.resolve_runtime("cpu", "auto", env=env, machine=AMPERE)
    assert devices.resolve_runtime("auto", "auto", env={"ACCELERATE_MIXED_PRECISION": "no"},
                                   machine=AMPERE).precision == "bf16"


# --------------------------------------------------------------------------------------------- world
def test_world_comes_from_the_launcher_environment():
    assert devices.world_from_env({}) == World(1, 0, 0)
    w = devices.world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (w.size, w.rank, w.local_rank, w.main) == (4, 3, 1, False)
    rt = devices.resolve_runtime("auto", "auto", env={"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"},
                                 machine=AMPERE)
    assert rt.torch_device == "cuda:1", "each process owns the GPU of its local rank"
    with pytest.raises(DeviceError, match="not within WORLD_SIZE"):
        devices.world_from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(DeviceError, match="several processes need CUDA GPUs or the CPU"):
        devices.resolve_runtime("mps", "auto", env={"WORLD_SIZE": "2", "RANK": "0"}, machine=MAC)


def test_accelerate_cpu_launch_that_started_one_process_is_caught():
    # what `accelerate launch --cpu --num_processes 2` (accelerate 1.15, no mpirun) hands its single process
    env = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(DeviceError, match="started a single process"):
        devices.world_from_env(env)
    assert devices.world_from_env({"ACCELERATE_USE_CPU": "True"}) == World()  # plain `accelerate launch --cpu`


def test_global_batch_splits_over_processes_and_the_data_must_feed_them():
    assert devices.per_process_batch(16, 100, 1) == 16
    assert devices.per_process_batch(16, 100, 2) == 8
    with pytest.raises(DeviceError, match="3 processes but only 2 training rows"):
        devices.per_process_batch(3, 2, 3)
    with pytest.raises(DeviceError, match="must split evenly over the 3 processes"):
        devices.per_process_batch(16, 100, 3)
    with pytest.raises(DeviceError, match="no full batch"):
        devices.per_process_batch(16, 12, 2)


@pytest.mark.parametrize("n, batch, world", [(100, 16, 2), (101, 16, 2), (479, 16, 2), (97, 12, 3), (64, 16, 4)])
def test_steps_per_epoch_is_what_fastais_sharded_loader_yields(n, batch, world):
    """The schedule counts global steps from this formula: it must equal the batches each process really gets
    from fastai's DistributedDL (rank 0's shuffle is used by all; `_broadcast` is its documented test hook)."""
    from fastai.data.load import DataLoader
    from fastai.distributed import DistributedDL

    class OneProcessDL(DistributedDL):
        def _broadcast(self, t, rank):
            return t

    counts = []
    for rank in range(world):
        dl = DataLoader(list(range(n)), bs=batch // world, shuffle=True, drop_last=True)
        counts.append(len(list(OneProcessDL(dl, rank=rank, world_size=world))))
    assert counts == [devices.steps_per_epoch(n, batch, world)] * world


def test_budget_replan_adopts_the_total_every_process_agreed_on():
    """Each process measures its own step times; the re-planned total must be the broadcast one (rank 0's),
    or the processes stop at different steps and the next gradient exchange waits forever."""
    import time

    import numpy as np

    from training.schedule import budgeted_one_cycle

    def replanned(agree):
        now = time.time()
        sched = budgeted_one_cycle(np.array([1e-3]), 1000, 0.1, now + 100, lambda per_step, ends: 0.0,
                                   steps_per_epoch=100, log=lambda *_: None, agree=agree)
        sched.step, sched.durations = 12, [0.5] * 11
        sched.replan(now)
        return sched

    alone = replanned(None)
    assert alone.total == 12 + 200 and alone.stopped_by_budget  # 100 s left at 0.5 s/step
    seen = []
    agreed = replanned(lambda n: seen.append(n) or 77)
    assert seen == [alone.total] and agreed.total == 77 and agreed.stopped_by_budget


def test_make_learner_uses_fastai_mixed_precision_on_cuda_and_autocast_wrapper_on_cpu(tiny_backbone, tiny_data):
    """No GPU here: the CUDA learner is built (not fitted) to check it gets fastai's MixedPrecision (fp16 with a
    GradScaler) on the GPU's DataLoaders, and the CPU bf16 learner gets the CPU autocast wrapper instead."""
    import torch
    from fastai.callback.fp16 import AMPMode, MixedPrecision

    from training.backbone import load_model_and_tokenizer
    from training.dataset import read_splits
    from training.learner import make_learner
    from training.loaders import blurr_dls
    from training.settings import TrainSettings

    sp = read_splits(tiny_data, 32, 0)
    s = TrainSettings(max_length=24, batch_size=8)
    built = {}
    for rt in (Runtime("cuda", "fp16", device_name="test"), Runtime("cpu", "bf16"), Runtime("cpu", "fp32")):
        model, tok = load_model_and_tokenizer(str(tiny_backbone), sp.labels)
        dls = blurr_dls(sp.frames["train"], sp.frames["valid"], sp.y["train"], sp.y["valid"], sp.labels, tok, model, s)
        built[rt.device, rt.precision] = make_learner(dls, model, sp.y["train"], s, rt)[0]
    cuda = built["cuda", "fp16"]
    mp = [cb for cb in cuda.cbs if isinstance(cb, MixedPrecision)]
    assert len(mp) == 1 and mp[0].amp_mode == AMPMode.FP16
    assert cuda.dls.device == torch.device("cuda:0")
    assert type(built["cpu", "bf16"].model).__name__ == "Bf16Wrapper"
    for key in (("cpu", "bf16"), ("cpu", "fp32")):
        assert not any(isinstance(cb, MixedPrecision) for cb in built[key].cbs)
        assert built[key].dls.device == torch.device("cpu")
    assert type(built["cpu", "fp32"].model).__name__ == "BaseModelWrapper"


# --------------------------------------------------------------------------------------------- the command
def _prepared(tmp: Path, n: int) -> Path:
    texts, targets = sample_texts(LABELS, n, seed=1)
    raw = tmp / "raw.csv"
    with raw.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["url", "title", "text", "labels"])
        for i, (t, y) in enumerate(zip(texts, targets)):
            w.writerow([f"https://example.test/{i}", f"t{i}", f"{t} (book {i})", json.dumps(y)])
    from training import prepare

    assert prepare.main(["--input", str(raw), "--out", str(tmp / "processed"), "--min-label-freq", "1", "--quiet"]) == 0
    return tmp / "processed"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """300 synthetic descriptions through the real prepare stage."""
    return _prepared(tmp_path_factory.mktemp("tiny_data"), 300)


@pytest.fixture(scope="module")
def parallel_data(tmp_path_factory) -> Path:
    """1200 synthetic descriptions (974 train / 107 valid / 119 test rows): enough test rows for a tight F1 check."""
    return _prepared(tmp_path_factory.mktemp("parallel_data"), 1200)


def _env() -> dict:
    # the worktree's code in every process the launcher starts; one CPU thread each (2 shared cores)
    return {**os.environ, "PYTHONPATH": str(config.ROOT), "OMP_NUM_THREADS": "1"}


def _train(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "training.train", *args], capture_output=True, text=True,
                          cwd=config.ROOT, env=_env(), timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:  # not accelerate's fixed 29500: other runs on this machine may hold it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args, processes=2, launcher=("--multi_gpu",), module="training.train", env=None, timeout=600):
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", *launcher, "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=config.ROOT, env={**_env(), **(env or {})},
                          timeout=timeout)


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "--device cuda: no CUDA GPU is available"),
    (["--device", "mps"], "--device mps: Apple's MPS backend is not available"),
    (["--device", "cpu", "--precision", "fp16"], "--precision fp16 on the CPU"),
])
def test_impossible_device_settings_fail_with_one_line_and_write_nothing(args, message, tmp_path, tiny_backbone,
                                                                         tiny_data):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if "mps" in args and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    r = _train("--data", str(tiny_data), "--out", str(tmp_path / "m"), "--backbone", str(tiny_backbone), *args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in _one_error_line(r.stderr)
    assert not (tmp_path / "m").exists()


def test_deprecated_bf16_flag_still_works_and_says_so(tmp_path, tiny_data, capsys):
    from training import train

    assert train.main(["--data", str(tiny_data), "--out", str(tmp_path / "m"), "--bf16", "on", "--precision",
                       "fp32"]) == 2
    assert "--bf16 on (deprecated: means --precision bf16) contradicts --precision fp32" in capsys.readouterr().err
    args = train.build_parser().parse_args(["--data", "d", "--bf16", "off"])
    assert devices.fold_bf16_alias(args.precision, args.bf16) == "fp32"
    # the alias alone is accepted with a deprecation warning (a data dir that is not there stops the run right
    # after it, before any model is loaded)
    assert train.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"), "--bf16", "off"]) == 2
    err = capsys.readouterr().err
    assert "warning: --bf16 is deprecated; use --precision fp32" in err and "prepared data folder not found" in err
    assert not (tmp_path / "m").exists()


def test_accelerate_cpu_flag_with_several_processes_is_refused_not_run_alone(tmp_path, tiny_backbone, tiny_data):
    r = _launch("--data", str(tiny_data), "--out", str(tmp_path / "m"), "--backbone", str(tiny_backbone),
                launcher=("--cpu",), timeout=300)
    assert r.returncode != 0
    assert "started a single process" in _one_error_line(r.stderr) and "--multi_gpu" in r.stderr
    assert not (tmp_path / "m").exists()


def test_more_processes_than_training_rows_is_a_clear_error(tmp_path, tiny_backbone, tiny_data):
    r = _launch("--data", str(tiny_data), "--out", str(tmp_path / "m"), "--backbone", str(tiny_backbone),
                "--device", "cpu", "--max-train-rows", "1", "--batch-size", "2", "--no-blend", timeout=300)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert errors and all("2 processes but only 1 training rows" in e for e in errors), r.stderr[-2000:]
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------------------------- real 2-process run
# Same settings for both runs; fp32 so that the CPU's bf16 support does not make the two differ.
TRAIN_ARGS = ["--max-length", "32", "--batch-size", "16", "--epochs", "6", "--lr", "1e-3", "--head-lr", "3e-3",
              "--seed", "0", "--pooling", "mean", "--no-blend", "--quiet", "--device", "cpu", "--precision", "fp32"]
# Tolerance on the transformer's test micro/macro-F1 (119 test rows). The two runs take the same 360 global
# steps but put rows into batches differently (fastai shards rank 0's shuffle), so they agree as two seeds do,
# not bit for bit. Measured on `parallel_data` with this backbone and these settings, seeds 0/1/2/3: one
# process micro-F1 0.985/0.976/0.980/0.983, two processes 0.980/0.973/0.981/0.981 (macro within 0.001 of
# micro); same-seed gaps <= 0.005, all eight runs within 0.012. 0.03 is 2.5x that spread (about six label
# decisions on 119 rows). On 479 training rows (F1 ~0.75, not saturated) seed-to-seed gaps reached 0.07: too
# noisy to compare. That the processes share gradients is checked directly (identical weights) in the
# budget test below; F1 alone could not show it on data this easy.
F1_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_backbone, parallel_data):
    root = tmp_path_factory.mktemp("runs")
    one = _train("--data", str(parallel_data), "--out", str(root / "one" / "model"), "--backbone",
                 str(tiny_backbone), *TRAIN_ARGS, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch("--data", str(parallel_data), "--out", str(root / "two" / "model"), "--backbone",
                  str(tiny_backbone), *TRAIN_ARGS)
    assert two.returncode == 0, two.stderr[-3000:]
    return root / "one" / "model", root / "two" / "model", two


@pytest.mark.slow
def test_two_cpu_processes_write_one_model_dir_and_record_the_world(two_runs):
    _, model, proc = two_runs
    assert [p.name for p in model.parent.iterdir()] == ["model"], "no stray dirs from the other process"
    m = json.loads((model / "metrics.json").read_text())
    assert (m["train"]["world_size"], m["train"]["device"], m["train"]["precision"]) == (2, "cpu", "fp32")
    assert m["train"]["steps"] == m["train"]["planned_steps"] == 6 * devices.steps_per_epoch(974, 16, 2) == 360
    s = json.loads((model / "settings.json").read_text())
    assert (s["device"], s["precision"], s["device_used"], s["precision_used"], s["world_size"]) == \
        ("cpu", "fp32", "cpu", "fp32", 2)
    # only the main process logs: one settings line, one summary
    assert proc.stdout.count("settings: ") == 1 and proc.stdout.count("done in ") == 1
    assert "2 processes (data-parallel)" in proc.stdout


@pytest.mark.slow
def test_two_cpu_processes_reach_the_f1_of_one(two_runs):
    one, two, _ = two_runs
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1["train"]["world_size"] == 1
    for key in ("micro_f1", "macro_f1"):
        assert abs(m1["transformer"][key] - m2["transformer"][key]) <= F1_TOLERANCE, (m1["transformer"][key],
                                                                                       m2["transformer"][key])
    # and both learned the synthetic genres (most frequent labels: 0.387)
    assert min(m1["transformer"]["micro_f1"], m2["transformer"]["micro_f1"]) > m1["most_frequent"]["micro_f1"] + 0.4


@pytest.mark.slow
def test_a_data_parallel_model_evaluates_and_exports_like_any_other(two_runs, tmp_path):
    from compression.quantize import build_bundle
    from training.evaluate import evaluate_saved

    _, model, _ = two_runs
    m = json.loads((model / "metrics.json").read_text())
    again = evaluate_saved(model, log=lambda *_: None)
    assert again["micro_f1"] == pytest.approx(m["model"]["micro_f1"], abs=1e-6)
    bundle = tmp_path / "bundle"
    build_bundle(model, bundle, bench_rounds=1, quiet=True)
    assert (bundle / "model.onnx").is_file()
    assert json.loads((bundle / "bundle.json").read_text())["labels"] == m["labels"]


@pytest.mark.slow
def test_two_cpu_processes_share_one_time_budget_and_end_with_the_same_weights(tmp_path, tiny_backbone, tiny_data):
    """Far more epochs than fit: both processes re-plan from their own step times and must adopt rank 0's
    total, then stop together (a disagreement hangs until the subprocess timeout). tests/ddp_probe.py (the same
    command) records each process's weights after training: identical means the gradients were shared."""
    out, probe = tmp_path / "budget", tmp_path / "probe"
    probe.mkdir()
    r = _launch("--data", str(tiny_data), "--out", str(out), "--backbone", str(tiny_backbone), "--max-length", "32",
                "--epochs", "200", "--time-budget", "30s", "--no-blend", "--quiet", "--device", "cpu",
                "--precision", "fp32", module="tests.ddp_probe", env={"DDP_PROBE_DIR": str(probe)}, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["world_size"] == 2 and m["train"]["stopped_by_budget"]
    assert m["train"]["steps"] < m["train"]["planned_steps"], m["train"]
    ranks = [json.loads((probe / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == ranks[0]["total"] == ranks[1]["total"] == m["train"]["steps"]
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys()
    for name, value in ranks[0]["weights"].items():
        assert ranks[1]["weights"][name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    lrs = [h["lr"] for h in json.loads((out / "history.json").read_text())]
    assert lrs[-1] < 0.05 * max(lrs), "the shortened schedule still anneals"


@pytest.mark.slow
def test_two_cpu_processes_train_the_top_layer_from_their_caches_with_shared_gradients(tmp_path, tiny_backbone,
                                                                                        tiny_data):
    """--train-layers under data parallelism: each process caches the frozen layer's output and reads its share
    of the cached rows; both must end with the same weights, the frozen ones untouched."""
    from transformers import AutoModel

    out, probe = tmp_path / "top", tmp_path / "probe"
    probe.mkdir()
    r = _launch("--data", str(tiny_data), "--out", str(out), "--backbone", str(tiny_backbone), "--max-length", "32",
                "--epochs", "2", "--train-layers", "1", "--no-blend", "--quiet", "--device", "cpu",
                "--precision", "fp32", module="tests.ddp_probe", env={"DDP_PROBE_DIR": str(probe)}, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["world_size"] == 2 and m["train"]["layers"]["trained"] == 1 and m["train"]["layers"]["cache"]
    assert m["train"]["steps"] == m["train"]["planned_steps"] == 2 * devices.steps_per_epoch(_train_rows(tiny_data), 16, 2)
    ranks = [json.loads((probe / f"rank{i}.json").read_text()) for i in (0, 1)]
    for name, value in ranks[0]["weights"].items():
        assert ranks[1]["weights"][name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    before = {k: float(v.double().sum()) for k, v in AutoModel.from_pretrained(tiny_backbone).state_dict().items()
              if v.is_floating_point()}
    after = {k.removeprefix("hf.").removeprefix("bert."): v for k, v in ranks[0]["weights"].items()
             if k.removeprefix("hf.").startswith("bert.")}
    assert after, list(ranks[0]["weights"])[:5]
    for k, v in after.items():
        if k.startswith("embeddings.") or k.startswith("encoder.layer.0."):
            assert v == pytest.approx(before[k], rel=1e-12, abs=1e-12), k   # sums: equal up to summation order
    assert any(abs(after[k] - before[k]) > 1e-4 for k in after if k.startswith("encoder.layer.1."))


def _train_rows(data: Path) -> int:
    import pandas as pd

    return int((pd.read_csv(Path(data) / "dataset.csv")["split"] == "train").sum())


def test_a_run_that_slows_down_late_is_shortened_never_lengthened():
    """The early plan assumed 0.5 s a step; from step 500 on the steps take 1 s: the check at half the total
    shortens the schedule to what the deadline still allows, and a faster run is never lengthened late."""
    import time

    import numpy as np

    from training.schedule import budgeted_one_cycle

    def late(durations, total=1000, step=500):
        now = time.time()
        sched = budgeted_one_cycle(np.array([1e-3]), total, 0.1, now + 200, lambda per_step, ends: 0.0,
                                   steps_per_epoch=100, log=lambda *_: None)
        sched.planned, sched.total, sched.step, sched.durations = 5000, total, step, durations
        sched.replan(now, late=True)
        return sched

    slowed = late([0.5] * 400 + [1.0] * 100)
    assert slowed.total == 500 + 200 and slowed.stopped_by_budget   # 200 s left at 1 s a step
    faster = late([0.1] * 500)
    assert faster.total == 1000                                     # 2,000 steps would fit; the plan stays
