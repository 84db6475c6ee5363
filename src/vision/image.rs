//! Frames as pixels: pure-Rust JPEG decoding with size limits, the detector's letterboxed
//! input, the similarity warp that cuts an aligned face chip, and the blur measure.

use super::VisionError;

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// Smallest width and height decoded.
const MIN_SIDE: usize = 16;

/// Decodes a JPEG, refusing empty input, images above `max_pixels` and below 16x16 before any
/// pixel memory is allocated.
pub fn decode(jpeg: &[u8], max_pixels: u64) -> Result<Rgb, VisionError> {
    use zune_jpeg::zune_core::{colorspace::ColorSpace, options::DecoderOptions};
    if jpeg.is_empty() {
        return Err(VisionError::Image("empty image (0 bytes)".into()));
    }
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(jpeg, options);
    decoder.decode_headers().map_err(|e| VisionError::Image(format!("not a decodable JPEG ({} bytes): {e:?}", jpeg.len())))?;
    let (width, height) = decoder.dimensions().ok_or_else(|| VisionError::Image("JPEG without dimensions".into()))?;
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(VisionError::Image(format!(
            "image is {width}x{height} ({:.1} megapixels), above the limit of {:.1}",
            pixels as f64 / 1e6,
            max_pixels as f64 / 1e6
        )));
    }
    if width == 0 || height == 0 {
        return Err(VisionError::Image(format!("image has no pixels ({width}x{height})")));
    }
    // zune-jpeg 0.4 indexes out of bounds (a panic: the worker aborts) converting a frame
    // narrower than 16 px whose luma is sampled 3 or 4 times across (found by fuzzing); no frame
    // that small shows a face.
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(VisionError::Image(format!("image is {width}x{height}, smaller than {MIN_SIDE}x{MIN_SIDE}")));
    }
    sampling(jpeg).map_err(VisionError::Image)?;
    // The decoder fills a cut-off scan with grey instead of failing; a camera frame cut off
    // in transit must not pass for a picture of the door.
    if truncated(jpeg) {
        return Err(VisionError::Image(format!(
            "truncated JPEG ({width}x{height}, {} bytes, no end of image after the last scan)",
            jpeg.len()
        )));
    }
    let data = decoder.decode().map_err(|e| VisionError::Image(format!("corrupt JPEG ({width}x{height}, {} bytes): {e:?}", jpeg.len())))?;
    if data.len() != width * height * 3 {
        return Err(VisionError::Image(format!("decoder returned {} bytes for {width}x{height} RGB", data.len())));
    }
    Ok(Rgb { width, height, data })
}

/// True when the last end-of-image marker comes before the last start of scan (an EXIF
/// thumbnail has its own EOI early in the file; entropy-coded data never contains FF D9).
/// Checks the frame header's sampling factors are a camera's: luma sampled 1 or 2 times
/// each way, every chroma component once (4:4:4, 4:2:2, 4:4:0, 4:2:0) or grey. zune-jpeg 0.4
/// panics in its upsampler on chroma sampled more often than luma (found by fuzzing), and the
/// worker would abort on every such frame.
fn sampling(jpeg: &[u8]) -> Result<(), String> {
    let mut at = 2;
    while let (Some(&0xFF), Some(&marker)) = (jpeg.get(at), jpeg.get(at + 1)) {
        if marker == 0xFF || marker == 0x01 || (0xD0..=0xD8).contains(&marker) {
            at += if marker == 0xFF { 1 } else { 2 };
            continue;
        }
        let len = usize::from(u16::from_be_bytes([*jpeg.get(at + 2).unwrap_or(&0), *jpeg.get(at + 3).unwrap_or(&0)]));
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            // SOFn: precision, height, width, component count, then (id, H<<4|V, table) each.
            let segment = jpeg.get(at + 4..at + 2 + len).ok_or("the frame header is cut short")?;
            let count = usize::from(*segment.get(5).ok_or("the frame header is cut short")?);
            for k in 0..count {
                let hv = *segment.get(7 + 3 * k).ok_or("the frame header is cut short")?;
                let (h, v) = (hv >> 4, hv & 15);
                let ok = if k == 0 { (1..=2).contains(&h) && (1..=2).contains(&v) } else { h == 1 && v == 1 };
                if !ok {
                    return Err(format!("component {} is sampled {h}x{v}: not a camera's 4:4:4, 4:2:2 or 4:2:0", k + 1));
                }
            }
            return Ok(());
        }
        at += 2 + len;
    }
    // No frame header before the data: the decoder reports what is wrong.
    Ok(())
}

