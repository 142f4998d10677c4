"""The Gradio app with corrections on (`build_demo(..., feedback=True)`), launched for real on a local port and
called through gradio_client: the save button stores the ticked labels in the same store as the Flask site,
with what the model showed; a refused correction is an error message and stores nothing."""
from __future__ import annotations

import gradio_client
import pytest
from tests.feedback_helpers import count, migrated, rows
from tests.test_gradio import free_port

from deployment.app import build_demo, launch
from deployment.predictor import Predictor

TEXT = "Inspector Hale suspects everyone in the village of the murder."


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('gradio-feedback') / 'feedback.db'}"
    migrated(url)
    return url


@pytest.fixture(scope="module")
def client(tiny_bundle, db):
    demo = build_demo(tiny_bundle, feedback=True, db_url=db)
    _, url, _ = launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(url, verbose=False)
    finally:
        demo.close()


def test_save_correction_stores_the_ticked_labels_with_what_was_shown(client, db, tiny_bundle):
    predictor = Predictor.from_bundle(tiny_bundle)
    message = client.predict(TEXT, ["Mystery", "Horror"], "Police procedural\n", True, 0.5,
                             api_name="/save_correction")
    assert message.startswith("Correction saved (#")
    row = rows(db)[-1]
    assert row["face"] == "gradio" and row["labels"] == ["Mystery", "Horror"]
    assert row["shown"] == predictor.predict([TEXT])[0]["predicted"]
    assert row["model_version"] == predictor.version and row["client_key"].startswith("ip:")
    assert count(db, "label_suggestions") == 1


def test_a_refused_correction_is_a_message_and_stores_nothing(client, db):
    before = count(db)
    for args, fragment in [(("   ", ["Mystery"], "", True, 0.5), "is empty"),
                           ((TEXT, [], "Horror", True, 0.5), "already a label of the model"),
                           ((TEXT, ["Mystery"], "", False, 0.5), None)]:
        if fragment is None:   # an override threshold is what the face showed: stored with it
            assert client.predict(*args, api_name="/save_correction").startswith("Correction saved")
            before += 1
            continue
        with pytest.raises(gradio_client.exceptions.AppError, match=fragment):
            client.predict(*args, api_name="/save_correction")
    with pytest.raises(Exception):   # a label outside the model's set: Gradio's own choices check refuses it
        client.predict(TEXT, ["Cookery"], "", True, 0.5, api_name="/save_correction")
    assert count(db) == before
    assert rows(db)[-1]["threshold"] == 0.5
