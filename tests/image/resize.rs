//! Pillow's Lanczos to the byte, and Fooocus' size rules, on the fixture's images.

use fooocus::imaging::lanczos;

use super::fixture;

fn png(name: &str) -> image::RgbImage {
    image::open(fixture(name)).unwrap().to_rgb8()
}

fn assert_same(what: &str, ours: &image::RgbImage, reference: &image::RgbImage) {
    assert_eq!(ours.dimensions(), reference.dimensions(), "{what}: size");
    let differing = ours
        .as_raw()
        .iter()
        .zip(reference.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "{what}: {differing} values differ from Pillow's"
    );
}

#[test]
fn lanczos_equals_pillow_enlarging() {
    let reference = png("vary_resized.png");
    let ours = lanczos(
        &png("vary_input.png"),
        reference.width(),
        reference.height(),
    );
    assert_same("vary input", &ours, &reference);
    let reference = png("upscale_resized.png");
    let ours = lanczos(
        &png("upscale_sr.png"),
        reference.width(),
        reference.height(),
    );
    assert_same("upscaler output", &ours, &reference);
}
