//! What the page reads besides generation: thumbnails (made at save, made and cached for older
//! images, small, bad names refused), the history a page of days at a time, the presets, the
//! icon, and the download address of each missing model.

use std::path::Path;

use chrono::NaiveDate;
use fooocus::store::{save_image_file, EncodeOptions, ImageMetadata, OutputStore};
use image::RgbImage;
use serde_json::Value;

use crate::client::get;
use crate::{serve, Spec};

fn noise(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7 + y * 3) as u8, (x ^ y) as u8, (x * y) as u8])
    })
}

fn meta(prompt: &str) -> ImageMetadata {
    ImageMetadata {
        prompt: prompt.into(),
        width: 1152,
        height: 896,
        ..ImageMetadata::default()
    }
}

/// Saves an image through the store on `date` at 10:00 (which makes its thumbnail too).
fn save_on(outputs: &Path, date: &str, prompt: &str) -> String {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    let at = day.and_hms_opt(10, 0, 0).unwrap();
    let store = OutputStore::new(outputs);
    let saved = store
        .save_at(
            &noise(1152, 896),
            &meta(prompt),
            &EncodeOptions::default(),
            at,
        )
        .unwrap();
    saved.relative
}

fn dates(history: &Value) -> Vec<String> {
    history["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["date"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_are_small_made_once_and_refuse_other_names() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let outputs = server.dir.path().join("outputs");

    // Saved through the store: the thumbnail is there before anyone asks.
    let saved = save_on(&outputs, "2024-03-01", "a saved image");
    let made_at_save = outputs
        .join("2024-03-01/.thumbs")
        .join(format!("{}.jpg", saved.rsplit_once('/').unwrap().1));
    assert!(made_at_save.is_file(), "{}", made_at_save.display());

    // An older image without one: made on the first request, then served from disk.
    std::fs::create_dir_all(outputs.join("2024-03-02")).unwrap();
    let old = "2024-03-02/2024-03-02_09-00-00_1234.png";
    save_image_file(
        &outputs.join(old),
        &noise(896, 1152),
        &meta("an old image"),
        &EncodeOptions::default(),
    )
    .unwrap();
    let cached = outputs.join("2024-03-02/.thumbs/2024-03-02_09-00-00_1234.png.jpg");
    assert!(!cached.exists());
    let first = get(addr, &format!("/thumbs/{old}")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("image/jpeg"));
    let full = std::fs::metadata(outputs.join(old)).unwrap().len() as usize;
    assert!(
        first.body.len() < 40_000 && first.body.len() * 4 < full,
        "thumbnail {} bytes, image {full}",
        first.body.len()
    );
    let thumb = image::load_from_memory(&first.body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (199, 256));
    assert!(cached.is_file());
    let stamp = std::fs::metadata(&cached).unwrap().modified().unwrap();
    let second = get(addr, &format!("/thumbs/{old}")).await;
    assert_eq!(second.body, first.body);
    assert_eq!(
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
        stamp,
        "the cached thumbnail was made again"
    );

    for bad in [
        "/thumbs/2024-03-02/log.html",
        "/thumbs/2024-03-02/2024-03-02_09-00-00_9999.png",
        "/thumbs/2024-03-02/.thumbs/2024-03-02_09-00-00_1234.png.jpg",
        "/thumbs/../config.toml",
        "/thumbs/2024-03-02/..%2F..%2Fconfig.toml",
        "/thumbs/2024-03-02",
        "/thumbs/notadate/2024-03-02_09-00-00_1234.png",
    ] {
        assert_eq!(get(addr, bad).await.status, 404, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_pages_back_through_the_days() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let outputs = server.dir.path().join("outputs");
    for date in ["2024-01-01", "2024-01-03", "2024-01-05"] {
        save_on(&outputs, date, date);
    }
    // A date folder without images is skipped, not listed empty.
    std::fs::create_dir_all(outputs.join("2024-01-04")).unwrap();

    let first = get(addr, "/api/history?days=1").await.json();
    assert_eq!(dates(&first), ["2024-01-05"], "{first}");
    assert_eq!(first["more"], true);
    let image = &first["days"][0]["images"][0];
    let path = image["path"].as_str().unwrap();
    assert_eq!(image["thumb"], format!("thumbs/{path}"));
    assert_eq!(image["metadata"]["prompt"], "2024-01-05");

    let second = get(addr, "/api/history?before=2024-01-05&days=1")
        .await
        .json();
    assert_eq!(dates(&second), ["2024-01-03"], "{second}");
    assert_eq!(second["more"], true);
    let last = get(addr, "/api/history?before=2024-01-03&days=5")
        .await
        .json();
    assert_eq!(dates(&last), ["2024-01-01"], "{last}");
    assert_eq!(last["more"], false);
    let two = get(addr, "/api/history?days=2").await.json();
    assert_eq!(dates(&two), ["2024-01-05", "2024-01-03"], "{two}");

    // Without paging: every day, as before.
    let all = get(addr, "/api/history").await.json();
    assert_eq!(dates(&all).len(), 3, "{all}");
    assert_eq!(all["more"], false);
    assert_eq!(get(addr, "/api/history?before=soon").await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_icon_and_download_addresses() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let presets = get(addr, "/api/presets").await.json();
    assert_eq!(presets["current"], "default");
    let list = presets["presets"].as_array().unwrap();
    let current = list.iter().find(|p| p["name"] == "default").unwrap();
    // The server's own preset, as it was started.
    assert_eq!(current["values"]["base_model"], "sdxl_base.safetensors");
    assert!(current["values"]["aspect_ratio"].is_string(), "{presets}");

    let icon = get(addr, "/favicon.svg").await;
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    assert!(String::from_utf8_lossy(&icon.body).starts_with("<svg"));
    let page = String::from_utf8_lossy(&get(addr, "/").await.body).into_owned();
    assert!(page.contains("rel=\"icon\""), "{page}");

    let empty = serve(Spec {
        no_models: true,
        ..Spec::default()
    })
    .await;
    let health = get(empty.addr(), "/api/health").await.json();
    let missing = health["missing_models"].as_array().unwrap();
    let tokenizer = missing
        .iter()
        .find(|m| m["name"] == "tokenizer.json")
        .unwrap();
    assert_eq!(tokenizer["what"], "CLIP tokenizer");
    // On the hub of HF_ENDPOINT when set, else huggingface.co.
    let url = tokenizer["url"].as_str().unwrap();
    assert!(
        url.starts_with("http")
            && url.ends_with("/openai/clip-vit-large-patch14/resolve/main/tokenizer.json"),
        "{url}"
    );
    let base = missing
        .iter()
        .find(|m| m["name"] == "sdxl_base.safetensors")
        .unwrap();
    assert_eq!(base["what"], "base model");
    assert_eq!(base["url"], Value::Null, "not in the catalog: {health}");
}
