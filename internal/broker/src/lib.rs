//! Embeddable Fitz-compatible broker (under construction).
#![forbid(unsafe_code)]
