//! End-to-end tests of the store: save, read back, determinism, log and history together.

use std::path::Path;

use chrono::NaiveDateTime;
use image::RgbImage;

use super::naming::parse_image_name;
use super::*;

fn image() -> RgbImage {
    RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, ((x + y) * 5) as u8])
    })
}

fn meta(prompt: &str, seed: u64) -> ImageMetadata {
    ImageMetadata {
        prompt: prompt.into(),
        negative_prompt: "blurry, lowres".into(),
        styles: vec!["Fooocus V2".into(), "Fooocus Sharp".into()],
        seed,
        width: 24,
        height: 16,
        base_model: "juggernautXL_v8Rundiffusion.safetensors".into(),
        base_model_hash: Some("aeb7e9e689".into()),
        loras: vec![LoraEntry {
            name: "sd_xl_offset_example-lora_1.0.safetensors".into(),
            hash: Some("4852686128".into()),
            weight: 0.1,
        }],
        ..ImageMetadata::default()
    }
}

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn opts(format: OutputFormat, embed: bool) -> EncodeOptions {
    EncodeOptions {
        format,
        quality: 95,
        embed_metadata: embed,
    }
}

const FORMATS: [OutputFormat; 3] = [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp];

#[test]
fn round_trip_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = OutputStore::new(dir.path());
    for format in FORMATS {
        let m = meta("a cat ☕ on a sofa, (soft light:1.2)", 7);
        let saved = store
            .save_at(&image(), &m, &opts(format, true), at("2024-03-05 07:08:09"))
            .unwrap();
        let expected = ImageMetadata {
            output_format: format,
            ..m.clone()
        };
        assert_eq!(
            read_metadata(&saved.path).unwrap(),
            Some(expected.clone()),
            "{format}"
        );

        // The A1111 text alone parses back to the same values (names as stems).
        let text = read_embedded_text(&saved.path).unwrap();
        assert_eq!(text.format, Some(format));
        let mut parsed = parse_a1111(text.parameters.as_deref().unwrap()).unwrap();
        assert_eq!(parsed.output_format, OutputFormat::Png); // not carried by the text
        parsed.output_format = format;
        let stemmed = ImageMetadata {
            base_model: "juggernautXL_v8Rundiffusion".into(),
            loras: vec![LoraEntry {
                name: "sd_xl_offset_example-lora_1.0".into(),
                ..m.loras[0].clone()
            }],
            ..expected.clone()
        };
        assert_eq!(parsed, stemmed, "{format}");

        // Without our JSON, reading falls back to the A1111 text.
        let fallback = EmbeddedText { json: None, ..text };
        assert_eq!(fallback.metadata(), Some(stemmed));
    }
}

#[test]
fn png_chunks_follow_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    save_image_file(
        &path,
        &image(),
        &meta("latin-1 only: café", 1),
        &opts(OutputFormat::Png, true),
    )
    .unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let text: Vec<_> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.as_str(), c.text.as_str()))
        .collect();
    assert!(text
        .iter()
        .any(|(k, v)| *k == "parameters" && v.starts_with("latin-1 only: café\n")));
    assert!(text.contains(&("fooocus_scheme", "a1111")));
    assert!(info.utf8_text.iter().any(|c| c.keyword == JSON_KEYWORD));

    // Text beyond Latin-1 goes to an iTXt `parameters`.
    save_image_file(
        &path,
        &image(),
        &meta("猫", 1),
        &opts(OutputFormat::Png, true),
    )
    .unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
        .read_info()
        .unwrap();
    assert!(reader
        .info()
        .utf8_text
        .iter()
        .any(|c| c.keyword == "parameters"));
    assert!(read_metadata(&path).unwrap().unwrap().prompt == "猫");
}

#[test]
fn identical_input_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for format in FORMATS {
        let a = dir.path().join(format!("a.{format}"));
        let b = dir.path().join(format!("b.{format}"));
        let m = meta("same", 3);
        save_image_file(&a, &image(), &m, &opts(format, true)).unwrap();
        save_image_file(&b, &image(), &m, &opts(format, true)).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{format}"
        );
    }
}

