//! Route grammar and matching on arbitrary strings. `matches` is checked
//! against a brute-force reference, and `covers` for soundness on a third
//! string: if `a` covers `b` and `b` matches `r`, then `a` matches `r`.
#![no_main]

use fitz_protocol::route::{self, Scheme};
use libfuzzer_sys::fuzz_target;

fn reference(p: &[&str], r: &[&str]) -> bool {
    match p.split_first() {
        None => r.is_empty(),
        Some((&"**", rest)) => (0..=r.len()).any(|k| reference(rest, &r[k..])),
        Some((&seg, rest)) => match r.split_first() {
            Some((&rs, r_rest)) => (seg == "*" || seg == rs) && reference(rest, r_rest),
            None => false,
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let a = parts.next().unwrap_or("");
    let b = parts.next().unwrap_or("");
    let r = parts.next().unwrap_or("");

    for s in [a, b, r] {
        let shape = route::shape(s);
        let _ = route::stream_selector(s);
        for n in 0..5 {
            if let Some(p) = route::prefix(route::path_of(s), n) {
                assert!(route::path_of(s).starts_with(p));
            }
        }
        for scheme in Scheme::ALL {
            let pat = route::validate_pattern(s, scheme);
            let con = route::validate_concrete(s, scheme);
            if con.is_ok() {
                assert!(shape.is_ok_and(|sh| sh.is_concrete()));
            }
            if pat.is_ok() || con.is_ok() {
                assert!(shape.is_ok());
            }
        }
    }

    // The reference backtracks exponentially; keep it to short inputs.
    if a.len() + r.len() <= 64 && a.split('/').count() <= 8 {
        let want = match (a.split_once("://"), r.split_once("://")) {
            (Some((ps, pp)), Some((rs, rp))) => {
                ps == rs
                    && reference(
                        &pp.split('/').collect::<Vec<_>>(),
                        &rp.split('/').collect::<Vec<_>>(),
                    )
            }
            _ => false,
        };
        assert_eq!(route::matches(a, r), want, "matches({a:?}, {r:?})");
    }

    if route::covers(a, b) && route::matches(b, r) && !r.split('/').any(|seg| seg.contains('*')) {
        assert!(route::matches(a, r), "{a:?} covers {b:?} but misses {r:?}");
    }
    if route::covers(a, b) {
        let scheme = |s: &str| s.split_once("://").map(|(x, _)| x.to_owned());
        assert_eq!(scheme(a), scheme(b), "covers crossed schemes");
    }
});
