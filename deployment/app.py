"""Gradio app over one model bundle, laid out so this folder can be pushed as a Hugging Face Space.

    python -m deployment.app --bundle models/books/bundle [--host 127.0.0.1] [--port 7860]
    MLTC_BUNDLE=models/books/bundle python -m deployment.app

In a Space (this folder as the repo root, `python app.py`) the bundle is read from ./bundle. Two tabs: one
text with examples, a confidence chart, the predicted labels and (the "Highlight why" box, ticked by default)
the text with each predicted label's evidence highlighted (`/explain`, run after `/predict`); a CSV in, the
same CSV with predictions out (through the batch CLI's own code, deployment/predict.py: the same columns and error cells). Thresholds are the bundle's tuned per-label ones unless the user overrides them with one number.
With `--feedback [--db URL]` (or MLTC_FEEDBACK=1) the text tab also offers a correction: every label of the model
as a checkbox, the predicted ones ticked, and "Save correction", stored in the same database as the Flask site's
(feedback.service; the repo's `feedback` package must be importable, so not in a bare Space). Gradio's flagging
is not used: corrections are the one way to say a prediction was wrong.
With `--registry [--db URL]` (or MLTC_REGISTRY=1) it serves the model registry's current model and switches to a
new one within seconds of `python -m deployment.registry promote` / `rollback` (deployment/registry/live.py); every
answer names the model version that gave it.
Inference is `Predictor` only: this file never tokenises or thresholds anything itself.
"""
from __future__ import annotations

import argparse
import csv
import html
import math
import os
import sys
import tempfile
from pathlib import Path

if __package__:   # `python -m deployment.app` or `import deployment.app` in the repo
    from .cli_types import port, positive_int
    from .web import (EVIDENCE_PALETTE, MAX_TEXT_CHARS, highlights, label_colors, length_problem, segments,
                      truncation_notice)
else:             # the Space: this folder is the root and app.py runs as a script
    from cli_types import port, positive_int  # type: ignore[no-redef]
    from web import (EVIDENCE_PALETTE, MAX_TEXT_CHARS, highlights, label_colors, length_problem,  # type: ignore[no-redef]
                     segments, truncation_notice)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio is imported; the Space has no config.py
if os.environ.get("GRADIO_SERVER_PORT"):   # Gradio itself int()s it at import: a traceback for "http"
    try:
        port(os.environ["GRADIO_SERVER_PORT"])
    except argparse.ArgumentTypeError as err:
        sys.stderr.write(f"error: $GRADIO_SERVER_PORT {err}\n")
        raise SystemExit(2) from None

import gradio as gr  # noqa: E402

if __package__:
    from .examples import load_examples
    from .files import LocationError
    from .predict import predict_file, scan
    from .predictor import BundleError, InputError, Predictor
else:
    from examples import load_examples  # type: ignore[no-redef]
    from files import LocationError  # type: ignore[no-redef]
    from predict import predict_file, scan  # type: ignore[no-redef]
    from predictor import BundleError, InputError, Predictor  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = HERE / "bundle"   # where the Space keeps its bundle; in the repo pass --bundle or MLTC_BUNDLE
MAX_CSV_ROWS = 20_000              # a batch larger than this belongs to `python -m deployment.predict`
MAX_CSV_BYTES = 20 * 1024 * 1024   # upload limit handed to Gradio
DEFAULT_TOP_K = 10                 # labels in the confidence chart
PREVIEW_ROWS = 20                  # rows of the batch result shown on the page

CSS = """
.mltc-chips { display: flex; flex-wrap: wrap; gap: 8px; margin: 4px 0; }
.mltc-chip { display: inline-flex; align-items: center; gap: 6px; padding: 4px 12px; border-radius: 999px;
  background: var(--primary-100, #e0e7ff); color: var(--primary-800, #3730a3); font-weight: 600; }
.mltc-chip small { font-weight: 400; opacity: .8; }
.mltc-swatch { width: 18px; height: 18px; border-radius: 5px; display: inline-block;
  box-shadow: inset 0 0 0 1px rgba(0,0,0,.2); }
.mltc-title { font-weight: 600; margin: 4px 0 8px; }
.mltc-version { font-size: .85em; opacity: .75; margin: -4px 0 8px; }
.mltc-none { color: var(--body-text-color-subdued, #666); }
"""


