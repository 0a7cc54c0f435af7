//! Loss curves as a PNG: one panel per quantity, smoothed over a moving window.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::{Objective, StepStats};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Moving average over `window` points, so noisy per-batch losses show their trend.
fn smooth(values: &[f32], window: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    let mut sum = 0f64;
    for (i, v) in values.iter().enumerate() {
        sum += *v as f64;
        if i >= window {
            sum -= values[i - window] as f64;
        }
        out.push((sum / (i + 1).min(window) as f64) as f32);
    }
    out
}

/// Draws the training curves of `history` into `path`.
pub fn loss_curves(history: &[StepStats], objective: Objective, title: &str, path: &Path) -> Result<(), String> {
    // Registering twice is harmless; the font is needed before any text is drawn.
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let mut panels: Vec<(&str, Vec<f32>)> = vec![("total loss", history.iter().map(|s| s.loss).collect())];
    match objective {
        Objective::Q => {
            panels.push((
                "TD error (binary cross-entropy to the target, mean over dimensions)",
                history.iter().map(|s| s.main).collect(),
            ));
            panels.push((
                "conservative term (-log(1 - Q) over the bins not taken)",
                history.iter().map(|s| s.conservative).collect(),
            ));
            panels.push(("mean Q(data) and mean target", history.iter().map(|s| s.q_data).collect()));
            panels.push((
                "self-imitation (cross-entropy of successful steps' bins under softmax(Q logits))",
                history.iter().map(|s| s.imitation).collect(),
            ));
        }
        Objective::Iql => {
            panels.push((
                "TD error (binary cross-entropy to the expectile target, mean over dimensions)",
                history.iter().map(|s| s.main).collect(),
            ));
            panels.push(("mean Q(data) and mean target", history.iter().map(|s| s.q_data).collect()));
        }
        Objective::Bc => panels.push(("cross-entropy (sum over dimensions)", history.iter().map(|s| s.main).collect())),
    }
    if history.iter().any(|s| s.behaviour != 0.0) {
        panels.push((
            "behaviour head (cross-entropy of the data bins, mean over dimensions)",
            history.iter().map(|s| s.behaviour).collect(),
        ));
    }
    panels.push(("load-balancing loss", history.iter().map(|s| s.balance).collect()));
    let window = (history.len() / 50).clamp(1, 100);
    let root = BitMapBackend::new(path, (1000, 280 * panels.len() as u32)).into_drawing_area();
    let fail = |e: String| format!("cannot draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| fail(e.to_string()))?;
    let areas = root.split_evenly((panels.len(), 1));
    let steps: Vec<f32> = history.iter().map(|s| s.step as f32).collect();
    let last_step = steps.last().copied().unwrap_or(1.0).max(1.0);
    for ((name, raw), area) in panels.iter().zip(areas.iter()) {
        let mut series = vec![(smooth(raw, window), BLUE)];
        if name.starts_with("mean Q") {
            let targets: Vec<f32> = history.iter().map(|s| s.q_target).collect();
            series.push((smooth(&targets, window), RED));
        }
        let finite = series.iter().flat_map(|(v, _)| v.iter()).filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0), lo.max(0.0) + 1.0) };
        let pad = (hi - lo) * 0.05;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{name} (moving average of {window})"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0f32..last_step, (lo - pad)..(hi + pad))
            .map_err(|e| fail(e.to_string()))?;
        chart.configure_mesh().x_desc("step").label_style(("sans-serif", 12)).draw().map_err(|e| fail(e.to_string()))?;
        for (values, colour) in series {
            let points = steps.iter().copied().zip(values).filter(|(_, v)| v.is_finite());
            chart.draw_series(LineSeries::new(points, colour.stroke_width(2))).map_err(|e| fail(e.to_string()))?;
        }
    }
    root.present().map_err(|e| fail(e.to_string()))
}

/// Draws the Q-learning diagnostics of `history` into `path`: the mean target of every action
/// dimension over time, and the share of greedy actions that fall outside the data's bins.
pub fn diagnostics(history: &[StepStats], names: &[String], title: &str, path: &Path) -> Result<(), String> {
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let window = (history.len() / 50).clamp(1, 100);
    let fail = |e: String| format!("cannot draw {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| fail(e.to_string()))?;
    let (top, bottom) = root.split_vertically(440);
    let steps: Vec<f32> = history.iter().map(|s| s.step as f32).collect();
    let last_step = steps.last().copied().unwrap_or(1.0).max(1.0);

    let mut chart = ChartBuilder::on(&top)
        .caption(format!("mean target per action dimension (moving average of {window})"), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(50)
        .build_cartesian_2d(0f32..last_step, 0f32..1.05f32)
        .map_err(|e| fail(e.to_string()))?;
    chart.configure_mesh().x_desc("step").label_style(("sans-serif", 12)).draw().map_err(|e| fail(e.to_string()))?;
    for (d, name) in names.iter().enumerate() {
        let values: Vec<f32> = history.iter().map(|s| s.target_per_dim.get(d).copied().unwrap_or(f32::NAN)).collect();
        if values.iter().all(|v| v.is_nan()) {
            continue;
        }
        let colour = Palette99::pick(d).to_rgba();
        let points = steps.iter().copied().zip(smooth(&values, window)).filter(|(_, v)| v.is_finite());
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(|e| fail(e.to_string()))?;

    let outside: Vec<f32> = history.iter().map(|s| s.greedy_outside).collect();
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("share of greedy bins outside the data's supported bins (moving average of {window})"),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(50)
        .build_cartesian_2d(0f32..last_step, 0f32..1.0f32)
        .map_err(|e| fail(e.to_string()))?;
    chart.configure_mesh().x_desc("step").label_style(("sans-serif", 12)).draw().map_err(|e| fail(e.to_string()))?;
    let points = steps.iter().copied().zip(smooth(&outside, window)).filter(|(_, v)| v.is_finite());
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2))).map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}
