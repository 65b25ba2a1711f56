//! Test fixtures (under construction).
#![forbid(unsafe_code)]
