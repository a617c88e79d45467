//! Wildcard (`__name__`) and array (`[[a,b]]`) expansion. A temporary wildcard folder holds fixed
//! files that reference each other (nesting, a cycle, a file in a subfolder) plus `fz.txt`, whose
//! lines come from the input; the prompt and seed come from the input too.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use fooocus::pipeline::wildcards::{apply_arrays, array_combinations, Wildcards};
use fooocus::sampling::TorchGenerator;
use libfuzzer_sys::fuzz_target;

const FILES: [(&str, &str); 6] = [
    ("color.txt", "red\ngreen\n\n  blue  \n"),
    ("animal.txt", "cat\n__color__ dog\n"),
    (
        "scene.txt",
        "a __animal__ in a __place__\n[[day,night]] __color__\n",
    ),
    ("sub/place.txt", "forest\n__scene__\n"),
    ("loop.txt", "__loop__ again\n"),
    ("empty.txt", "\n\n"),
];

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("fooocus-fuzz-wildcards-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("make the wildcard folder");
        for (name, text) in FILES {
            std::fs::write(dir.join(name), text).expect("write a wildcard file");
        }
        dir
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    prompt: String,
    fz_lines: Option<Vec<String>>,
    seed: u64,
    array_index: usize,
}

fuzz_target!(|input: Input| {
    let dir = dir();
    let fz = dir.join("fz.txt");
    match &input.fz_lines {
        Some(lines) => std::fs::write(&fz, lines.join("\n")).expect("write fz.txt"),
        None => {
            let _ = std::fs::remove_file(&fz);
        }
    }
    let mut wildcards = Wildcards::new(dir);
    if wildcards.check(&input.prompt).is_err() {
        return;
    }
    let mut rng = TorchGenerator::new(input.seed);
    let Ok(text) = wildcards.apply(&input.prompt, &mut rng) else {
        return;
    };
    let combinations = array_combinations(&text);
    assert!(combinations >= 1);
    let _ = apply_arrays(&text, input.array_index);
    let _ = apply_arrays(&text, input.array_index % combinations);
});
