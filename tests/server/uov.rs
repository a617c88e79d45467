//! Input images over `/api/generate`: every bad input is a 400 that names `input_image` or
//! `uov_method` and says what is wrong, with nothing queued; a good one runs, and its result can
//! be sent back by the address the API gave.

use base64::Engine;
use serde_json::{json, Value};

use crate::client::{get, post_json, wait_job};
use crate::harness::{serve, Spec};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    });
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// A PNG whose header says `width` × `height` (its pixel data is a few bytes): what a
/// decompression bomb looks like before it is inflated.
fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for b in bytes {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
    chunk(&mut out, b"IEND", &[]);
    out
}

async fn refused(addr: std::net::SocketAddr, body: Value, field: &str, says: &[&str]) {
    let r = post_json(addr, "/api/generate", &body).await;
    assert_eq!(r.status, 400, "{body}: {}", r.json());
    let answer = r.json();
    assert_eq!(answer["field"], field, "{answer}");
    let error = answer["error"].as_str().unwrap();
    for part in says {
        assert!(error.contains(part), "{field}: {error:?} lacks {part:?}");
    }
    println!("{field}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_images_are_refused_before_anything_is_queued() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let good = b64(&png(64, 48));
    let full = png(64, 48);
    let truncated = b64(&full[..full.len() / 2]);
    let cases = [
        (
            json!({"prompt": "x", "input_image": b64(b"hello, not an image"), "uov_method": "Vary (Subtle)"}),
            "input_image",
            vec!["not a PNG, JPEG or WebP"],
        ),
        (
            json!({"prompt": "x", "input_image": truncated, "uov_method": "Vary (Subtle)"}),
            "input_image",
            vec!["PNG image that cannot be decoded", "complete"],
        ),
        (
            json!({"prompt": "x", "input_image": b64(&png_header_claiming(20000, 20000)), "uov_method": "Upscale (2x)"}),
            "input_image",
            vec!["20000×20000", "4096 pixels per side"],
        ),
        (
            json!({"prompt": "x", "input_image": good, "uov_method": "Sideways (3x)"}),
            "uov_method",
            vec!["not a method", "Vary (Subtle)", "Upscale (Fast 2x)"],
        ),
        (
            json!({"prompt": "x", "input_image": "https://example.com/cat.png", "uov_method": "Vary (Strong)"}),
            "input_image",
            vec!["not the address of one of our saved images"],
        ),
        (
            json!({"prompt": "x", "input_image": "/outputs/../../etc/passwd", "uov_method": "Vary (Strong)"}),
            "input_image",
            vec!["not one of our saved images"],
        ),
        (
            json!({"prompt": "x", "input_image": "not base64 at all!", "uov_method": "Vary (Strong)"}),
            "input_image",
            vec!["not base64"],
        ),
        (
            json!({"prompt": "x", "input_image": format!("sha256:{}", "0".repeat(64)), "uov_method": "Vary (Strong)"}),
            "input_image",
            vec!["no saved or kept image has sha256"],
        ),
        (
            json!({"prompt": "x", "uov_method": "Vary (Subtle)"}),
            "input_image",
            vec!["needs an input image"],
        ),
        (
            json!({"prompt": "x", "input_image": good}),
            "uov_method",
            vec!["needs a method"],
        ),
    ];
    for (body, field, says) in cases {
        refused(addr, body, field, &says).await;
    }
    let queue = get(addr, "/api/queue").await.json();
    assert_eq!(queue["jobs"], json!([]), "something was queued: {queue}");
    server.server.shutdown().await.unwrap();
}

/// Upscale (Fast 2x) of an uploaded image gives one image at Fooocus' size; sent back by the
/// `url` the API gave (and by a data URL), it is accepted as an input again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upscaled_result_can_be_sent_back_by_its_address() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let data_url = format!("data:image/png;base64,{}", b64(&png(48, 32)));
    let r = post_json(
        addr,
        "/api/generate",
        &json!({"prompt": "", "input_image": data_url, "uov_method": "Upscale (Fast 2x)", "image_number": 3}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        r.json()["seeds"].as_array().unwrap().len(),
        1,
        "Fast 2x is one image"
    );
    let job = r.json()["job_id"].as_u64().unwrap();
    let status = wait_job(addr, job).await;
    assert_eq!(status["state"], "done", "{status}");
    let url = status["images"][0]["url"].as_str().unwrap().to_string();
    let bytes = crate::client::get(addr, &format!("/{url}")).await.body;
    let image = image::load_from_memory(&bytes).unwrap();
    // 48×32 at 2× has shape ceil 128: the 4× upscale (192×128) is brought to shape ceil 1024.
    let (h, w) = fooocus::pipeline::image::sizes::shape_ceil_size(128, 192, 1024.0);
    assert_eq!((image.width(), image.height()), (w, h));
    assert_eq!((w, h), (1152, 832));
    let r = post_json(
        addr,
        "/api/generate",
        &json!({"prompt": "", "input_image": url, "uov_method": "fast"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let status = wait_job(addr, r.json()["job_id"].as_u64().unwrap()).await;
    assert_eq!(status["state"], "done", "{status}");
    server.server.shutdown().await.unwrap();
}