def user_error(message: str) -> gr.Error:
    """A gr.Error for input the user can fix: shown to them, without a traceback in the server's log."""
    return gr.Error(message, print_exception=False)


def _number_problem(payload) -> str | None:
    if isinstance(payload, bool) or not isinstance(payload, (int, float)) or not math.isfinite(payload):
        return "expected a finite number"
    return None


def _bool_problem(payload) -> str | None:
    return None if isinstance(payload, bool) else "expected true or false"   # "no" would be truthy


def strict_input(component, problem):
    """Refuse a malformed API value for `component` with a message naming it, then run Gradio's own preprocess.

    Gradio's preprocessing raises a bare TypeError on a slider value like "abc" or NaN, which reaches an API
    client as an error without a message. Wrapped on the instance: a component subclass would make Gradio
    write a .pyi stub beside this file at import (and fail on a read-only Space).
    """
    original = component.preprocess

    def preprocess(payload):
        reason = problem(payload)
        if reason:
            raise user_error(f"{component.label}: {reason}, got {str(payload)[:40]!r}")
        return original(payload)

    component.preprocess = preprocess
    return component


def predicted_html(pred: dict | None, colors: dict[str, str], version: str | None = None) -> str:
    """The predicted labels as chips (with a colour swatch for colour bundles); every label is escaped. `version`:
    the model that answered, named under the title."""
    title = '<div class="mltc-title">Predicted labels</div>'
    if version:
        v = html.escape(version)
        title += f'<div class="mltc-version">model <code title="{v}">{v[:12]}</code></div>'
    if pred is None:
        return title + '<p class="mltc-none">Predicted labels appear here.</p>'
    chosen = [x for x in pred["labels"] if x["predicted"]]
    if not pred["predicted"]:
        return title + '<p class="mltc-none">No label reached its threshold; the chart shows the closest ones.</p>'
    # `labels` may be cut to top_k; `predicted` is complete, so fall back to it for names beyond the cut.
    scores = {x["label"]: x["score"] for x in chosen}
    chips = []
    for name in pred["predicted"]:
        color = colors.get(name)
        swatch = f'<span class="mltc-swatch" style="background:{color}"></span>' if color else ""
        score = f" <small>{scores[name]:.0%}</small>" if name in scores else ""
        chips.append(f'<span class="mltc-chip" title="{html.escape(name)}">{swatch}{html.escape(name)}{score}</span>')
    return title + '<div class="mltc-chips">' + "".join(chips) + "</div>"


def highlighted_text(text: str, pred: dict) -> gr.HighlightedText:
    """The text as `gr.HighlightedText` segments, each tagged with the predicted label(s) whose evidence covers it
    ("A + B" where two labels' spans overlap), coloured as on the Flask site."""
    value, colors = [], {}
    for seg in segments(text, highlights(pred)):
        name = " + ".join(x["label"] for x in seg["labels"]) or None
        if name:
            colors[name] = EVIDENCE_PALETTE[seg["labels"][0]["color"]]
        value.append((seg["text"], name))
    return gr.HighlightedText(value=value, color_map=colors)