fn truncated(jpeg: &[u8]) -> bool {
    let last = |marker: u8| jpeg.windows(2).rposition(|w| w[0] == 0xFF && w[1] == marker);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi < sos,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// Where a letterboxed square input sits in the source image.
#[derive(Debug, Clone, Copy)]
pub struct Letterbox {
    /// Input pixels per source pixel.
    pub scale: f32,
    /// Left padding in input pixels.
    pub pad_x: f32,
    /// Top padding in input pixels.
    pub pad_y: f32,
}

impl Letterbox {
    /// Maps a point of the input square back to source pixels.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        ((x - self.pad_x) / self.scale, (y - self.pad_y) / self.scale)
    }
}

/// Scales the image into a `size`×`size` NCHW tensor (RGB in -1..1), aspect kept, centred
/// on black; each input pixel averages the source pixels it covers (no aliasing).
pub fn letterbox(img: &Rgb, size: usize) -> (Vec<f32>, Letterbox) {
    let scale = size as f32 / img.width.max(img.height) as f32;
    let (w, h) =
        (((img.width as f32 * scale).round() as usize).clamp(1, size), ((img.height as f32 * scale).round() as usize).clamp(1, size));
    let (pad_x, pad_y) = ((size - w) / 2, (size - h) / 2);
    let plane = size * size;
    // Black (0) maps to -1.
    let mut out = vec![-1.0f32; 3 * plane];
    let (sx, sy) = (img.width as f32 / w as f32, img.height as f32 / h as f32);
    for oy in 0..h {
        let y0 = (oy as f32 * sy) as usize;
        let y1 = (((oy + 1) as f32 * sy) as usize).clamp(y0 + 1, img.height);
        for ox in 0..w {
            let x0 = (ox as f32 * sx) as usize;
            let x1 = (((ox + 1) as f32 * sx) as usize).clamp(x0 + 1, img.width);
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = &img.data[(y * img.width + x0) * 3..(y * img.width + x1) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as f32;
            let at = (oy + pad_y) * size + ox + pad_x;
            for c in 0..3 {
                out[c * plane + at] = sum[c] as f32 / n / 127.5 - 1.0;
            }
        }
    }
    (out, Letterbox { scale, pad_x: pad_x as f32, pad_y: pad_y as f32 })
}

/// A similarity transform (rotation, uniform scale, translation) from chip to source pixels:
/// `src = [a -b; b a] * chip + [tx ty]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    a: f32,
    b: f32,
    tx: f32,
    ty: f32,
}

impl Similarity {
    /// Least-squares similarity mapping `from` points onto `to` points (Umeyama, no reflection).
    pub fn fit(from: &[(f32, f32)], to: &[(f32, f32)]) -> Similarity {
        let n = from.len().min(to.len()).max(1) as f32;
        let mean = |p: &[(f32, f32)]| p.iter().fold((0.0, 0.0), |acc, q| (acc.0 + q.0 / n, acc.1 + q.1 / n));
        let (fm, tm) = (mean(from), mean(to));
        let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
        for (f, t) in from.iter().zip(to) {
            let (fx, fy, tx, ty) = (f.0 - fm.0, f.1 - fm.1, t.0 - tm.0, t.1 - tm.1);
            dot += fx * tx + fy * ty;
            cross += fx * ty - fy * tx;
            norm += fx * fx + fy * fy;
        }
        let (a, b) = if norm > 0.0 { (dot / norm, cross / norm) } else { (1.0, 0.0) };
        Similarity { a, b, tx: tm.0 - (a * fm.0 - b * fm.1), ty: tm.1 - (b * fm.0 + a * fm.1) }
    }

