//! Custom fused operations with a CPU reference (the default path and the tests' oracle) and a
//! CUDA kernel compiled at run time with NVRTC (filled in by the kernels issue).
