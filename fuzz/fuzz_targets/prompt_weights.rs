//! The prompt-weight parser `(a:1.2)`, `((a))`, `\(`.
#![no_main]

use fooocus::nets::sdxl::tokenizer::parse_weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|prompt: &str| {
    let segments = parse_weights(prompt);
    for (text, _weight) in &segments {
        assert!(!text.is_empty());
    }
    // No character appears from nowhere: the segments hold only the prompt's characters.
    let total: usize = segments.iter().map(|(t, _)| t.len()).sum();
    assert!(total <= prompt.len());
});
