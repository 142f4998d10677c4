"""Sample texts for the web UIs: the bundle's own test texts when it carries some, else `examples.json`.

Both the Flask site and the Gradio app show a few texts one click away. A bundle may carry held-out test
texts (`"examples"` in bundle.json or eval.json; strings or `{"text": ..., "labels": [...]}`); otherwise the
hand-written texts in `deployment/examples.json` are shown, labelled as examples. Used as
`from deployment.examples import load_examples` in the repo and as `from examples import ...` in the Space.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES_FILE = Path(__file__).resolve().parent / "examples.json"   # shipped fallback, also in the Space
BUNDLE_KEYS = ("examples", "test_examples", "samples")               # where a bundle may keep test texts
TITLE_WORDS = 7                                                      # words of a text used as its button title


@dataclass
class Example:
    text: str
    title: str
    labels: list[str] = field(default_factory=list)   # the true labels when the bundle knows them


@dataclass
class Examples:
    items: list[Example]
    source: str   # shown in the UI: where the examples came from


def _title(text: str) -> str:
    words = text.split()
    return " ".join(words[:TITLE_WORDS]) + (" …" if len(words) > TITLE_WORDS else "")


def _parse(items: object, n: int) -> list[Example]:
    """Accept a list of strings or of dicts with a `text`; ignore anything else rather than fail the UI."""
    out: list[Example] = []
    if not isinstance(items, list):
        return out
    for item in items:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            continue
        labels = item.get("labels")
        labels = [str(x) for x in labels] if isinstance(labels, list) else []
        title = item.get("title") if isinstance(item.get("title"), str) else _title(item["text"])
        out.append(Example(text=item["text"].strip(), title=title, labels=labels))
        if len(out) >= n:
            break
    return out


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_examples(bundle_dir: str | Path | None, n: int = 4) -> Examples:
    """Up to `n` sample texts: from the bundle (bundle.json, then eval.json) if it has any, else examples.json."""
    if bundle_dir is not None:
        for name in ("bundle.json", "eval.json"):
            data = _read_json(Path(bundle_dir) / name)
            for key in BUNDLE_KEYS:
                items = _parse(data.get(key), n)
                if items:
                    return Examples(items, f"test texts from the bundle ({name})")
    return Examples(_parse(_read_json(EXAMPLES_FILE).get("examples"), n), "example texts (not from the data set)")
