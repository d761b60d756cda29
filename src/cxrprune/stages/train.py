"""DVC stage ``train@<seed>``: train one seed, write its checkpoint, history and run id.

With ``model.source: checkpoint`` it trains nothing: it imports the user's checkpoint
(:mod:`cxrprune.training.checkpoint`), scores it on the validation split and writes the same
three outputs, so every later stage runs unchanged on the imported model.

Resumable: the whole training state is saved at the end of every epoch
(:mod:`cxrprune.training.resume`, ``data/.resume/<name>/train-seed-<s>.pt``), so a killed
training continues from its last finished epoch when the stage runs again, in the same
MLflow run (tagged ``resumed=true`` and ``resume_count``). The DVC outputs come first:
MLflow trouble during training (a server that goes away) is a warning, not a failure, and
``cxrprune log-mlflow --seed <s>`` writes the missing records later from the outputs.
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from cxrprune.core.atomic import write_csv
from cxrprune.core.config import Params
from cxrprune.datasets.prepare import load_meta, load_split
from cxrprune.core.stage import Stage
from cxrprune.tracking import runs, store
from cxrprune.tracking.run_record import write_run_record
from cxrprune.training import resume
from cxrprune.training.checkpoint import import_checkpoint
from cxrprune.training.loop import train_model, validation_row
from cxrprune.training.modelfile import HISTORY_COLUMNS, save_model

NEAR_CHANCE_AUROC = 0.55  # an imported model this close to chance was likely fed the wrong input

STAGE = Stage(name="train",
              help="train one seed (checkpoint, history, MLflow run)",
              fan_out="seeds")


def run(params: Params, seed: int) -> None:
    if params.model.source == "checkpoint":
        import_model(params, seed)
        return
    out = params.layout
    prepared = params.data.prepared_dir
    classes = load_meta(prepared)["classes"]
    # Training reads every byte of the cache anyway: check it whole (about 1.8 GB/s).
    train_labels, train_images = load_split(prepared, "train", verify="full")
    val_labels, val_images = load_split(prepared, "val", verify="full")

    experiment_id = store.start(params.mlflow)  # fails fast if the server is down
    resume_file = resume.ResumeFile(out.resume_file(seed), resume.fingerprint(params, seed))
    state = resume_file.load()
    if resume_file.superseded_run_id:
        runs.close_superseded(resume_file.superseded_run_id)
    log = store.SafeLogger(seed, "training")
    count = int(state.get("resume_count", 0)) + 1 if state is not None else 0
    run_id = runs.open_run(params, seed, experiment_id, run_id=state.get("run_id") if state else None,
                           resume_count=count)
    if state is None:  # the run id is on disk before any work: a kill now leaves no orphan run
        resume_file.save({"epoch": -1, "run_id": run_id, "resume_count": 0})
    else:
        done = state.get("epoch", -1) + 1
        print(f"train: resuming seed {seed} after {done} finished epoch(s) from {resume_file.path} "
              f"(MLflow run {run_id})", file=sys.stderr)
        log.call(runs.log_missing_epochs, run_id, state.get("history", []))

    last_save = time.monotonic()

    def save(training_state: dict) -> None:
        # A resume state is a few tens of MB: on a small default each epoch takes seconds, and
        # writing it every epoch cost ~8% of the training; a kill loses at most this interval.
        nonlocal last_save
        if time.monotonic() - last_save < params.train.checkpoint_every_s:
            return
        resume_file.save({**training_state, "run_id": run_id, "resume_count": count})
        last_save = time.monotonic()

    try:
        result = train_model(params.train, seed, train_labels, train_images, val_labels, val_images, classes,
                             on_epoch=lambda row: log.call(store.log_metrics, run_id, runs.epoch_metrics(row),
                                                           step=row["epoch"]),
                             resume=state, on_checkpoint=save)
    except BaseException:  # Ctrl-C or an error: the run is unfinished (not FINISHED), rerunning resumes it
        runs.end_quietly("KILLED")
        raise
    # The DVC outputs, each atomic, before the final MLflow records.
    save_model(out.model_file(seed), result.model, arch=params.train.arch, classes=classes,
               image_size=params.data.image_size, epoch=result.best_epoch, val_loss=result.best_val_loss, seed=seed)
    write_csv(out.history(seed), result.history)
    write_run_record(out.run_record(seed), run_id, experiment_id, store.tracking_uri(params.mlflow))
    log.call(runs.log_result, run_id, result.history, out.model_file(seed))
    log.call(runs.end_run, run_id)
    resume_file.delete()
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    print(f"seed {seed}: best epoch {result.best_epoch}, val loss {result.best_val_loss:.4f}, "
          f"val mAP {best['val_map']:.3f}, precision {result.extra['precision']} -> {out.model_dir(seed)}")
    log.report()


def import_model(params: Params, seed: int) -> None:
    """``model.source: checkpoint``: import and verify the checkpoint, score it on the
    validation split (history.csv's one row), write the outputs, record it in MLflow."""
    out, cfg = params.layout, params.model
    prepared = params.data.prepared_dir
    classes = load_meta(prepared)["classes"]
    val_labels, val_images = load_split(prepared, "val", verify="full")
    imported = import_checkpoint(cfg.path, params.train.arch, classes, cfg.classes, params.data.image_size)
    experiment_id = store.start(params.mlflow)
    row = validation_row(imported.model, params.train, val_labels, val_images, classes)
    history = pd.DataFrame([row], columns=HISTORY_COLUMNS)
    run_id = runs.open_run(params, seed, experiment_id)
    save_model(out.model_file(seed), imported.model, arch=params.train.arch, classes=classes,
               image_size=params.data.image_size, epoch=0, val_loss=row["val_loss"], seed=seed)
    write_csv(out.history(seed), history)
    write_run_record(out.run_record(seed), run_id, experiment_id, store.tracking_uri(params.mlflow))
    log = store.SafeLogger(seed, "import")
    log.call(store.log_metrics, run_id, runs.epoch_metrics(row), step=0)
    log.call(runs.log_result, run_id, history, out.model_file(seed))
    log.call(runs.tag_import, run_id, cfg.path, imported.md5)
    log.call(runs.end_run, run_id)
    print(f"train: imported {cfg.path} (md5 {imported.md5}) as seed {seed}: val mAP {row['val_map']:.3f}, "
          f"val AUROC {row['val_auroc']:.3f} -> {out.model_dir(seed)}")
    if not row["val_auroc"] >= NEAR_CHANCE_AUROC:
        print(f"train: warning: the imported model's validation AUROC is {row['val_auroc']:.3f}, near chance: "
              f"check model.classes (its output order), data.image_size (its input size) and that it takes "
              f"ImageNet-normalised 3-channel images", file=sys.stderr)
    log.report()
