"""`python -m tests.ddp_probe ARGS...`: the training.train command, plus, after fine-tuning, each process's
step count and a per-tensor sum of its weights written to $DDP_PROBE_DIR/rank<R>.json. Launched by
tests/test_train_devices.py under `accelerate launch` to check that the processes of a data-parallel run stop
together and end with the same weights (gradients really are shared), which F1 alone cannot show.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from training import finetune, train

_fine_tune = finetune.fine_tune


def _probed(run, *args, **kwargs):
    tuned = _fine_tune(run, *args, **kwargs)
    sums = {name: float(t.double().sum()) for name, t in run.model.state_dict().items() if t.is_floating_point()}
    rank = os.environ.get("RANK", "0")
    Path(os.environ["DDP_PROBE_DIR"], f"rank{rank}.json").write_text(
        json.dumps({"steps": tuned.fitted.steps, "total": tuned.fitted.total_steps, "weights": sums}))
    return tuned


finetune.fine_tune = _probed

if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