    /// Applies the transform to a point.
    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (self.a * x - self.b * y + self.tx, self.b * x + self.a * y + self.ty)
    }

    /// Source pixels per chip pixel.
    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }
}

/// Cuts a `size`×`size` chip through `chip_to_source` with bilinear sampling; returns NCHW
/// RGB 0..255 floats and the chip's grey levels (for the blur gate). Outside the source is black.
pub fn warp(img: &Rgb, chip_to_source: &Similarity, size: usize) -> (Vec<f32>, Vec<f32>) {
    let plane = size * size;
    let mut out = vec![0.0f32; 3 * plane];
    let mut grey = vec![0.0f32; plane];
    let (w, h) = (img.width as isize, img.height as isize);
    let px = |x: isize, y: isize, c: usize| -> f32 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            f32::from(img.data[((y * w + x) * 3) as usize + c])
        }
    };
    for cy in 0..size {
        for cx in 0..size {
            let (sx, sy) = chip_to_source.apply(cx as f32 + 0.5, cy as f32 + 0.5);
            let (sx, sy) = (sx - 0.5, sy - 0.5);
            let (x0, y0) = (sx.floor() as isize, sy.floor() as isize);
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let at = cy * size + cx;
            let mut g = 0.0;
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - fx) + px(x0 + 1, y0, c) * fx;
                let bottom = px(x0, y0 + 1, c) * (1.0 - fx) + px(x0 + 1, y0 + 1, c) * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                out[c * plane + at] = v;
                g += v * [0.299, 0.587, 0.114][c];
            }
            grey[at] = g;
        }
    }
    (out, grey)
}

