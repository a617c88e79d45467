//! The A1111 (`/sdapi/v1`) and OpenAI (`/v1/images`) dialects at the HTTP level: the exact request
//! sequences Open WebUI and SillyTavern send (from `../shared/reference/api-clients.md`), with
//! and without authentication; A1111's shapes; sizes honoured to the pixel; and every refused
//! request answered with a message naming its field, nothing queued.

use base64::Engine;
use serde_json::{json, Value};

use crate::client::{get, post_json, request};
use crate::harness::{serve, Spec, TestServer};
use fooocus::server::{Accounts, Credentials};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not raw base64 ({e}): {}", &text[..text.len().min(60)]))
}

/// A request with the headers a client sends (`Authorization` among them).
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> crate::client::Response {
    let mut all = headers.to_vec();
    let text = body.map(Value::to_string).unwrap_or_default();
    if body.is_some() {
        all.push(("Content-Type", "application/json"));
    }
    request(server.addr(), method, path, &all, text.as_bytes()).await
}

/// The PNG's size and the A1111 text it carries.
fn png_facts(bytes: &[u8]) -> ((u32, u32), String) {
    let image = image::load_from_memory(bytes).expect("a decodable image");
    let text = fooocus::store::embedded_text_from_bytes(bytes).unwrap();
    (
        (image.width(), image.height()),
        text.parameters.expect("the image carries A1111 parameters"),
    )
}

/// The JSON of a 200 answer (the body shown otherwise).
fn ok_json(reply: crate::client::Response) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

fn info(reply: &Value) -> Value {
    let text = reply["info"].as_str().expect("info is a JSON string");
    serde_json::from_str(text).unwrap()
}

/// The checkpoints' titles, asked with `auth`.
async fn titles(server: &TestServer, auth: &[(&str, &str)]) -> Vec<String> {
    call(server, "GET", "/sdapi/v1/sd-models", auth, None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap().to_string())
        .collect()
}

async fn nothing_queued(server: &TestServer) {
    let queue = get(server.addr(), "/api/queue").await.json();
    assert_eq!(queue["jobs"], json!([]), "a refused request queued a job");
    let history = get(server.addr(), "/api/history").await.json();
    assert_eq!(
        history["days"],
        json!([]),
        "a refused request saved an image"
    );
}

/// A server with the account `ada:lovelace`, and its Basic `Authorization` value.
async fn serve_with_login() -> (TestServer, String) {
    let server = serve(Spec {
        auth: Some(Accounts::from(
            &"ada:lovelace".parse::<Credentials>().unwrap(),
        )),
        ..Spec::default()
    })
    .await;
    (server, format!("Basic {}", b64(b"ada:lovelace")))
}

#[tokio::test]
async fn open_webui_sequence_with_empty_basic_auth() {
    let server = serve(Spec::default()).await;
    open_webui_sequence(&server, "Basic ").await;
}

#[tokio::test]
async fn open_webui_sequence_with_basic_auth_on() {
    let (server, token) = serve_with_login().await;
    open_webui_sequence(&server, &token).await;
}

