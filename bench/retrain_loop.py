"""The learning loop on a real data set, end to end through the project's commands, with the numbers.

    python -m bench.retrain_loop --data ../shared/data/stackoverflow_titles.jsonl.gz --time-budget 5m

1. `training.prepare` the whole data set (the split every later step keeps);
2. hold back a share (`--held-share`, 20%) of the train texts; prepare the rest, keeping their splits
   (`--previous`), train model A on it (`--time-budget`), compress it, `deployment.registry promote` it;
3. serve it (`python -m flask_app --registry --feedback`) and post the held-back texts' true labels as
   corrections through the JSON API, as a user would: predict, then correct what the answer said (`--clients`
   threads);
4. `feedback export`; prepare again with the corrections (old texts keep their split, the corrected ones are new:
   a share goes to the `feedback` slice, the rest is split like any new text); train model B with the same budget;
   compress it;
5. `deployment.registry compare` B with A on the rows neither trained on, then `promote`; time until the running
   server answers with B.

Every command is printed as it runs. Prints a table and writes JSON (default bench/results/retrain_loop.json);
the work folder (models, data, the SQLite database) stays for inspection (`--work`, default a temp folder).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import config
from deployment.files import large_csv_fields

COMPRESS_ARGS = ["--candidates", "int8", "--bench-rounds", "0"]


def sh(cmd: list[str], env: dict, log: list, capture: bool = False) -> subprocess.CompletedProcess:
    """Run one project command from the repo root, print it, time it; SystemExit when it fails."""
    shown = " ".join(shlex.quote(str(c)) for c in cmd).replace(sys.executable, "python")
    print(f"\n$ {shown}", flush=True)
    t0 = time.time()
    proc = subprocess.run([str(c) for c in cmd], cwd=config.ROOT, env=env, text=True,
                          capture_output=capture)
    log.append({"command": shown, "seconds": round(time.time() - t0, 1), "exit": proc.returncode})
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shown}\n{(proc.stderr or '')[-3000:]}")
    return proc


def read_rows(dataset: Path) -> list[dict]:
    with large_csv_fields(), open(dataset, newline="", encoding="utf-8") as fh:
        return [{"text": r["text"], "labels": json.loads(r["labels"]), "split": r["split"]} for r in csv.DictReader(fh)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"text": r["text"], "labels": r["labels"]}, ensure_ascii=False) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def post_corrections(base: str, token: str, rows: list[dict], clients: int) -> dict:
    """Each held-back text: POST /api/predict, then POST /api/feedback with its true labels and the version that
    answered. Returns counts and the rate."""
    import requests

    lock, done, errors = threading.Lock(), [0], []
    t0 = time.time()

    def client(part: list[dict]) -> None:
        with requests.Session() as s:
            for i, r in enumerate(part):
                answer = s.post(base + "/api/predict", json={"text": r["text"]}, timeout=120)
                body = {"text": r["text"], "labels": r["labels"], "model_version": answer.json()["model_version"],
                        "client_ref": f"loop-{abs(hash(r['text'])) % 10**12}"}
                fb = s.post(base + "/api/feedback", json=body, timeout=120, headers={"Authorization": f"Bearer {token}"})
                with lock:
                    done[0] += 1
                    if fb.status_code not in (200, 201):
                        errors.append(f"{fb.status_code}: {fb.text[:200]}")
                    if done[0] % 500 == 0:
                        print(f"  corrections posted: {done[0]}/{len(rows)} ({done[0] / (time.time() - t0):.1f}/s)",
                              flush=True)

    parts = [rows[c::clients] for c in range(clients)]
    threads = [threading.Thread(target=client, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.time() - t0
    return {"posted": done[0], "errors": len(errors), "error_examples": errors[:5], "seconds": round(seconds, 1),
            "per_second": round(done[0] / seconds, 1)}


def start_server(env: dict, port: int, log_path: Path) -> subprocess.Popen:
    import requests

    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "flask_app", "--registry", "--feedback", "--port", str(port)],
                            cwd=config.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"the server did not start; see {log_path}")


def metrics(model: Path) -> dict:
    m = json.loads((model / "metrics.json").read_text())
    return {k: round(m["model"][k], 4) for k in ("micro_f1", "macro_f1")}


def table(result: dict) -> str:
    lines = ["| model | train rows | steps (epochs) | its own test split: micro / macro-F1 |", "| --- | --- | --- | --- |"]
    for name in ("A", "B"):
        m = result["models"][name]
        lines.append(f"| {name} ({m['version'][:12]}) | {m['train_rows']} | {m['steps']} ({m['epochs']:.2f}) | "
                     f"{m['test']['micro_f1']:.3f} / {m['test']['macro_f1']:.3f} |")
    lines += ["", "| rows (neither model trained on) | n | A micro-F1 [95% CI] | B micro-F1 [95% CI] | Δ micro [95% CI] "
              "| A macro-F1 | B macro-F1 | Δ macro [95% CI] |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in result["comparison"]["slices"].items():
        a, b, d = s["incumbent"], s["candidate"], s["delta"]

        def ci(m, k, sign=""):
            return f"{m[k]:{sign}.3f} [{m[k + '_ci'][0]:{sign}.3f}, {m[k + '_ci'][1]:{sign}.3f}]"
        lines.append(f"| {name} | {s['rows']} | {ci(a, 'micro_f1')} | {ci(b, 'micro_f1')} | {ci(d, 'micro_f1', '+')} | "
                     f"{a['macro_f1']:.3f} | {b['macro_f1']:.3f} | {ci(d, 'macro_f1', '+')} |")
    c = result["comparison"]["changed"]
    lines.append(f"\ndecisions changed: {c['decisions']} on {c['rows']} rows ({c['fixed']} fixed, {c['broken']} broken); "
                 f"promoted: {result['promoted']}; the server answered with B {result['switch_seconds']} s after the "
                 f"promote; corrections: {result['corrections']['posted']} at {result['corrections']['per_second']}/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.retrain_loop", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=config.SHARED_DIR / "data" / "stackoverflow_titles.jsonl.gz")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    ap.add_argument("--time-budget", default="5m",
                    help="training.train --time-budget for each model; `none` for none (then give --epochs in "
                         "--train-args: the same work per row for both models, whatever else runs on the machine)")
    ap.add_argument("--train-args", default="--max-length 64", help="more training.train options, one string")
    ap.add_argument("--held-share", type=float, default=0.2, help="share of the train texts held back as corrections")
    ap.add_argument("--min-label-freq", default="0.01", help="training.prepare --min-label-freq")
    ap.add_argument("--clients", type=int, default=4, help="threads posting corrections")
    ap.add_argument("--port", type=int, default=5099)
    ap.add_argument("--out", type=Path, default=config.ROOT / "bench" / "results" / "retrain_loop.json")
    args = ap.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"error: {args.data} not found (the real data lives in ../shared/data)")
    work = (args.work or Path(tempfile.mkdtemp(prefix="retrain-loop-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLTC_DB_URL": f"sqlite:///{work / 'state.db'}", "MLTC_REGISTRY_DIR": str(work / "registry"),
           "MLTC_FEEDBACK_RATE": "off", "MLTC_REGISTRY_POLL": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLTC_BUNDLE", None)
    py, steps, t_start = sys.executable, [], time.time()
    prep = [py, "-m", "training.prepare", "--min-label-freq", args.min_label_freq, "--quiet"]
    budget = [] if args.time_budget == "none" else ["--time-budget", args.time_budget]
    train = [py, "-m", "training.train", *budget, "--quiet", *shlex.split(args.train_args)]

    sh([*prep, "--input", args.data, "--out", work / "full"], env, steps)
    rows = read_rows(work / "full" / "dataset.csv")
    train_rows = [r for r in rows if r["split"] == "train"]
    held = random.Random(0).sample(train_rows, int(args.held_share * len(train_rows)))
    held_texts = {r["text"] for r in held}
    base = write_jsonl(work / "base.jsonl", [r for r in rows if r["text"] not in held_texts])
    sh([*prep, "--input", base, "--out", work / "base", "--previous", work / "full"], env, steps)
    sh([*train, "--data", work / "base", "--out", work / "model-a"], env, steps)
    sh([py, "-m", "compression.quantize", "--model", work / "model-a", *COMPRESS_ARGS], env, steps)
    sh([py, "-m", "deployment.registry", "promote", work / "model-a" / "bundle", "--by", "bench"], env, steps)
    token = sh([py, "-m", "feedback", "tokens", "add", "loop"], env, steps, capture=True).stdout.strip()
    server = start_server(env, args.port, work / "server.log")
    base_url = f"http://127.0.0.1:{args.port}"
    try:
        print(f"\nposting {len(held)} corrections through {base_url}/api/feedback ({args.clients} clients)", flush=True)
        corrections = post_corrections(base_url, token, held, args.clients)
        sh([py, "-m", "feedback", "export", "--out", work / "corrections.jsonl", "--quiet"], env, steps)
        sh([*prep, "--input", base, "--corrections", work / "corrections.jsonl", "--out", work / "retrain",
            "--previous", work / "base"], env, steps)
        sh([*train, "--data", work / "retrain", "--out", work / "model-b"], env, steps)
        sh([py, "-m", "compression.quantize", "--model", work / "model-b", *COMPRESS_ARGS], env, steps)
        sh([py, "-m", "deployment.registry", "compare", work / "model-b" / "bundle", "--json",
            "--out", work / "comparison.json"], env, steps, capture=True)
        promote = subprocess.run([py, "-m", "deployment.registry", "promote", work / "model-b" / "bundle",
                                  "--by", "bench"], cwd=config.ROOT, env=env, capture_output=True, text=True)
        print(promote.stdout[-2000:], promote.stderr[-2000:])
        steps.append({"command": "python -m deployment.registry promote <model-b>/bundle", "exit": promote.returncode})
        t0, switch = time.time(), None
        import requests
        from deployment.version import bundle_version

        b_version = bundle_version(work / "model-b" / "bundle")
        while promote.returncode == 0 and time.time() - t0 < 120:
            if requests.post(base_url + "/api/predict", json={"text": "pandas groupby"}, timeout=30).json()[
                    "model_version"] == b_version:
                switch = round(time.time() - t0, 1)
                break
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=60)
    from deployment.version import bundle_version

    models = {}
    for name, folder, data in (("A", "model-a", "base"), ("B", "model-b", "retrain")):
        split_rows = read_rows(work / data / "dataset.csv")
        run = json.loads((work / folder / "metrics.json").read_text())["train"]
        models[name] = {"version": bundle_version(work / folder / "bundle"), "test": metrics(work / folder),
                        "steps": run.get("steps"), "epochs": run.get("epochs_done"),
                        "train_seconds": run.get("train_seconds"),
                        "train_rows": sum(r["split"] == "train" for r in split_rows),
                        "splits": {s: sum(r["split"] == s for r in split_rows) for s in ("train", "valid", "test", "feedback")}}
    comparison = json.loads((work / "comparison.json").read_text())
    result = {"data": str(args.data), "work": str(work), "time_budget": args.time_budget, "train_args": args.train_args,
              "held_share": args.held_share, "held_texts": len(held), "corrections": corrections, "models": models,
              "comparison": {k: comparison[k] for k in ("rows", "slices", "changed", "bootstrap")},
              "promoted": promote.returncode == 0, "switch_seconds": switch, "steps": steps,
              "wall_seconds": round(time.time() - t_start, 1)}
    result["table"] = table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print("\n" + result["table"])
    print(f"\nretrain loop: {len(held)} corrections, A -> B {'promoted' if result['promoted'] else 'not promoted'}, "
          f"{result['wall_seconds'] / 60:.1f} min -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
