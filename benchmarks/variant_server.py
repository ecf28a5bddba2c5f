"""`fusionrank serve` for one variant of benchmarks.ablations: the same app and training code,
with the variant's training configuration injected. The ablations switch off a learner feature
to measure it, which is no setting a shop should have, so they are TrainConfig overrides here;
a variant that changes a real setting (the IPS clip) does so through its environment.

Usage: python -m benchmarks.variant_server --variant no-ips [--port N] [--log-level warning]
(FUSIONRANK_* settings from the environment, as for `fusionrank serve`).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.server import start_server
from service.api.app import create_app
from service.cli import announce, run_app
from service.config import Settings
from service.learning import learner_config
from service.serving import start_runtime


@dataclass(frozen=True)
class Variant:
    env: Mapping[str, str] = field(default_factory=dict)  # FUSIONRANK_* settings
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields


VARIANTS: dict[str, Variant] = {
    "frozen": Variant(),
    "learner": Variant(),
    "no-class-weights": Variant(train={"class_weights": False}),
    "no-ips": Variant(train={"ips": False}),
    # less variance, less bias removed
    "ips-clip-5": Variant(env={"FUSIONRANK_LEARNER_IPS_CLIP": "5"}),
    # for steep position bias (--eta 2)
    "ips-clip-100": Variant(env={"FUSIONRANK_LEARNER_IPS_CLIP": "100"}),
    "no-pbm": Variant(train={"pbm_weight": 0.0}),  # without the examination loss
    "lambdamart": Variant(),  # the frozen head serves; LightGBM trains offline on its logs
}


def start(
    data_dir: Path, variant: str, env: Mapping[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """This module serving `data_dir` as `variant`, with `env` (and the variant's) on top of
    this process's environment; returns once it is ready."""
    module = ("benchmarks.variant_server", "--variant", variant)
    return start_server(data_dir, env={**env, **VARIANTS[variant].env}, module=module)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", required=True, choices=VARIANTS)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args()

    settings = Settings()
    learning = learner_config(settings, **VARIANTS[args.variant].train)
    start = functools.partial(start_runtime, learning=learning)
    app = create_app(settings, start=start, on_ready=announce(args.host, args.port))
    run_app(app, args.host, args.port, args.log_level)


if __name__ == "__main__":
    main()
