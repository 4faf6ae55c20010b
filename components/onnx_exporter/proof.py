"""What must hold before an ONNX file ships: parity with the SavedModel, INT8 accuracy."""
import dataclasses
from typing import Iterator, Optional

import numpy as np
import onnxruntime
from onnxruntime import quantization


def session(path: str) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])


def run(model: onnxruntime.InferenceSession, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Scores for `pixels`, in batches."""
    name = model.get_inputs()[0].name
    return np.concatenate([model.run(None, {name: pixels[i:i + batch_size]})[0]
                           for i in range(0, len(pixels), batch_size)])


@dataclasses.dataclass(frozen=True)
class Parity:
    examples: int
    max_abs_difference: float
    same_class: int

    def holds(self, tolerance: float) -> bool:
        return self.max_abs_difference <= tolerance and self.same_class == self.examples


def parity(onnx_scores: np.ndarray, saved_model_scores: np.ndarray) -> Parity:
    return Parity(len(onnx_scores), float(np.abs(onnx_scores - saved_model_scores).max()),
                  int((onnx_scores.argmax(axis=1) == saved_model_scores.argmax(axis=1)).sum()))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.argmax(axis=1) == labels).mean())


class _Calibration(quantization.CalibrationDataReader):
    def __init__(self, input_name: str, batches: Iterator[np.ndarray]):
        self._input_name, self._batches = input_name, batches

    def get_next(self) -> Optional[dict]:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}


def quantize_int8(fp32_path: str, int8_path: str, calibration: np.ndarray, input_name: str,
                  batch_size: int = 16) -> None:
    """onnxruntime's static INT8 quantization (QDQ, per channel), calibrated on `calibration`."""
    batches = (calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size))
    quantization.quantize_static(fp32_path, int8_path, _Calibration(input_name, batches),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8)
