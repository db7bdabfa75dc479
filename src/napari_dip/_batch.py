"""Batch restoration on Dask distributed: many files (or arrays), one task each.

Every file is an independent fit, so the files spread over the workers of a
``dask.distributed`` cluster: a ``LocalCluster`` on this machine (one worker per
GPU, or CPU workers that share the cores without oversubscribing torch's threads),
any running scheduler, a SLURM or PBS cluster through ``dask-jobqueue``, or one GPU
per worker through ``dask-cuda``. Nothing here is a pool or queue of our own.

Outputs mirror the input tree and are written atomically, so a run that was killed
leaves only complete files; running it again skips them. A file that fails is
reported with its reason and the others go on; a worker that dies (killed, out of
memory) has its task retried on another one a bounded number of times.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._io import PARTIAL, TIFF, is_image_path, one_line, same_file

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["BatchItem", "BatchReport", "FileReport", "batch", "find_images", "start_client"]

#: Times a task may be on a worker that dies before it is reported as failed.
ALLOWED_FAILURES = 2
#: CPU workers: one per core, each with one torch thread. Small fits barely gain from a
#: second thread, so processes win: 2 workers of 1 thread restored 2.0x the files per
#: minute of 1 worker of 2 threads on 64² images (BENCHMARKS.md, batch throughput).
THREADS_PER_WORKER = 1
#: Memory set aside per CPU worker (torch itself, a network, a plane's activations), so
#: that a many-core machine with little memory does not start more workers than it holds.
WORKER_BYTES = 3 * 2**30

Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class BatchItem:
    """One file to restore: where it is, where its result goes, its mask (inpainting)."""

    source: Path
    output: Path
    mask: Path | None = None


@dataclass(frozen=True)
class FileReport:
    """How one file went."""

    source: Path
    output: Path
    status: Status
    seconds: float = 0.0
    #: One line: why it failed, or how the fit ended.
    reason: str = ""


@dataclass
class BatchReport:
    """The outcome of a batch, file by file, in the order the files were found."""

    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0

    def table(self) -> str:
        """A summary table: one row per file, then the totals."""
        rows = [("status", "seconds", "file", "note")]
        for f in self.files:
            seconds = f"{f.seconds:.1f}" if f.status == "done" else ""
            rows.append((f.status, seconds, str(f.source), f.reason))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=False)) + "  " + r[3] for r in rows]
        done = [f.seconds for f in self.files if f.status == "done"]
        per_file = f", {sum(done) / len(done):.1f} s per file" if done else ""
        lines.append(
            f"{self.count('done')} done, {self.count('skipped')} skipped (already there), "
            f"{self.count('failed')} failed in {self.seconds:.1f} s{per_file}"
        )
        return "\n".join(line.rstrip() for line in lines)


def _output_name(source: Path) -> str:
    """The output's file name: TIFF and PNG keep their format (the result has the input's
    dtype, which they held), JPEG becomes PNG (no second lossy compression), the
    microscopy formats become OME-TIFF."""
    name, suffix = source.name, source.suffix.lower()
    stem = name[: -len(suffix)] if suffix else name
    if suffix in TIFF or suffix in (".png", ".bmp"):
        return name
    if suffix in (".jpg", ".jpeg"):
        return stem + ".png"
    if stem.lower().endswith(".ome"):
        stem = stem[:-4]
    return stem + ".ome.tif"


def _mask_for(image: Path, suffix: str) -> Path | None:
    """``image``'s mask: ``<stem><suffix>.<any image suffix>`` beside it."""
    stem = image.name[: -len(image.suffix)] if image.suffix else image.name
    for candidate in sorted(image.parent.glob(f"{stem}{suffix}.*")):
        if is_image_path(candidate):
            return candidate
    return None


def _is_mask(path: Path, suffix: str) -> bool:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return bool(suffix) and stem.endswith(suffix)


def find_images(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    pattern: str = "*",
    task: str = "denoise",
    mask_suffix: str = "_mask",
) -> list[BatchItem]:
    """The files to restore: each input file, and every image under each input folder
    (recursively, names matching ``pattern``), with their outputs mirroring the tree
    under ``output_dir``. Files named like masks (``<stem><mask_suffix>.<ext>``) are
    not images; for inpainting each image takes the mask beside it. Raises
    ``ValueError`` for a missing input or two inputs that would share an output."""
    output_dir = Path(output_dir)
    items: list[BatchItem] = []
    for given in map(Path, inputs):
        if given.is_dir() and given.suffix.lower() != ".zarr":
            found = [
                p
                for p in sorted(given.rglob(pattern))
                if is_image_path(p)
                and (p.is_file() or p.suffix.lower() == ".zarr")
                and not p.name.startswith(".")  # hidden: e.g. a partial file of an earlier run
                and not _inside(p, output_dir)
                and not any(part.suffix.lower() == ".zarr" for part in p.relative_to(given).parents if part.name)
            ]
            pairs = [(p, output_dir / p.relative_to(given).parent / _output_name(p)) for p in found]
        elif given.exists():
            pairs = [(given, output_dir / _output_name(given))]
        else:
            raise ValueError(f"no such file or folder: {given}")
        for source, output in pairs:
            if _is_mask(source, mask_suffix) and (given.is_dir() or task == "inpaint"):
                continue
            mask = _mask_for(source, mask_suffix) if task == "inpaint" else None
            items.append(BatchItem(source, output, mask))
    seen: dict[Path, Path] = {}
    for item in items:
        key = Path(os.path.realpath(item.output))
        if key in seen:
            raise ValueError(f"{seen[key]} and {item.source} would both be written to {item.output}; rename one")
        seen[key] = item.source
    return items


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def _remove_partials(output: Path) -> None:
    """Temporary files an earlier, killed run left beside ``output`` (ours by their name)."""
    if output.parent.is_dir():
        for stale in output.parent.glob(f".{output.name}.*{PARTIAL}{output.suffix}"):
            stale.unlink(missing_ok=True)


