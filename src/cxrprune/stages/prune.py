"""DVC stage ``prune@<seed>``: predictions of one seed at every method and level, and the
measured efficiency of every compressed model (``efficiency-seed-<s>.csv``; latency and
throughput for the first seed of ``seeds`` only).

The prediction table is a DVC output written first (atomically); MLflow children (one per
method and level, under the seed's training run, tagged with the table's md5) are logged
after it (:func:`cxrprune.tracking.runs.log_children`), so a tracking failure never loses
computed predictions: it is a warning, and ``cxrprune log-mlflow --seed <s>`` logs the
missing children later.
"""

from __future__ import annotations

import numpy as np
import torch

from cxrprune.compression import predictions
from cxrprune.compression.efficiency import efficiency_table
from cxrprune.compression.methods.base import Context
from cxrprune.compression.prune import prune_and_predict
from cxrprune.core.atomic import write_csv
from cxrprune.core.catalog import DENSE_REFERENCE
from cxrprune.core.config import Params
from cxrprune.core.numerics import autocast_option
from cxrprune.core.runtime import pick_device, set_threads
from cxrprune.datasets.prepare import load_meta, load_split, split_reader
from cxrprune.core.stage import Stage
from cxrprune.stats.metrics import average_precision, child_metrics
from cxrprune.tracking import runs, store
from cxrprune.training.modelfile import load_checkpoint


STAGE = Stage(name="prune",
              help="prune one seed at every level and predict the test set",
              fan_out="seeds")


def run(params: Params, seed: int) -> None:
    set_threads(params.train.threads)
    device = pick_device(params.train.device)
    out = params.layout
    classes = load_meta(out.prepared)["classes"]
    labels, images = load_split(out.prepared, "test", verify="full")
    experiment_id = store.start(params.mlflow)  # fail before the work if the server is down

    model, _ = load_checkpoint(out.model_file(seed))
    x = torch.from_numpy(np.array(images))  # one read of the memory-mapped cache into RAM
    context = Context(seed, params.prune, params.train, device, int(x.shape[-1]), split_reader(out.prepared, classes))
    efficiency: list[dict] = []
    results = prune_and_predict(model, x, params.prune.methods, params.prune.levels, seed,
                                params.prune.batch_size, device,
                                autocast=autocast_option(params.prune.autocast),
                                allow_tf32=params.prune.allow_tf32, context=context, efficiency=efficiency,
                                timed=seed == params.seeds[0])
    path = out.predictions_file(seed)
    predictions.write_predictions(path, results, labels["image_id"].tolist(), classes)
    write_csv(out.efficiency_file(seed), efficiency_table(efficiency))
    log = store.SafeLogger(seed, "pruning")
    log.call(runs.log_children, params, seed, experiment_id, results,
             child_metrics(results, labels[classes].to_numpy(), classes), predictions_md5=store.file_md5(path))
    log.report()
    dense = next(r for r in results if (r.method, r.sparsity) == DENSE_REFERENCE)  # every method's reference
    print(f"seed {seed}: {len(results)} (method, level) predictions over {len(labels)} test images, "
          f"dense mAP {np.nanmean(average_precision(labels[classes].to_numpy(), dense.probs)):.3f}")