class App:
    """The predictor plus the handlers the UI calls (plain methods, so they are testable without a browser).

    `models` (a deployment.registry.live LiveModel) replaces the one `predictor` with the registry's current model;
    each handler takes `self.predictor` once and answers with that model throughout."""

    def __init__(self, predictor: Predictor | None, bundle_dir: str | Path | None = None, feedback=None, models=None):
        self.models = models if models is not None else _Fixed(predictor)
        self.feedback = feedback   # a feedback.service.Feedback when corrections are on, else None
        predictor = self.predictor
        self.info = dict(predictor.info or {})
        self.examples = load_examples(bundle_dir, n=5)
        thresholds = list(predictor.thresholds)
        self.threshold_range = (min(thresholds), max(thresholds))
        gt = self.info.get("global_threshold")
        self.global_threshold = float(gt) if isinstance(gt, (int, float)) else 0.5

    @property
    def predictor(self) -> Predictor:
        """The model answering now (the registry may swap it between two calls, never within one)."""
        return self.models.current().model

    def _threshold(self, use_tuned: bool, threshold: float | None) -> float | None:
        return None if use_tuned or threshold is None else float(threshold)

    def predict(self, text: str, use_tuned: bool, threshold: float, top_k: int):
        text = text or ""
        predictor = self.predictor
        problem = predictor.text_problem(text) or length_problem(text)   # the predictor's rule, the web's limit
        if problem:
            raise user_error(f"The text {problem}.")
        try:
            pred = predictor.predict([text], threshold=self._threshold(use_tuned, threshold))[0]
        except InputError as err:   # anything else the predictor refuses is still the user's to fix
            raise user_error(str(err)) from None
        top = pred["labels"][: max(1, int(top_k))]
        notice = truncation_notice(pred, predictor.max_length, predictor.info.get("windows"))
        notice = f"⚠️ {notice}" if notice else ""
        return ({x["label"]: x["score"] for x in top}, predicted_html(pred, label_colors(predictor.info), predictor.version),
                notice)

    def explain(self, text: str, use_tuned: bool, threshold: float, explain: bool):
        """The text with its evidence highlighted (one predict call with explain=True); empty when the box is off."""
        text = text or ""
        if not explain or not text.strip():
            return gr.HighlightedText(value=None)
        predictor = self.predictor
        problem = predictor.text_problem(text) or length_problem(text)
        if problem:
            raise user_error(f"The text {problem}.")
        try:
            pred = predictor.predict([text], threshold=self._threshold(use_tuned, threshold), explain=True)[0]
        except InputError as err:
            raise user_error(str(err)) from None
        return highlighted_text(text, pred)

    def repredict(self, text: str, use_tuned: bool, threshold: float, top_k: int):
        """Live update when a control moves: nothing to do (and no error) while the text box is empty."""
        if not (text or "").strip():
            return gr.skip(), gr.skip(), gr.skip()
        return self.predict(text, use_tuned, threshold, top_k)

    def reexplain(self, text: str, use_tuned: bool, threshold: float, explain: bool):
        """Live update of the highlights when a control moves: nothing to do while the text box is empty."""
        if not (text or "").strip():
            return gr.skip()
        return self.explain(text, use_tuned, threshold, explain)

    def prefill(self, text: str, use_tuned: bool, threshold: float):
        """The correction box after a prediction: the model's labels offered, the predicted ones ticked (the message
        of an earlier save cleared), and the version that predicted them kept for the save."""
        predictor = self.predictor
        if not (text or "").strip() or predictor.text_problem(text) or length_problem(text):
            return gr.skip(), gr.skip(), gr.skip()
        try:
            pred = predictor.predict([text], threshold=self._threshold(use_tuned, threshold))[0]
        except InputError:
            return gr.skip(), gr.skip(), gr.skip()
        return gr.update(choices=list(predictor.labels), value=pred["predicted"]), "", predictor.version

    def save_correction(self, text: str, labels: list[str] | None, suggested: str, use_tuned: bool,
                        threshold: float, seen_version: str | None = None, request: gr.Request = None):
        """Store the ticked labels as the text's full correct set (feedback.service: the Flask site's rules), as a
        correction of the version that predicted them (`seen_version`, kept by `prefill`; else the current one)."""
        from feedback.store import Refused

        if self.feedback is None:
            raise user_error("Corrections are off: start the app with --feedback.")
        address = request.client.host if request is not None and request.client is not None else None
        try:
            cid, _, changes = self.feedback.submit(
                text=text or "", labels=list(labels or []), model_version=seen_version or self.feedback.version,
                face="gradio",
                client_key=self.feedback.client_key_for_address(address),
                suggested=[x.strip() for x in (suggested or "").splitlines() if x.strip()],
                threshold=self._threshold(use_tuned, threshold))
        except Refused as err:
            raise user_error(f"Not saved: {err}") from None
        counts = {kind: sum(1 for c in changes.values() if c == kind) for kind in ("confirmed", "removed", "added")}
        return (f"Correction saved (#{cid}): {counts['confirmed']} confirmed, {counts['removed']} removed, "
                f"{counts['added']} added. Thank you.")

    def predict_csv(self, file, use_tuned: bool, threshold: float, top_k: int, progress=gr.Progress()):
        """The batch CLI's own path (deployment.predict.predict_file): same rows, columns and error cells."""
        if file is None:
            raise user_error("Upload a CSV file with a text column first.")
        path = Path(file if isinstance(file, (str, Path)) else file.name)
        out_path = Path(tempfile.mkdtemp(prefix="mltc-batch-")) / f"{path.stem}_predictions.csv"
        try:
            n_rows, _ = scan(path, "text")
            if n_rows > MAX_CSV_ROWS:
                raise user_error(f"The CSV has {n_rows:,} rows, more than {MAX_CSV_ROWS:,}; use "
                                 "`python -m deployment.predict` for large files.")
            stats = predict_file(self.predictor, path, out_path, text_column="text",
                                 threshold=self._threshold(use_tuned, threshold), top_k=int(top_k), progress=False,
                                 on_chunk=lambda done, total: progress((done, total), desc="Predicting"))
        except (LocationError, InputError) as err:   # the upload's temporary path means nothing to the user
            raise user_error(f"The CSV cannot be used: {str(err).replace(str(path), path.name)}") from None
        summary = (f"Predicted {stats['predicted']:,} of {stats['rows']:,} rows"
                   + (f" ({stats['errors']:,} with an error: see the error column)" if stats["errors"] else "")
                   + (f"; {stats['truncated']:,} texts were longer than the model reads and were cut"
                      if stats["truncated"] else "") + ".")
        with open(out_path, newline="", encoding="utf-8") as fh:
            preview = [[(r.get("text") or "")[:120], r["predicted_labels"]]
                       for r, _ in zip(csv.DictReader(fh), range(PREVIEW_ROWS))]
        return str(out_path), preview, summary

    # ------------------------------------------------------------------------------------------------ UI
    def build(self) -> gr.Blocks:
        info, pred = self.info, self.predictor   # what the page says at start; each answer names its own model
        n_labels = len(pred.labels)
        metrics = info.get("metrics") or {}
        model_metrics = metrics.get("model", metrics) if isinstance(metrics, dict) else {}
        facts = [f"{n_labels} labels", f"reads up to {pred.max_length} tokens"]
        if getattr(pred, "version", None):
            facts.append(f"model `{pred.version[:12]}`")
        if info.get("backbone"):
            facts.append(f"backbone `{info['backbone']}`")
        for key in ("micro_f1", "macro_f1"):
            if isinstance(model_metrics.get(key), (int, float)):
                facts.append(f"test {key.replace('_', '-')} {model_metrics[key]:.3f}")
        lo, hi = self.threshold_range
        with gr.Blocks(title="Multilabel text classifier") as demo:
            gr.Markdown("# Multilabel text classifier\n"
                        "Paste a text and the model suggests every label that applies. " + " · ".join(facts))
            with gr.Row():
                use_tuned = gr.Checkbox(
                    value=True, label="Use the tuned per-label thresholds",
                    info=f"Each label has its own threshold, tuned on the validation split ({lo:.2f}–{hi:.2f}).")
                threshold = gr.Slider(
                    0.0, 1.0, value=round(self.global_threshold, 2), step=0.01, interactive=False,
                    label="One threshold for every label",
                    info=f"Untick the box to use this instead. It starts at the tuned global threshold "
                         f"({self.global_threshold:.2f}); lower finds more labels, higher fewer.")
                top_k = gr.Slider(1, n_labels, value=min(DEFAULT_TOP_K, n_labels), step=1,
                                  label="Labels in the chart (top-k)")
            strict_input(use_tuned, _bool_problem)
            strict_input(threshold, _number_problem)
            strict_input(top_k, _number_problem)
            use_tuned.change(lambda tuned: gr.update(interactive=not tuned), use_tuned, threshold,
                             api_visibility="private")
            with gr.Tab("One text"):
                with gr.Row():
                    with gr.Column(scale=3):
                        text = gr.Textbox(lines=9, max_lines=20, label="Text", max_length=MAX_TEXT_CHARS,
                                          placeholder="Paste a book description, a question, …")
                        with gr.Row():
                            button = gr.Button("Predict labels", variant="primary")
                            explain = gr.Checkbox(value=True, label="Highlight why",
                                                  info="The parts of the text behind each predicted label")
                    with gr.Column(scale=2):
                        chips = gr.HTML(predicted_html(None, {}), js_on_load=None)
                        notice = gr.Markdown()
                        chart = gr.Label(label="Confidence (top-k)", show_heading=False)
                evidence = gr.HighlightedText(
                    label="Why these labels? Each predicted label's strongest evidence (removing it lowers the "
                          "label's score most)", show_legend=True, show_inline_category=False)
                strict_input(explain, _bool_problem)
                if self.feedback is not None:
                    with gr.Accordion("Correct the labels", open=True):
                        correction = gr.CheckboxGroup(
                            choices=list(pred.labels), value=[], label="Labels that apply",
                            info="The predicted labels are ticked: untick the wrong ones, tick the missing ones.")
                        suggested = gr.Textbox(lines=1, max_lines=5, label="Labels the model does not have (optional)",
                                               info="One per line; kept apart as suggestions.")
                        save = gr.Button("Save correction")
                        saved = gr.Markdown()
                        seen = gr.State(None)   # the version whose prediction the boxes were filled from
                    save.click(self.save_correction, [text, correction, suggested, use_tuned, threshold, seen], saved,
                               api_name="save_correction")
                if self.examples.items:
                    gr.Examples([[ex.text] for ex in self.examples.items], inputs=[text],
                                label=f"Examples — {self.examples.source}", cache_examples=False,
                                example_labels=[ex.title for ex in self.examples.items])
                inputs, outputs = [text, use_tuned, threshold, top_k], [chart, chips, notice]
                why = [text, use_tuned, threshold, explain]
                # /predict answers first; the evidence (one more scoring call per span) follows as /explain.
                button.click(self.predict, inputs, outputs, api_name="predict").success(
                    self.explain, why, evidence, api_name="explain")
                text.submit(self.predict, inputs, outputs, api_visibility="private").success(
                    self.explain, why, evidence, api_visibility="private")
                if self.feedback is not None:
                    for trigger in (button.click, text.submit):
                        trigger(self.prefill, [text, use_tuned, threshold], [correction, saved, seen],
                                api_visibility="private")
                for control, event in ((use_tuned, "change"), (threshold, "release"), (top_k, "release")):
                    getattr(control, event)(self.repredict, inputs, outputs, api_visibility="private")
                for control, event in ((use_tuned, "change"), (threshold, "release"), (explain, "change")):
                    getattr(control, event)(self.reexplain, why, evidence, api_visibility="private")
            with gr.Tab("Batch (CSV)"):
                gr.Markdown("Upload a UTF-8 CSV with a **`text`** column. You get the same CSV back with five "
                            "columns added, as `python -m deployment.predict` writes them: `predicted_labels` "
                            "(a JSON list), `scores` (the top-k labels with their confidence, JSON), `truncated`, "
                            "`n_tokens` and `error` (why a row could not be predicted, e.g. an empty text). "
                            "The threshold settings above apply.")
                with gr.Row():
                    csv_in = gr.File(label="CSV with a text column", file_types=[".csv"], type="filepath")
                    csv_out = gr.File(label="Predictions (download)", interactive=False)
                csv_button = gr.Button("Predict the CSV", variant="primary")
                csv_summary = gr.Markdown()
                csv_preview = gr.Dataframe(headers=["text", "predicted"], label=f"First {PREVIEW_ROWS} rows",
                                           interactive=False, wrap=True)
                csv_button.click(self.predict_csv, [csv_in, use_tuned, threshold, top_k],
                                 [csv_out, csv_preview, csv_summary], api_name="predict_csv")
        return demo