/// Open WebUI's automatic1111 engine: every call with its `authorization` header.
async fn open_webui_sequence(server: &TestServer, authorization: &str) {
    let auth = [("authorization", authorization)];
    // Verify the URL, list the models, read the current one.
    let options = call(server, "GET", "/sdapi/v1/options", &auth, None).await;
    assert_eq!(options.status, 200);
    let options = options.json();
    let models = call(server, "GET", "/sdapi/v1/sd-models", &auth, None)
        .await
        .json();
    let titles: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    let current = options["sd_model_checkpoint"].as_str().unwrap();
    assert!(
        titles.contains(&current),
        "{current} is not among {titles:?}"
    );
    assert!(current.starts_with("sdxl_base.safetensors ["), "{current}");
    // Set the model: the whole dict posted back.
    let mut whole = options.clone();
    whole["sd_model_checkpoint"] = Value::from(current);
    let set = call(server, "POST", "/sdapi/v1/options", &auth, Some(&whole)).await;
    assert_eq!((set.status, set.json()), (200, Value::Null));
    // Generate, as its automatic1111 engine does.
    let body =
        json!({"prompt": "a lighthouse", "batch_size": 1, "width": 64, "height": 72, "steps": 2});
    let reply = call(server, "POST", "/sdapi/v1/txt2img", &auth, Some(&body)).await;
    let reply = ok_json(reply);
    let images = reply["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    let ((w, h), text) = png_facts(&unb64(images[0].as_str().unwrap()));
    assert_eq!((w, h), (64, 72), "the exact size asked for");
    assert!(text.starts_with("a lighthouse"), "{text}");
    let info = info(&reply);
    assert_eq!(info["all_seeds"].as_array().unwrap().len(), 1);
    assert_eq!(info["width"], 64);
    assert_eq!(reply["parameters"]["prompt"], "a lighthouse");
    // The job is the page's kind: in the history.
    let history = call(server, "GET", "/api/history", &auth, None)
        .await
        .json();
    assert_eq!(history["days"][0]["images"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sillytavern_sequence_with_empty_basic_auth() {
    let server = serve(Spec::default()).await;
    sillytavern_sequence(&server, "Basic ").await;
}

#[tokio::test]
async fn sillytavern_sequence_with_basic_auth_on() {
    let (server, token) = serve_with_login().await;
    sillytavern_sequence(&server, &token).await;
}

/// SillyTavern's `auto` source (its server's calls, each with `Authorization`), and the sd.cpp
/// source's ping.
async fn sillytavern_sequence(server: &TestServer, authorization: &str) {
    let auth = [("Authorization", authorization)];
    for path in [
        "/sdapi/v1/options",
        "/sdapi/v1/samplers",
        "/sdapi/v1/schedulers",
        "/sdapi/v1/sd-models",
        "/sdapi/v1/upscalers",
        "/sdapi/v1/latent-upscale-modes",
        "/sdapi/v1/sd-vae",
    ] {
        let r = call(server, "GET", path, &auth, None).await;
        assert_eq!(r.status, 200, "{path}");
        r.json();
    }
    let samplers = call(server, "GET", "/sdapi/v1/samplers", &auth, None)
        .await
        .json();
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for wanted in ["DPM++ 2M SDE", "Euler a", "DDIM", "Euler"] {
        assert!(names.contains(&wanted), "{wanted} not in {names:?}");
    }
    let schedulers = call(server, "GET", "/sdapi/v1/schedulers", &auth, None)
        .await
        .json();
    assert!(schedulers
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "normal"));
    // set-model: POST options, then poll progress until idle.
    let title = titles(server, &auth)
        .await
        .into_iter()
        .find(|t| t.starts_with("sdxl_base"))
        .unwrap();
    let set = call(
        server,
        "POST",
        "/sdapi/v1/options",
        &auth,
        Some(&json!({"sd_model_checkpoint": title})),
    )
    .await;
    assert_eq!(set.status, 200);
    let progress = call(server, "GET", "/sdapi/v1/progress", &auth, None)
        .await
        .json();
    assert_eq!(progress["progress"], 0.0);
    assert_eq!(progress["state"]["job_count"], 0);
    // Generate with its whole body forwarded (its own `url` and `auth` keys included).
    let body = json!({
        "url": "http://localhost:7860", "auth": "",
        "prompt": "a lighthouse", "negative_prompt": "fog", "sampler_name": "DDIM",
        "scheduler": "normal", "steps": 2, "cfg_scale": 7, "width": 64, "height": 64,
        "restore_faces": false, "enable_hr": false, "hr_upscaler": "Latent", "hr_scale": 2,
        "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": 123,
        "override_settings": {"CLIP_stop_at_last_layers": 1},
        "override_settings_restore_afterwards": true, "clip_skip": 1,
        "save_images": true, "send_images": true, "do_not_save_grid": false,
        "do_not_save_samples": false
    });
    let reply = call(server, "POST", "/sdapi/v1/txt2img", &auth, Some(&body)).await;
    let reply = ok_json(reply);
    let info = info(&reply);
    assert_eq!(info["seed"], 123);
    assert_eq!(info["sampler_name"], "DDIM");
    assert!(info["infotexts"][0].as_str().unwrap().contains("Seed: 123"));
    let (_, text) = png_facts(&unb64(reply["images"][0].as_str().unwrap()));
    assert!(text.contains("Schedule type: Normal"), "{text}");
    // The sd.cpp source pings with OPTIONS and no credentials.
    let ping = call(server, "OPTIONS", "/v1/images/generations", &[], None).await;
    assert!((200..300).contains(&ping.status), "{}", ping.status);
}

#[tokio::test]
async fn basic_auth_guards_both_dialects() {
    let (server, token) = serve_with_login().await;
    let empty = call(
        &server,
        "GET",
        "/sdapi/v1/options",
        &[("Authorization", "Basic ")],
        None,
    )
    .await;
    assert_eq!(empty.status, 401);
    let good = call(
        &server,
        "GET",
        "/sdapi/v1/options",
        &[("Authorization", &token)],
        None,
    )
    .await;
    assert_eq!(good.status, 200);
    let models = call(&server, "GET", "/v1/models", &[], None).await;
    assert_eq!(models.status, 401);
    // An OpenAI client's API key `user:password` is its login.
    let key = [("Authorization", "Bearer ada:lovelace")];
    assert_eq!(
        call(&server, "GET", "/v1/models", &key, None).await.status,
        200
    );
    let wrong = [("Authorization", "Bearer sk-something")];
    assert_eq!(
        call(&server, "GET", "/v1/models", &wrong, None)
            .await
            .status,
        401
    );
    // OPTIONS answers before authentication.
    let ping = call(&server, "OPTIONS", "/sdapi/v1/txt2img", &[], None).await;
    assert_eq!(ping.status, 204);
}

#[tokio::test]
async fn bad_requests_name_their_field_and_queue_nothing() {
    let server = serve(Spec::default()).await;
    let post = |path: &'static str, body: Value| {
        let addr = server.addr();
        async move { post_json(addr, path, &body).await }
    };
    let refiner = titles(&server, &[])
        .await
        .into_iter()
        .find(|t| t.starts_with("sdxl_refiner"))
        .unwrap();
    // A1111: (route, body, status, what `detail` says).
    let a1111 = [
        (
            "/sdapi/v1/txt2img",
            json!({"prompt": "x", "width": 1001, "height": 512}),
            400,
            "`width`: 1001: use a multiple of 8",
        ),
        (
            "/sdapi/v1/img2img",
            json!({"prompt": "x", "init_images": ["data:image/png;base64,%%%not"]}),
            400,
            "`init_images`",
        ),
        (
            "/sdapi/v1/img2img",
            json!({"prompt": "x"}),
            404,
            "Init image not found",
        ),
        (
            "/sdapi/v1/txt2img",
            json!({"prompt": "x", "steps": "many"}),
            422,
            "steps",
        ),
        (
            "/sdapi/v1/txt2img",
            json!({"prompt": "x", "batch_size": 8, "n_iter": 8}),
            400,
            "`batch_size`",
        ),
        (
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": "nope.safetensors [0123456789]"}),
            400,
            "not found",
        ),
        (
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": refiner}),
            400,
            "is a refiner",
        ),
    ];
    for (path, body, status, says) in a1111 {
        let r = post(path, body.clone()).await;
        assert_eq!(r.status, status, "{path} {body}");
        let answer = r.json();
        for key in ["error", "detail", "body", "errors"] {
            assert!(
                answer.get(key).is_some(),
                "A1111's error shape lacks {key}: {answer}"
            );
        }
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{path} {body}: {detail}");
    }
    // OpenAI: n beyond the limit, a bad size, no prompt.
    for (body, param, says) in [
        (json!({"prompt": "x", "n": 100}), "n", "1 to 10"),
        (
            json!({"prompt": "x", "size": "huge"}),
            "size",
            "WIDTHxHEIGHT",
        ),
        (json!({"n": 1}), "prompt", "required"),
        (
            json!({"prompt": "x", "response_format": "gif"}),
            "response_format",
            "b64_json",
        ),
    ] {
        let r = post("/v1/images/generations", body).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.header("x-should-retry"), Some("false"));
        let error = &r.json()["error"];
        assert_eq!(error["param"], param, "{error}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    nothing_queued(&server).await;
}

#[tokio::test]
async fn unknown_sampler_falls_back_and_img2img_resizes() {
    let server = serve(Spec::default()).await;
    let body = json!({"prompt": "x", "sampler_name": "Wobbly 9000", "steps": 2, "width": 64, "height": 64, "seed": 5});
    let reply = post_json(server.addr(), "/sdapi/v1/txt2img", &body).await;
    let reply = ok_json(reply);
    // The preset's sampler (Fooocus' dpmpp_2m_sde_gpu), under its A1111 name.
    assert_eq!(info(&reply)["sampler_name"], "DPM++ 2M SDE");
    let first = reply["images"][0].as_str().unwrap().to_string();
    // img2img of that image (raw base64, as chaiNNer sends), to another size.
    let body = json!({"prompt": "x", "init_images": [first], "denoising_strength": 0.5,
                      "steps": 2, "width": 80, "height": 88, "seed": 6});
    let reply = post_json(server.addr(), "/sdapi/v1/img2img", &body).await;
    let reply = ok_json(reply);
    assert_eq!(reply["parameters"]["init_images"], Value::Null);
    assert_eq!(info(&reply)["denoising_strength"], 0.5);
    let bytes = unb64(reply["images"][0].as_str().unwrap());
    let ((w, h), _) = png_facts(&bytes);
    assert_eq!((w, h), (80, 88));
    let meta = fooocus::store::embedded_text_from_bytes(&bytes)
        .unwrap()
        .metadata()
        .unwrap();
    let input = meta.input_image.expect("the metadata names the input");
    assert_eq!(
        (input.method.as_str(), input.denoise),
        ("Image to image", 0.5)
    );
    // png-info reads it back.
    let png_info = post_json(
        server.addr(),
        "/sdapi/v1/png-info",
        &json!({"image": format!("data:image/png;base64,{}", b64(&bytes))}),
    )
    .await
    .json();
    assert_eq!(png_info["parameters"]["Size-1"], "80");
    assert_eq!(png_info["parameters"]["Seed"], "6");
}

#[tokio::test]
async fn openai_generations_answer_b64_or_url() {
    let server = serve(Spec {
        steps: Some(1),
        ..Spec::default()
    })
    .await;
    let models = get(server.addr(), "/v1/models").await.json();
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "sdxl_base.safetensors" && m["object"] == "model"));
    let body = json!({"model": "dall-e-3", "prompt": "a lighthouse", "n": 1, "size": "1792x1024", "response_format": "url"});
    let reply = post_json(server.addr(), "/v1/images/generations", &body).await;
    let reply = ok_json(reply);
    assert_eq!(reply["size"], "1344x768");
    let url = reply["data"][0]["url"].as_str().unwrap();
    assert!(reply["data"][0].get("b64_json").is_none());
    let path = url
        .split_once("/outputs/")
        .map(|(_, p)| format!("/outputs/{p}"))
        .unwrap();
    let file = get(server.addr(), &path).await;
    assert_eq!(file.status, 200);
    let ((w, h), _) = png_facts(&file.body);
    assert_eq!((w, h), (1344, 768));
    assert!(reply["data"][0]["revised_prompt"]
        .as_str()
        .unwrap()
        .contains("a lighthouse"));
}

#[tokio::test]
async fn a_client_that_leaves_loses_no_job() {
    use tokio::io::AsyncWriteExt;
    let server = serve(Spec::default()).await;
    let body =
        json!({"prompt": "left behind", "width": 256, "height": 256, "steps": 20, "seed": 9})
            .to_string();
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let head = format!(
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // Leave as soon as the job is queued.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get(server.addr(), "/api/queue").await.json()["jobs"] == json!([]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never showed in the queue"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(stream);
    let job = get(server.addr(), "/api/queue").await.json()["jobs"][0]["job_id"]
        .as_u64()
        .unwrap();
    let done = crate::client::wait_job(server.addr(), job).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["images"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn extras_upscale_through_the_upscaler_or_lanczos() {
    let server = serve(Spec::default()).await;
    let upscalers = get(server.addr(), "/sdapi/v1/upscalers").await.json();
    let names: Vec<&str> = upscalers
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["None", "Lanczos", "ESRGAN_4x"]);
    let input = format!("data:image/png;base64,{}", b64(&crate::uov::png(40, 24)));
    let cases = [
        (
            json!({"image": input, "upscaler_1": "ESRGAN_4x", "upscaling_resize": 3}),
            (120, 72),
            "Resize (upscaler)",
        ),
        (
            json!({"image": input, "upscaler_1": "None", "resize_mode": 1, "upscaling_resize_w": 50, "upscaling_resize_h": 30}),
            (50, 30),
            "Resize (Lanczos)",
        ),
    ];
    for (body, size, method) in cases {
        let reply = post_json(server.addr(), "/sdapi/v1/extra-single-image", &body).await;
        let bytes = unb64(ok_json(reply)["image"].as_str().unwrap());
        let image = image::load_from_memory(&bytes).unwrap();
        assert_eq!((image.width(), image.height()), size);
        let meta = fooocus::store::embedded_text_from_bytes(&bytes)
            .unwrap()
            .metadata()
            .unwrap();
        assert_eq!(meta.input_image.unwrap().method, method);
    }
    let bad = post_json(
        server.addr(),
        "/sdapi/v1/extra-single-image",
        &json!({"image": input, "upscaler_1": "SwinIR"}),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["detail"]
        .as_str()
        .unwrap()
        .contains("`upscaler_1`"));
    let bad = post_json(
        server.addr(),
        "/sdapi/v1/extra-single-image",
        &json!({"image": "%%%"}),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["detail"].as_str().unwrap().contains("`image`"));
}

#[tokio::test]
async fn an_openai_retry_takes_the_first_try_s_job() {
    let server = serve(Spec {
        steps: Some(1),
        ..Spec::default()
    })
    .await;
    let body = json!({"prompt": "once", "n": 1, "size": "1024x1024"});
    let text = body.to_string();
    let json = ("Content-Type", "application/json");
    let first = request(
        server.addr(),
        "POST",
        "/v1/images/generations",
        &[json],
        text.as_bytes(),
    )
    .await;
    let retry = request(
        server.addr(),
        "POST",
        "/v1/images/generations",
        &[json, ("x-stainless-retry-count", "1")],
        text.as_bytes(),
    )
    .await;
    let (first, retry) = (ok_json(first), ok_json(retry));
    assert_eq!(first["data"][0]["b64_json"], retry["data"][0]["b64_json"]);
    let history = get(server.addr(), "/api/history").await.json();
    assert_eq!(
        history["days"][0]["images"].as_array().unwrap().len(),
        1,
        "the retry ran the job again"
    );
    // A new request (no retry count) is new work.
    let again = request(
        server.addr(),
        "POST",
        "/v1/images/generations",
        &[json],
        text.as_bytes(),
    )
    .await;
    ok_json(again);
    let history = get(server.addr(), "/api/history").await.json();
    assert_eq!(history["days"][0]["images"].as_array().unwrap().len(), 2);
}
