"""Noise2Void (careamics) on one image, as careamics-napari trains it: on the image itself.

Runs in its own environment (careamics pins older torch and torchvision than napari-dip's):

    python3 -m venv /work/careamics-venv
    /work/careamics-venv/bin/pip install torch==2.9.1 torchvision==0.24.1
    /work/careamics-venv/bin/pip install careamics            # 0.3.5
    /work/careamics-venv/bin/python benchmarks/n2v_careamics.py noisy.npy restored.npy --epochs 500

The input is a float (Y, X) image, a (S, Y, X) stack of planes or, with --axes YXC, a colour
image; the prediction has its shape, float32. One JSON line with the settings and the
training seconds goes to stdout. benchmarks/quality.py calls this through a subprocess.

On a single small image an epoch is one batch (a 96² image holds 9 patches of 32), so
hundreds of epochs are needed. Two torch processes on 2 cores slow each other ~15x
(OpenMP threads spinning); run one at a time, or give each OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def n2v(
    image: np.ndarray, axes: str, epochs: int, patch: int, batch: int, seed: int, batch_norm: bool = True
) -> tuple[np.ndarray, dict]:
    """Train N2V on ``image`` (``axes`` "YX", "SYX" or "YXC") and predict on it; (prediction, settings)."""
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config

    settings = {"axes": axes, "epochs": epochs, "patch": patch, "batch": batch, "seed": seed, "batch_norm": batch_norm}
    with tempfile.TemporaryDirectory() as work:
        # create_n2v_config's defaults (UNet with batch norm, N2V masking, flips and
        # rotations, mean-std normalisation), plus options only the advanced factory
        # takes: a seed (a run is repeatable), no loader worker processes (2 cores; they
        # cost more than the tiny data), one checkpoint at the end instead of one every
        # 10 epochs, and optionally no batch norm.
        config = create_advanced_n2v_config(
            experiment_name="n2v_single_image",
            data_type="array",
            axes=axes,
            patch_size=[patch, patch],
            batch_size=batch,
            num_epochs=epochs,
            # Colour: careamics' default, each channel its own network (independent_channels).
            n_channels=image.shape[axes.index("C")] if "C" in axes else None,
            num_workers=0,
            checkpoint_params={"every_n_epochs": epochs, "save_top_k": 1, "save_last": True},
            model_params={"use_batch_norm": batch_norm},
            seed=seed,
        )
        careamist = CAREamist(config, work_dir=work, enable_progress_bar=False)
        start = time.perf_counter()
        # The image is its own validation data: otherwise careamics sets 8 patches aside,
        # which a 96² image at patch 32 (9 patches) cannot spare; N2V's validation loss is
        # self-supervised anyway, and predict() uses the last checkpoint, not the best.
        careamist.train(train_data=image, val_data=image)
        settings["train_seconds"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        predictions, _ = careamist.predict(image, data_type="array", axes=axes)
        settings["predict_seconds"] = round(time.perf_counter() - start, 2)
    restored = np.asarray(predictions[0] if len(predictions) == 1 else np.stack(predictions), np.float32)
    if restored.shape != image.shape:  # predict() restores the input's axes; say so if it ever does not
        raise RuntimeError(f"careamics returned shape {restored.shape} for an input of shape {image.shape}")
    return restored, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("noisy", type=Path, help=".npy, (Y, X) or (S, Y, X)")
    parser.add_argument("restored", type=Path, help=".npy to write, float32, same shape")
    parser.add_argument("--axes", choices=("YX", "SYX", "YXC"), help="default: YX for 2-D, SYX for 3-D input")
    parser.add_argument("--epochs", type=int, default=500, help="one batch each on a 96² image; 500: ~40 s")
    parser.add_argument("--patch", type=int, default=None, help="patch side; default 64, 32 below 128 px")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--no-batch-norm",
        action="store_true",
        help="UNet without batch norm (careamics default: with)",
    )
    parser.add_argument("--seed", type=int, default=1, help="> 0 (careamics refuses 0)")
    args = parser.parse_args()
    image = np.load(args.noisy).astype(np.float32)
    axes = args.axes or ("SYX" if image.ndim == 3 else "YX")
    if image.ndim != len(axes):
        sys.exit(f"axes {axes} do not fit an image of shape {image.shape}")
    patch = args.patch or (64 if min(image.shape[-2:]) >= 128 else 32)
    # Lightning and careamics talk a lot on stdout/stderr; keep stdout for the JSON line.
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        restored, settings = n2v(image, axes, args.epochs, patch, args.batch, args.seed, not args.no_batch_norm)
    np.save(args.restored, restored)
    print(json.dumps({"method": "n2v", "shape": list(image.shape), **settings}), flush=True)


if __name__ == "__main__":
    main()