def open_feedback(predictor, db_url: str | None = None):
    """The corrections store for this app (feedback.service, shared with the Flask site); its rate limit from
    $MLTC_FEEDBACK_RATE. ValueError / RuntimeError subclasses (a bad rate, an out-of-date schema) say what to do."""
    from feedback.service import DEFAULT_RATE, Feedback

    return Feedback.open(predictor, db_url=db_url, rate=os.environ.get("MLTC_FEEDBACK_RATE", "").strip() or DEFAULT_RATE)


class _Fixed:
    """One predictor for the life of the app (the registry's LiveModel has the same `current()`)."""

    def __init__(self, predictor: Predictor):
        self.served = type("Served", (), {"model": predictor, "version": getattr(predictor, "version", None)})()

    def current(self):
        return self.served


def registry_models(db_url: str | None, num_threads: int | None):
    """The registry's current model, swapped live (deployment/registry/live.py; the repo's packages needed)."""
    from deployment.registry.live import LiveModel
    from feedback.db import make_engine, resolve_url
    from feedback.schema import ensure_current

    from sqlalchemy.exc import DBAPIError

    try:
        engine = make_engine(resolve_url(db_url))
        ensure_current(engine)
    except DBAPIError as err:
        raise RuntimeError(f"cannot open the registry's database: {str(err.orig).strip()[:300]}") from None
    return LiveModel(engine, lambda path: Predictor.from_bundle(path, num_threads=num_threads))


