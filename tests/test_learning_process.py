"""`fusionrank learner`'s composition root builds what refreshing needs and nothing a search
does: no searcher, no query encoders until a catalog change needs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from helpers import settings_env

PROBE = """
import json, sys
from service.config import Settings
from service.learning import start_learner
process = start_learner(Settings())
assert not isinstance(process, str), process
loaded = [m for m in ("sentence_transformers", "efficientnet_lite_pytorch") if m in sys.modules]
encoders = process.learner.encoders
print(json.dumps({"encoders_loaded": loaded, "text_id": encoders.text_id,
                  "image_id": encoders.image_id, "text_dim": encoders.text_dim}))
process.close()
"""


def test_the_learner_process_loads_no_encoders(ingested, embedder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(ingested.settings.data_dir, data)
    settings = ingested.settings.model_copy(update={"data_dir": data, "database_url": ""})
    env = settings_env(settings, database_url=f"sqlite:///{data / 'fusionrank.db'}")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["encoders_loaded"] == []
    # it reads the logged query vectors of the encoders the index was built with
    assert got["text_id"] == embedder.text_encoder.id
    assert got["image_id"] == embedder.image_encoder.id
    assert got["text_dim"] == embedder.text_encoder.dim
