"""Export of the served multi-view model: bundle format, ONNX export + parity, int8 dynamic
quantization, TensorRT engine build, Triton model repository.

Submodules are imported explicitly (``from roadwork_ml.export.onnx_export import export_onnx``)
so that importing one of them does not pull in the others' heavy dependencies; TensorRT in
particular is only imported inside the functions that need it.
"""

__all__ = ["bundle", "onnx_export", "quantize", "tensorrt_build", "triton"]