def build_demo(bundle_dir: str | Path | None, num_threads: int | None = None, feedback: bool = False,
               db_url: str | None = None, registry: bool = False) -> gr.Blocks:
    """Load the bundle (BundleError names the missing or broken file), or with `registry` the registry's current
    model, and build the UI; `feedback` adds the correction box, stored in `db_url` (None: $MLTC_DB_URL, else the
    repo's data/feedback.db), the registry's database too."""
    if registry:
        models = registry_models(db_url, num_threads)
        app = App(None, Path(models.current().model.source), models=models)   # examples: the copy served at start
        fb = open_feedback(lambda: app.predictor, db_url) if feedback else None
        app.feedback = fb
        return app.build()
    bundle_dir = Path(bundle_dir)
    predictor = Predictor.from_bundle(bundle_dir, num_threads=num_threads)
    return App(predictor, bundle_dir, open_feedback(predictor, db_url) if feedback else None).build()


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, **kwargs):
    """Launch with this app's settings (offline, local CSS, upload limit); kwargs go to `Blocks.launch`."""
    return demo.launch(server_name=host, server_port=port, css=CSS, max_file_size=MAX_CSV_BYTES,
                       footer_links=["api"], **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployment.app", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path(os.environ.get("MLTC_BUNDLE") or DEFAULT_BUNDLE),
                        help=f"model bundle directory (default: $MLTC_BUNDLE or {DEFAULT_BUNDLE})")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default 127.0.0.1; a Space sets GRADIO_SERVER_NAME=0.0.0.0)")
    # A string default goes through `type` too, so a bad $GRADIO_SERVER_PORT is a one-line error, not a traceback.
    parser.add_argument("--port", type=port, default=os.environ.get("GRADIO_SERVER_PORT", "7860"),
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--threads", type=positive_int, default=None, help="onnxruntime threads (default: all cores)")
    parser.add_argument("--feedback", action="store_true",
                        default=os.environ.get("MLTC_FEEDBACK", "").strip().lower() in ("1", "true", "yes", "on"),
                        help="offer corrections, stored like the Flask site's (default: on when $MLTC_FEEDBACK=1)")
    parser.add_argument("--registry", action="store_true",
                        default=os.environ.get("MLTC_REGISTRY", "").strip().lower() in ("1", "true", "yes", "on"),
                        help="serve the model registry's current model, swapped live on promote / rollback "
                             "(default: on when $MLTC_REGISTRY=1); not with --bundle")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="corrections and registry database (default: $MLTC_DB_URL, else the SQLite file "
                             "data/feedback.db)")
    args = parser.parse_args(argv)
    if args.registry and any(a == "--bundle" or a.startswith("--bundle=") for a in (argv or sys.argv[1:])):
        parser.error("--registry serves the registry's current model: drop --bundle")
    try:
        demo = build_demo(None if args.registry else args.bundle, num_threads=args.threads, feedback=args.feedback,
                          db_url=args.db, registry=args.registry)
    except (BundleError, ValueError, RuntimeError) as err:   # a bad rate, an out-of-date or unreachable store
        print(f"error: {err}", file=sys.stderr)
        return 2
    launch(demo, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
