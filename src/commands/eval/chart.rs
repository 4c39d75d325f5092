//! A PNG bar chart of an eval report (drawing only; must not compute metrics): one group per metric, one bar per mode, values on the
//! bars, a legend. Drawn on an RGB buffer with the 8×8 bitmap font of `font8x8` (no system fonts
//! needed), encoded with `png`.

use std::path::Path;

use anyhow::Context;
use font8x8::UnicodeFonts;

use super::Report;

const PALETTE: [[u8; 3]; 10] = [
    [76, 114, 176],
    [221, 132, 82],
    [85, 168, 104],
    [196, 78, 82],
    [129, 114, 179],
    [147, 120, 96],
    [218, 139, 195],
    [140, 140, 140],
    [204, 185, 116],
    [100, 181, 205],
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas { w, h, px: vec![255; w * h * 3] }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..(y + h).min(self.h) {
            for xx in x..(x + w).min(self.w) {
                let i = (yy * self.w + xx) * 3;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    /// Text at (x, y), each font pixel drawn as a `scale`×`scale` square.
    fn text(&mut self, x: usize, y: usize, s: &str, scale: usize, c: [u8; 3]) {
        for (n, ch) in s.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(x + (n * 8 + col) * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    fn text_width(s: &str, scale: usize) -> usize {
        s.chars().count() * 8 * scale
    }
}

/// Where each legend entry goes: (x, line), wrapping before `max_x`.
fn legend_layout(report: &Report, left: usize, max_x: usize) -> Vec<(usize, usize)> {
    let (mut x, mut line) = (left, 0);
    let mut out = Vec::new();
    for row in &report.rows {
        let width = 22 + Canvas::text_width(&row.mode, 1) + 28;
        if x > left && x + width > max_x {
            (x, line) = (left, line + 1);
        }
        out.push((x, line));
        x += width;
    }
    out
}

/// Draws the chart into `path`.
pub fn bar_chart(report: &Report, path: &Path) -> anyhow::Result<()> {
    let metrics = ["nDCG@10", "Recall@100", "MRR@10"];
    let (left, right, top) = (70usize, 20usize, 70usize);
    // wide enough for a readable value on every bar (compare reports carry many rows)
    let w = 960usize.max(left + right + report.rows.len() * metrics.len() * 60);
    let legend = legend_layout(report, left, w - right);
    let legend_rows = legend.last().map_or(1, |(_, row)| row + 1);
    let bottom = 86 + legend_rows * 24;
    let h = 430 + legend_rows * 24;
    let mut c = Canvas::new(w, h);
    let black = [30, 30, 30];
    let grey = [225, 225, 225];
    let title = format!("{} / {}: {} docs, {} queries", report.dataset, report.split, report.documents, report.queries);
    c.text((w.saturating_sub(Canvas::text_width(&title, 2))) / 2, 20, &title, 2, black);
    let plot_h = h - top - bottom;
    let plot_w = w - left - right;
    for tick in 0..=5 {
        let v = tick as f64 / 5.0;
        let y = top + plot_h - (v * plot_h as f64) as usize;
        c.rect(left, y, plot_w, 1, grey);
        c.text(left - 44, y.saturating_sub(4), &format!("{v:.1}"), 1, black);
    }
    let modes = report.rows.len().max(1);
    let group_w = plot_w / metrics.len();
    let bar_w = (group_w * 3 / 4) / modes;
    for (g, name) in metrics.iter().enumerate() {
        let gx = left + g * group_w + group_w / 8;
        for (m, row) in report.rows.iter().enumerate() {
            let v = match g {
                0 => row.scores.ndcg_at_10,
                1 => row.scores.recall_at_100,
                _ => row.scores.mrr_at_10,
            }
            .clamp(0.0, 1.0);
            let bh = (v * plot_h as f64) as usize;
            let x = gx + m * bar_w;
            c.rect(x + 1, top + plot_h - bh, bar_w.saturating_sub(2), bh, PALETTE[m % PALETTE.len()]);
            let label = format!("{v:.3}");
            let lx = x + bar_w / 2 - Canvas::text_width(&label, 1).min(bar_w) / 2;
            c.text(lx, (top + plot_h - bh).saturating_sub(12), &label, 1, black);
        }
        let lx = left + g * group_w + (group_w.saturating_sub(Canvas::text_width(name, 2))) / 2;
        c.text(lx, top + plot_h + 12, name, 2, black);
    }
    c.rect(left, top + plot_h, plot_w, 2, black);
    for (m, (x, line)) in legend.iter().enumerate() {
        let y = top + plot_h + 44 + line * 24;
        c.rect(*x, y, 16, 16, PALETTE[m % PALETTE.len()]);
        c.text(x + 22, y + 4, &report.rows[m].mode, 1, black);
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&c.px)?;
    Ok(())
}
