//! The A1111 `parameters` text reader (`parse_a1111`, `parse_pairs`); what parses is written
//! back with `to_a1111` and read again.
#![no_main]

use fooocus::store::a1111::{parse_a1111, parse_pairs, to_a1111};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = parse_pairs(text);
    if let Some(meta) = parse_a1111(text) {
        let written = to_a1111(&meta);
        // What we write is a parameter text we read back.
        assert!(
            parse_a1111(&written).is_some(),
            "to_a1111 output does not parse back: {written:?}"
        );
    }
});
