//! The Fitz client SDK (under construction).
#![forbid(unsafe_code)]