# -- the worker's side ------------------------------------------------------------------------


def _restore_file(item: BatchItem, task: str, options: dict[str, Any]) -> FileReport:
    """Runs on a worker: restore one file, write it atomically, say how the fit ended.
    A file that cannot be read or restored comes back as a failed report with its
    one-line reason; only a dying worker surfaces as an error (and is retried)."""
    start = time.perf_counter()
    try:
        return _restore_file_or_raise(item, task, options, start)
    except (ValueError, TypeError, OSError, MemoryError, RuntimeError) as err:
        return FileReport(item.source, item.output, "failed", time.perf_counter() - start, _one_line(err))


def _restore_file_or_raise(item: BatchItem, task: str, options: dict[str, Any], start: float) -> FileReport:
    from ._files import restore_file

    if task == "inpaint" and item.mask is None:
        raise ValueError(f"no mask beside it (expected {item.source.stem}{options.get('mask_suffix', '_mask')}.*)")
    item.output.parent.mkdir(parents=True, exist_ok=True)
    file_options = {k: v for k, v in options.items() if k != "mask_suffix"}
    result, job = restore_file(task, item.source, item.output, mask=item.mask, **file_options)
    fitted = [s for s in job.schedule.summaries if not s.skipped]
    iterations = [s.iterations for s in fitted]
    how = f"{result.dtype} {'x'.join(map(str, result.shape))}"
    if iterations:
        how += f", {len(fitted)} fit(s) of {min(iterations)}-{max(iterations)} iterations"
    return FileReport(item.source, item.output, "done", time.perf_counter() - start, how)


def _restore_array(task: str, image: np.ndarray, options: dict[str, Any]) -> np.ndarray:
    from ._api import prepare

    return prepare(task, image, **options).run()


