//! Criterion benchmarks of the CPU kernels (filled in below).
fn main() {}
