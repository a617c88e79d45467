//! k-diffusion sampling: sigma schedules, samplers written against a `Denoiser` trait, and seeded
//! noise streams. Knows nothing of UNets or Fooocus tricks.
