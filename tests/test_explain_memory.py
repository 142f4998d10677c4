"""Explaining streams its variants: `python -m deployment.predict --explain` on many long texts needs no more
memory than on a few (beyond what plain prediction of the same rows needs), and the streamed evidence is
exactly the evidence of scoring every variant in one call."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import config
import deployment.explain as explaining
from deployment.predict import evidence_cell
from deployment.predictor import Predictor

FEW, MANY = 16, 256
CHARS = 1_500                   # ~18 sentences: every text is cut into the full 16 spans
WORDS = "dragon wizard love murder ghost planet kingdom the a of night letters detective crypt".split()
MARGIN_MIB = 15                 # RSS noise between two runs; unbounded, the 240 more texts cost ~175 MiB more


def long_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentences = []
        while sum(map(len, sentences)) < CHARS:
            sentences.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20))).capitalize() + ".")
        out.append(" ".join(sentences))
    return out


# ru_maxrss of a child counts the memory of the process it was forked (or vforked) from, so a command started
# straight from pytest would report pytest's own hundreds of MiB. A small launcher forks the command and
# reports the command's own peak from wait4 on its last stdout line.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_measured(args: list[str]) -> float:
    """Run `python -m deployment.predict ARGS`; its own peak RSS in MiB."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, "-m", "deployment.predict", *args], capture_output=True,
                          text=True, cwd=config.ROOT, timeout=300)
    maxrss_kb, code = map(int, proc.stdout.split("\n")[-2].split())
    assert proc.returncode == 0 and code == 0, proc.stderr[-2000:]
    return maxrss_kb / 1024


def test_explain_memory_does_not_grow_with_the_number_of_texts_and_evidence_is_unchanged(tiny_bundle, tmp_path,
                                                                                      monkeypatch):
    texts = long_texts(MANY)
    peaks = {}
    for n in (FEW, MANY):
        src = tmp_path / f"in{n}.jsonl"
        src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts[:n])))
        for explain in (False, True):
            out = tmp_path / f"out{n}{'-explain' if explain else ''}.jsonl"
            # --batch-size 1: every window runs alone, so a variant's score cannot depend on the others it is
            # scored with, and the evidence can be compared exactly below.
            args = ["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), "--quiet",
                    "--batch-size", "1", *(["--explain"] if explain else [])]
            peaks[n, explain] = run_measured(args)
    added = {n: peaks[n, True] - peaks[n, False] for n in (FEW, MANY)}
    assert added[MANY] <= added[FEW] + MARGIN_MIB, f"explaining {MANY} texts added {added[MANY]:.0f} MiB, {FEW} " \
                                                   f"texts {added[FEW]:.0f} MiB (peaks {peaks})"

    # The streamed evidence (the FEW run's variants took several scoring calls) is the one-call evidence.
    assert FEW * CHARS * explaining.MAX_SPANS > explaining.CHARS_PER_CALL
    got = [json.loads(line) for line in (tmp_path / f"out{FEW}-explain.jsonl").read_text().splitlines()]
    monkeypatch.setattr(explaining, "CHARS_PER_CALL", 10**12)
    reference = Predictor.from_bundle(tiny_bundle, batch_size=1).predict(texts[:FEW], explain=True)
    assert [row["evidence"] for row in got] == [evidence_cell(r) for r in reference]
    assert any(row["evidence"] for row in got)
    for row, text in zip(got, texts):
        for spans in row["evidence"].values():
            assert all(text[s["start"]:s["end"]] == s["text"] for s in spans)