/// The raw chunk / segment names of a file, to check nothing is embedded.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn metadata_off_embeds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for format in FORMATS {
        let path = dir.path().join(format!("off.{format}"));
        save_image_file(
            &path,
            &image(),
            &meta("secret prompt", 5),
            &opts(format, false),
        )
        .unwrap();
        assert_eq!(read_metadata(&path).unwrap(), None, "{format}");
        let bytes = std::fs::read(&path).unwrap();
        for needle in [
            &b"secret"[..],
            b"tEXt",
            b"iTXt",
            b"zTXt",
            b"Exif",
            b"EXIF",
            b"fooocus",
        ] {
            assert!(
                !contains(&bytes, needle),
                "{format} holds {:?}",
                String::from_utf8_lossy(needle)
            );
        }
        let text = read_embedded_text(&path).unwrap();
        assert_eq!((text.parameters, text.json), (None, None));
    }
}

#[test]
fn save_names_folders_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("outputs");
    let store = OutputStore::new(&root);
    let saved = store
        .save_at(
            &image(),
            &meta("x", 1),
            &opts(OutputFormat::Jpeg, true),
            at("2024-03-05 07:08:09"),
        )
        .unwrap();
    let name = saved.path.file_name().unwrap().to_str().unwrap();
    let parsed = parse_image_name(name).unwrap();
    assert_eq!(parsed.stamp, "2024-03-05_07-08-09");
    assert!((1000..=9999).contains(&parsed.digits.parse::<u32>().unwrap()));
    assert!(name.ends_with(".jpeg"));
    assert_eq!(saved.relative, format!("2024-03-05/{name}"));
    assert_eq!(saved.path, root.join("2024-03-05").join(name));
    assert_eq!(
        store.resolve(&saved.relative).unwrap(),
        saved.path.canonicalize().unwrap()
    );

    let mut names: Vec<String> = std::fs::read_dir(root.join("2024-03-05"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![
        name.to_string(),
        ".thumbs".into(),
        "log.html".into(),
        "log.jsonl".into(),
    ];
    expected.sort();
    assert_eq!(names, expected);
    // The thumbnail, and nothing else, in the hidden folder.
    let thumbs: Vec<String> = std::fs::read_dir(root.join("2024-03-05/.thumbs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(thumbs, vec![format!("{name}.jpg")]);
}

#[test]
fn without_log_writes_only_the_image_and_its_thumbnail() {
    let dir = tempfile::tempdir().unwrap();
    let store = OutputStore::new(dir.path()).with_log(false);
    store
        .save_at(
            &image(),
            &meta("x", 1),
            &opts(OutputFormat::Png, true),
            at("2024-03-05 07:08:09"),
        )
        .unwrap();
    // The image and its thumbnail's folder.
    assert_eq!(
        std::fs::read_dir(dir.path().join("2024-03-05"))
            .unwrap()
            .count(),
        2
    );
}

fn write_foreign(dir: &Path) {
    std::fs::write(dir.join("cat.png"), b"not ours").unwrap();
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    std::fs::create_dir_all(dir.join("2024-03-05_00-00-00_1111.png")).unwrap();
}

#[test]
fn history_newest_first_ignoring_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = OutputStore::new(root);
    let png = opts(OutputFormat::Png, true);
    let a = store
        .save_at(
            &image(),
            &meta("day1 early", 1),
            &png,
            at("2024-03-04 10:00:00"),
        )
        .unwrap();
    let b = store
        .save_at(
            &image(),
            &meta("day2 early", 2),
            &png,
            at("2024-03-05 09:00:00"),
        )
        .unwrap();
    let c = store
        .save_at(
            &image(),
            &meta("day2 late", 3),
            &png,
            at("2024-03-05 18:30:00"),
        )
        .unwrap();
    // Same second as `c`: the log order decides.
    let d = store
        .save_at(
            &image(),
            &meta("day2 latest", 4),
            &png,
            at("2024-03-05 18:30:00"),
        )
        .unwrap();
    // Saved without the log and without metadata: listed, metadata unreadable.
    let e = OutputStore::new(root)
        .with_log(false)
        .save_at(
            &image(),
            &meta("hidden", 5),
            &opts(OutputFormat::Webp, false),
            at("2024-03-05 08:00:00"),
        )
        .unwrap();
    // Saved without the log but with metadata: read from the file.
    let f = OutputStore::new(root)
        .with_log(false)
        .save_at(
            &image(),
            &meta("from file", 6),
            &opts(OutputFormat::Jpeg, true),
            at("2024-03-05 07:00:00"),
        )
        .unwrap();

    write_foreign(&root.join("2024-03-05"));
    std::fs::create_dir(root.join("not-a-date")).unwrap();
    std::fs::write(
        root.join("not-a-date").join("2024-03-05_00-00-00_1111.png"),
        b"x",
    )
    .unwrap();
    std::fs::create_dir(root.join("2024-03-06")).unwrap(); // empty day: left out
    #[cfg(unix)]
    {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("2024-03-07_00-00-00_1111.png"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("2024-03-07")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("2024-03-07_00-00-00_1111.png"),
            root.join("2024-03-05").join("2024-03-05_23-59-59_1111.png"),
        )
        .unwrap();
    }

    let history = store.history().unwrap();
    let dates: Vec<&str> = history.iter().map(|d| d.date.as_str()).collect();
    assert_eq!(dates, ["2024-03-05", "2024-03-04"]);
    let day2: Vec<&str> = history[0].images.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        day2,
        [
            &d.relative,
            &c.relative,
            &b.relative,
            &e.relative,
            &f.relative
        ]
    );
    assert_eq!(history[1].images[0].path, a.relative);

    let prompts: Vec<Option<&str>> = history[0]
        .images
        .iter()
        .map(|i| i.metadata.as_ref().map(|m| m.prompt.as_str()))
        .collect();
    assert_eq!(
        prompts,
        [
            Some("day2 latest"),
            Some("day2 late"),
            Some("day2 early"),
            None,
            Some("from file")
        ]
    );
    assert_eq!(store.day("2024-03-04").unwrap(), history[1].images);
    assert!(store.day("../etc").is_err());
    assert!(store.day("2024-01-01").unwrap().is_empty());
    assert!(OutputStore::new(root.join("missing"))
        .history()
        .unwrap()
        .is_empty());
}

#[test]
fn foreign_and_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    // A PNG written by another tool with only an A1111 `parameters` chunk.
    let path = dir.path().join("a1111.png");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut enc = png::Encoder::new(file, 2, 2);
        enc.set_color(png::ColorType::Rgb);
        enc.add_text_chunk(
            "parameters".into(),
            "a dog\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 9, Size: 2x2".into(),
        )
        .unwrap();
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0; 12]).unwrap();
        w.finish().unwrap();
    }
    let m = read_metadata(&path).unwrap().unwrap();
    assert_eq!(
        (m.prompt.as_str(), m.sampler.as_str(), m.steps, m.seed),
        ("a dog", "euler_ancestral", 20, 9)
    );

    // Not an image: no metadata. Truncated PNG: an error naming the file.
    let txt = dir.path().join("notes.png");
    std::fs::write(&txt, b"hello").unwrap();
    assert_eq!(read_metadata(&txt).unwrap(), None);
    let cut = dir.path().join("cut.png");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&cut, &bytes[..20]).unwrap();
    let err = read_metadata(&cut).unwrap_err();
    assert!(err.to_string().contains("cut.png"), "{err}");
    assert!(read_metadata(&dir.path().join("missing.png")).is_err());

    // The in-memory reader agrees with the file reader.
    assert_eq!(
        embedded_text_from_bytes(&bytes).unwrap(),
        read_embedded_text(&path).unwrap()
    );
}
