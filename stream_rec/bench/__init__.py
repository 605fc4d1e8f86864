"""Benchmarks: model latency/throughput (CPU, ONNX Runtime vs torch) and the GPU check."""