# -- the client's side -------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def start_client(workers: int | None = None, scheduler: str | None = None) -> tuple[Client, Any]:
    """A client of the scheduler at ``scheduler``, or of a new ``LocalCluster``.

    Locally: with GPUs, one worker per GPU (``dask_cuda.LocalCUDACluster`` when
    installed, which pins each worker to its GPU); without, ``workers`` processes
    (default: one per ``THREADS_PER_WORKER`` cores), each with its share of the cores
    as torch threads, so that they do not oversubscribe them. Returns the client and
    the cluster it started (None for a remote scheduler).
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout="15s"), None
        except OSError as err:
            raise OSError(
                f"cannot reach a Dask scheduler at {scheduler} ({err}); start one (`dask scheduler`) "
                "or leave the scheduler out for a local cluster"
            ) from err
    dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES})
    gpus = _gpu_count()
    dashboard = ":0" if has_dashboard() else None
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            # Without dask-cuda the workers share the GPUs as torch places them: one unless asked.
            cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, dashboard_address=dashboard)
        else:
            cluster = LocalCUDACluster(n_workers=workers or gpus, threads_per_worker=1, dashboard_address=dashboard)
        return Client(cluster), cluster
    from .memory import available_bytes

    cores = _cpu_count()
    n = workers or max(1, min(cores // THREADS_PER_WORKER, available_bytes("cpu") // WORKER_BYTES))
    threads = str(max(1, cores // n))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=dashboard,
        env=env,
        silence_logs=logging.CRITICAL,
    )
    return Client(cluster), cluster


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _one_line(err: BaseException) -> str:
    if type(err).__name__ == "KilledWorker":  # distributed's: the task outlived its workers
        return f"the worker running it died {ALLOWED_FAILURES + 1} times (killed, or out of memory)"
    return one_line(err)


def batch(
    inputs: Sequence[str | Path] | Sequence[np.ndarray],
    output_dir: str | Path | None = None,
    *,
    task: str = "denoise",
    client: Client | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    pattern: str = "*",
    mask_suffix: str = "_mask",
    masks: Sequence[np.ndarray] | None = None,
    overwrite: bool = False,
    return_futures: bool = False,
    progress: Callable[[FileReport, int, int], Any] | None = None,
    **options: Any,
) -> BatchReport | list[Any]:
    """Restore many images on a Dask cluster, one task per image.

    Parameters
    ----------
    inputs : sequence of paths, or sequence of ndarrays
        Paths: image files and folders (searched recursively for ``pattern``). Arrays:
        images in memory, restored with the numpy API.
    output_dir : path
        Paths only: where the results go, mirroring the input tree. An output that
        already exists is skipped (a killed run continues where it stopped) unless
        ``overwrite``.
    task : {"denoise", "inpaint", "super-resolve"}
    client : distributed.Client, optional
        The cluster to run on (e.g. a ``dask_jobqueue.SLURMCluster``'s client). None:
        ``scheduler``'s address, or a ``LocalCluster`` of ``workers`` processes
        (``start_client``), closed at the end.
    mask_suffix : str
        Inpainting files: ``photo.tif`` takes ``photo<mask_suffix>.*`` beside it as its
        mask (nonzero = missing; ``mask_known=True``: nonzero = known).
    masks : sequence of ndarray, optional
        Inpainting arrays: one mask per image.
    return_futures : bool
        Arrays only: return the futures at once instead of waiting for the results.
    progress : callable, optional
        Paths only: called with each ``FileReport`` as it comes, the count done and the total.
    **options
        As for the single-image functions: ``iterations``, ``network``, ``width``, ``lr``,
        ``device``, ``seed``, ``stopping``, ``channel_axis``, ``volumetric``, ``spacing``,
        ``tile_size``, ``warm_start``, ``scale``; files also take ``mask_known``.

    Returns
    -------
    BatchReport (paths) or list of ndarray, or of futures (arrays)
        A file that could not be read or restored is in the report as "failed" with its
        reason; the other files finish regardless.
    """
    if task not in ("denoise", "inpaint", "super-resolve"):
        raise ValueError(f"batch runs 'denoise', 'inpaint' or 'super-resolve', not {task!r}")
    arrays = [isinstance(x, np.ndarray) for x in inputs]
    if any(arrays) and not all(arrays):
        raise TypeError("inputs must be all paths or all arrays")
    own = client is None
    if own:
        client, cluster = start_client(workers, scheduler)
    try:
        if inputs and all(arrays):
            return _batch_arrays(client, list(inputs), task, masks, return_futures and not own, options)
        if output_dir is None:
            raise ValueError("output_dir is needed to restore files")
        items = find_images(inputs, output_dir, pattern=pattern, task=task, mask_suffix=mask_suffix)
        return restore_files(client, items, task, overwrite, progress, {**options, "mask_suffix": mask_suffix})
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()


def _batch_arrays(
    client: Client,
    images: list[np.ndarray],
    task: str,
    masks: Sequence[np.ndarray] | None,
    return_futures: bool,
    options: dict[str, Any],
) -> list[Any]:
    if task == "inpaint" and (masks is None or len(masks) != len(images)):
        raise ValueError("inpainting arrays needs masks=, one mask per image")
    futures = []
    for i, image in enumerate(images):
        extra = {"mask": masks[i]} if task == "inpaint" else {}
        futures.append(client.submit(_restore_array, task, image, {**options, **extra}, pure=False))
    return futures if return_futures else client.gather(futures)


def restore_files(
    client: Client,
    items: list[BatchItem],
    task: str,
    overwrite: bool,
    progress: Callable[[FileReport, int, int], Any] | None,
    options: dict[str, Any],
) -> BatchReport:
    from distributed import as_completed

    start = time.perf_counter()
    reports: dict[int, FileReport] = {}
    futures = {}
    for i, item in enumerate(items):
        if any(same_file(item.output, p) for p in (item.source, item.mask) if p is not None):
            reports[i] = FileReport(item.source, item.output, "failed", reason="its output is the input itself")
            continue
        if item.output.exists() and not overwrite:
            reports[i] = FileReport(item.source, item.output, "skipped", reason=f"{item.output} exists")
            continue
        _remove_partials(item.output)
        future = client.submit(_restore_file, item, task, options, pure=False, key=f"napari-dip-{i}-{item.source.name}")
        futures[future] = i
    total, done = len(items), len(reports)
    if progress is not None:
        for i in sorted(reports):
            progress(reports[i], done, total)
    for future in as_completed(futures):
        i, item = futures[future], items[futures[future]]
        error = future.exception()
        if error is None:
            reports[i] = future.result()
        else:
            reports[i] = FileReport(item.source, item.output, "failed", reason=_one_line(error))
        done += 1
        if progress is not None:
            progress(reports[i], done, total)
        future.release()
    return BatchReport([reports[i] for i in range(len(items))], time.perf_counter() - start)


class ProgressBar:
    """A tqdm bar over the files (a ``progress`` callback), with failures printed above it
    as they come; ``close()`` it when the batch ends early."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def __call__(self, file: FileReport, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="file", file=sys.stderr, disable=self.quiet, dynamic_ncols=True)
        if file.status == "failed":
            self.bar.write(f"failed: {file.source}: {file.reason}", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
