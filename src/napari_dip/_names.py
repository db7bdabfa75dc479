"""The names users choose from (tasks, networks, stopping rules), defined here so
that the CLI's help and argument checks need no torch; the engine re-exports them."""

TASKS = ("denoise", "inpaint", "super-resolve", "flash-no-flash")
NETWORKS = ("skip", "encoder-decoder", "unet", "resnet", "deep-decoder")
#: The networks that also exist in 3-D (``build_network(..., spatial_dims=3)``).
NETWORKS_3D = ("skip", "encoder-decoder")
RULES = ("wmv", "emv", "validation")
#: Arithmetic of the network's layers ("auto": see ``fit.resolve_precision``).
PRECISIONS = ("auto", "float32", "mixed", "bfloat16")
#: The rule used when none is named; chosen from benchmarks/early_stopping.py (BENCHMARKS.md).
DEFAULT_RULE = "emv"
NOISE_MODELS = ("auto", "gaussian", "poisson")
