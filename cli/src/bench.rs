//! `fitz bench`: not built yet.

use crate::cli::{BenchCmd, Global};
use crate::failure::Failure;
use crate::out::Out;

/// Runs a benchmark.
pub async fn run(_g: &Global, _b: BenchCmd, _o: Out) -> Result<(), Failure> {
    Err(Failure::usage("fitz bench: not built yet"))
}
