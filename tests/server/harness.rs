#![allow(dead_code)]
//! Starting a server over the tiny models in a fresh temporary folder, for the server and browser
//! test crates.

use std::net::SocketAddr;

use fooocus::config::Preset;
use fooocus::pipeline::styles::StyleLibrary;
use fooocus::runtime::Placement;
use fooocus::server::{start, Accounts, Limits, RunningServer, ServerOptions};

pub struct TestServer {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// Options for a server over the tiny models in a fresh temporary folder.
pub struct Spec {
    pub listen: &'static str,
    pub auth: Option<Accounts>,
    pub queue: usize,
    pub body_limit: usize,
    /// `/api/generate`'s (input images).
    pub image_body_limit: usize,
    /// Start with empty model folders (nothing installed yet).
    pub no_models: bool,
    /// Where missing models are downloaded from (`None`: nothing is downloaded).
    pub hub: Option<fooocus::hub::HubClient>,
    /// `--allowed-host` names.
    pub allowed_hosts: Vec<String>,
    /// Bounds on clients (tests shorten them).
    pub limits: Limits,
    /// The preset's forced step count (requests that force none run this many).
    pub steps: Option<u32>,
    /// Worker threads.
    pub workers: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            listen: "127.0.0.1:0",
            auth: None,
            queue: 32,
            body_limit: 64 * 1024,
            image_body_limit: 4 * 1024 * 1024,
            no_models: false,
            hub: None,
            allowed_hosts: Vec::new(),
            limits: Limits::default(),
            steps: None,
            workers: 1,
        }
    }
}

pub async fn serve(spec: Spec) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::tiny_config(dir.path());
    if spec.no_models {
        config.paths.checkpoints = vec![dir.path().join("checkpoints")];
        config.paths.loras = vec![dir.path().join("loras")];
        config.paths.tokenizer = dir.path().join("clip/tokenizer.json");
    }
    let styles = StyleLibrary::load(&config.paths.styles).unwrap();
    let preset = Preset {
        base_model: "sdxl_base.safetensors".into(),
        refiner_model: Some("sdxl_refiner.safetensors".into()),
        loras: vec![],
        image_number: 1,
        steps: spec.steps,
        ..Preset::default()
    };
    let server = start(ServerOptions {
        config,
        preset_name: "default".into(),
        preset,
        styles,
        listen: spec.listen.parse().unwrap(),
        auth: spec.auth.clone(),
        placements: vec![Placement::cpu(); spec.workers],
        queue_capacity: spec.queue,
        body_limit: spec.body_limit,
        image_body_limit: spec.image_body_limit,
        hub: spec.hub.clone(),
        allowed_hosts: spec.allowed_hosts.clone(),
        limits: spec.limits.clone(),
        broker: None,
    })
    .await
    .unwrap();
    TestServer { server, dir }
}
