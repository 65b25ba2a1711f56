//! Whole sessions against an in-process broker: the input is a script of up
//! to three interleaved anonymous sessions (`fitz_broker::fuzzing::Op`) whose
//! bytes go through the broker's real framing, handshake, dispatch and
//! engines, with time moving in between. Checked on every input: no panic,
//! every frame the broker sends is well formed, a bystander session is still
//! served afterwards, and no KV transaction outlives its session.
#![no_main]

use fitz_broker::fuzzing::Harness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    h.run(data);
    assert!(h.bystander_served(), "a bystander session went unserved");
    assert_eq!(h.open_transactions(), 0, "a transaction outlived its session");
});