/// Variance of the 4-neighbour Laplacian over a square grey image: low means blurred.
pub fn sharpness(grey: &[f32], size: usize) -> f32 {
    if size < 3 {
        return 0.0;
    }
    let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..size - 1 {
        for x in 1..size - 1 {
            let c = grey[y * size + x];
            let l = grey[(y - 1) * size + x] + grey[(y + 1) * size + x] + grey[y * size + x - 1] + grey[y * size + x + 1] - 4.0 * c;
            sum += f64::from(l);
            sq += f64::from(l) * f64::from(l);
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sq / n - mean * mean) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_fit_recovers_a_rotation_and_scale() {
        let truth = Similarity { a: 2.0 * 0.5f32.cos(), b: 2.0 * 0.5f32.sin(), tx: 10.0, ty: -3.0 };
        let from = [(0.0, 0.0), (10.0, 0.0), (5.0, 8.0)];
        let to: Vec<_> = from.iter().map(|p| truth.apply(p.0, p.1)).collect();
        let fit = Similarity::fit(&from, &to);
        for p in from {
            let (a, b) = (fit.apply(p.0, p.1), truth.apply(p.0, p.1));
            assert!((a.0 - b.0).abs() < 1e-3 && (a.1 - b.1).abs() < 1e-3);
        }
        assert!((fit.scale() - 2.0).abs() < 1e-4);
    }

    #[test]
    fn letterbox_averages_and_pads() {
        let img = Rgb { width: 4, height: 2, data: [[255u8, 0, 0], [255, 0, 0], [0, 0, 255], [0, 0, 255]].repeat(2).concat() };
        let (t, lb) = letterbox(&img, 4);
        assert_eq!((lb.scale, lb.pad_x, lb.pad_y), (1.0, 0.0, 1.0));
        assert_eq!(t[0], -1.0, "top row is padding");
        assert_eq!(t[4], 1.0, "red channel of the first image pixel");
        assert_eq!(t[2 * 16 + 4 + 3], 1.0, "blue channel of the last image pixel");
        assert_eq!(lb.to_source(2.0, 2.0), (2.0, 1.0));
    }

    #[test]
    fn sharpness_tells_edges_from_flat() {
        let flat = vec![100.0; 64];
        let mut edges = flat.clone();
        for (i, v) in edges.iter_mut().enumerate() {
            *v = if (i / 8 + i % 8) % 2 == 0 { 0.0 } else { 255.0 };
        }
        assert_eq!(sharpness(&flat, 8), 0.0);
        assert!(sharpness(&edges, 8) > 1000.0);
    }

    #[test]
    fn bad_jpegs_are_errors_with_reasons() {
        let e = decode(&[], 1_000_000).unwrap_err().to_string();
        assert!(e.contains("0 bytes"), "{e}");
        let e = decode(b"\xff\xd8\xff\xe0 definitely not a jpeg", 1_000_000).unwrap_err().to_string();
        assert!(e.contains("JPEG"), "{e}");
        assert!(truncated(b"\xff\xd8 thumbnail \xff\xd9 \xff\xda scan cut"));
        assert!(!truncated(b"\xff\xd8 \xff\xda scan \xff\xd9"));
    }

    /// Found by fuzzing (fuzz/, jpeg_frame): chroma sampled 1x4 under luma 2x2. zune-jpeg
    /// 0.4.21 panicked in its vertical upsampler (assertion in upsampler/scalar.rs).
    #[test]
    fn chroma_sampled_more_than_luma_is_refused_not_a_panic() {
        const CRASH: &[u8] = &[
            0xff, 0xd8, 0xff, 0x30, 0x00, 0x10, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0xff,
            0xdb, 0x00, 0x43, 0x00, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0xff, 0xdb, 0x00, 0x43, 0x01, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0xff, 0xc2, 0x00, 0x11, 0x08, 0x30, 0x30, 0x00, 0x30, 0x03,
            0x01, 0x22, 0x00, 0x02, 0x14, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x00, 0x1a, 0x00, 0x00, 0x02, 0x03, 0x01, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 0x04, 0x05, 0x02, 0x06, 0xff, 0xc4, 0x00, 0x18, 0x01,
            0x00, 0x03, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x00, 0x04,
            0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x10, 0x03, 0x10, 0x30, 0x00, 0x30, 0xff, 0xd9,
        ];
        let e = decode(CRASH, 1_000_000).unwrap_err().to_string();
        assert!(e.contains("component 2 is sampled 1x4"), "{e}");
    }

    /// Found by fuzzing (fuzz/, jpeg_frame): 7 px wide, luma sampled 4x2, chroma 1x1. zune-jpeg
    /// 0.4.21 panicked converting its colours (slice index out of range in worker.rs).
    #[test]
    fn a_frame_narrower_than_16_px_is_refused_not_a_panic() {
        const CRASH: [u8; 324] = [
            0xff, 0xd8, 0xff, 0x30, 0x00, 0x10, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0xff,
            0xdb, 0x00, 0x43, 0x00, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0xff, 0xdb, 0x00, 0x43, 0x01, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x30, 0x30, 0x00, 0x07, 0x03,
            0x01, 0x42, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x00, 0x1b, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x04, 0x05, 0x06, 0x01, 0x07, 0xff, 0xc4, 0x00, 0x2c,
            0x10, 0x00, 0x02, 0x01, 0x03, 0x02, 0x03, 0x07, 0x05, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0xff, 0xc4, 0x00, 0x18, 0x01, 0x00, 0x03, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x03, 0x04, 0x01, 0x00, 0xff, 0xc4, 0x00, 0x1c, 0x11, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00,
            0x02, 0x11, 0x03, 0x01, 0x30, 0x30, 0x30, 0xff, 0xd9,
        ];
        let e = decode(&CRASH, 1_000_000).unwrap_err().to_string();
        assert!(e.contains("smaller than 16x16"), "{e}");
    }
}
