"""``int8``: post-training static quantisation, run in ONNX Runtime on the CPU (one level, 0.0).

The dense fp32 model is exported with ``torch.onnx.export`` (TorchScript exporter, opset 17,
BatchNorm folded into the convolutions), pre-processed (``quant_pre_process``: shape
inference and graph optimisation, as ONNX Runtime recommends) and quantised with
``onnxruntime.quantization.quantize_static``:

- weights int8, **per output channel** (symmetric); activations uint8 (asymmetric), their
  ranges calibrated (MinMax) on a fixed sample of ``prune.calibration_images`` validation
  images drawn with ``seed + CALIBRATION_SEED_OFFSET`` (never test images);
- **QDQ** format (QuantizeLinear/DequantizeLinear pairs around float ops), not QOperator:
  QDQ is ONNX Runtime's recommended format; its CPU provider fuses each QDQ pattern into an
  integer kernel (QLinearConv, ...) at session start, and the same file runs on other
  execution providers (TensorRT, OpenVINO, ...) that read QDQ but not ORT's QOperator ops.

Predictions come from an ``onnxruntime.InferenceSession`` on the CPU (the engine such models
are deployed with), whatever device the stage uses for torch; intra-op threads =
``prune.efficiency_threads``. Bytes = the quantised ONNX file. Its ``measured_sparsity`` (in
MLflow) is the fraction of int8 weights that quantised to exactly zero.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cxrprune.compression.artifacts import onnx_nonzero_params
from cxrprune.compression.methods.base import Compressed, Context, Method
from cxrprune.core.errors import ConfigError
from cxrprune.training.augment import normalize, to_unit

CALIBRATION_SEED_OFFSET = 2_000_003  # separates the calibration sample from other seeded streams
OPSET = 17
CALIBRATION_BATCH = 32
PREDICT_BATCH = 256


def _engines():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        from onnxruntime import quantization
    except ImportError:
        raise ConfigError("prune.methods: int8 needs onnx and onnxruntime, which are not installed; "
                          "`pip install onnx onnxruntime` or remove int8 from prune.methods") from None
    return onnxruntime, quantization


def float_inputs(images: torch.Tensor) -> np.ndarray:
    """uint8 ``(N, S, S)`` -> the normalised float32 ``(N, 3, S, S)`` the network takes."""
    return normalize(to_unit(images, torch.device("cpu"))).contiguous().numpy()


def calibration_sample(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded sample of ``n`` validation images (all of them if fewer), in index order."""
    rng = np.random.default_rng(seed + CALIBRATION_SEED_OFFSET)
    idx = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    return np.asarray(images[idx])


class Int8Static(Method):
    name = "int8"

    def check(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> None:
        _engines()

    def compress(self, model: nn.Module, levels: Sequence[float], ctx: Context) -> Iterator[Compressed]:
        ort, q = _engines()
        with tempfile.TemporaryDirectory(prefix="cxrprune-int8-") as tmp:
            path = self._quantise(model, ctx, Path(tmp), q)
            blob = path.read_bytes()  # the deployable file, kept in memory once the folder is gone
            nonzero, zeros = onnx_nonzero_params(path), _zero_fraction_int8(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = ctx.prune.efficiency_threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])

        def predict(images: torch.Tensor) -> np.ndarray:
            images = images.cpu()
            out = [session.run(None, {"input": float_inputs(images[i:i + PREDICT_BATCH])})[0]
                   for i in range(0, images.shape[0], PREDICT_BATCH)]
            return torch.sigmoid(torch.from_numpy(np.concatenate(out))).numpy().astype(np.float32)

        yield Compressed(0.0, zeros, lambda dst: Path(dst).write_bytes(blob), predict=predict,
                         engine="onnxruntime", nonzero_params=nonzero)

    def _quantise(self, model: nn.Module, ctx: Context, tmp: Path, q) -> Path:
        images, _ = ctx.split("val")
        sample = calibration_sample(images, ctx.prune.calibration_images, ctx.seed)
        fp32, pre, out = tmp / "fp32.onnx", tmp / "pre.onnx", tmp / "int8.onnx"
        cpu_model = _cpu_copy(model)
        example = torch.zeros(2, 3, ctx.image_size, ctx.image_size)
        # The TorchScript exporter (deprecated in favour of torch.export's, which needs
        # onnxscript) gives the plain Conv/Relu/Add graph that quantize_static is built around.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(cpu_model, (example,), str(fp32), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False, do_constant_folding=True)
        q.shape_inference.quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.batches = iter(range(0, len(sample), CALIBRATION_BATCH))

            def get_next(self):
                i = next(self.batches, None)
                return None if i is None else {"input": float_inputs(torch.from_numpy(sample[i:i + CALIBRATION_BATCH]))}

        q.quantize_static(str(pre), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
        return out


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()


def _zero_fraction_int8(path: Path) -> float:
    """Fraction of exactly-zero quantised weights (int8 initialisers of the Conv/Gemm weights)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    ws = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8
          and not t.name.endswith("_zero_point")]
    n = sum(w.size for w in ws)
    return float(sum(w.size - np.count_nonzero(w) for w in ws) / n) if n else float("nan")
