//! The plot: throughput against threads, one panel per workload, one line per peer (SVG only, so
//! no font or freetype libraries are needed).

use plotters::prelude::*;

use crate::peers::PeerId;
use crate::report::Cell;
use crate::workloads::{Workload, ALL};

fn color(peer: PeerId) -> RGBColor {
    match peer {
        PeerId::Leasehold => RGBColor(214, 39, 40),
        PeerId::LeaseholdLease => RGBColor(255, 127, 14),
        PeerId::StdMutexMap => RGBColor(140, 86, 75),
        PeerId::DashMapKeep => RGBColor(31, 119, 180),
        PeerId::DashMapRemove => RGBColor(23, 190, 207),
        PeerId::Lockable => RGBColor(148, 103, 189),
        PeerId::TokioSemaphore => RGBColor(44, 160, 44),
        PeerId::Striped => RGBColor(127, 127, 127),
        PeerId::BareMutex => RGBColor(0, 0, 0),
    }
}

/// Draws `cells` (medians) to an SVG file at `path`.
pub fn svg(path: &str, cells: &[Cell], threads: &[usize], title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1500, 950)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((2, 3));
    let n = threads.len();
    let label_threads = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            threads[i as usize].to_string()
        } else {
            String::new()
        }
    };
    for (area, w) in panels.iter().zip(ALL) {
        // L is read against leasehold's own W1: draw both.
        let mine: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.mops > 0.0)
            .filter(|c| c.w == w || (w == Workload::L && c.w == Workload::W1 && c.peer == PeerId::Leasehold))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let lo = mine.iter().map(|c| c.mops).fold(f64::INFINITY, f64::min);
        let hi = mine.iter().map(|c| c.mops).fold(0.0, f64::max);
        let y = (lo / 2.0)..(hi * 2.0);
        let x = -0.3..(n as f64 - 0.7);
        let caption = format!("{}: {}", w.name(), caption(w));
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y.log_scale())?;
        chart
            .configure_mesh()
            .x_labels(n.max(2))
            .x_label_formatter(&label_threads)
            .y_label_formatter(&|v| if *v >= 1.0 { format!("{v:.0}") } else { format!("{v:.2}") })
            .light_line_style(TRANSPARENT)
            .x_desc("threads")
            .y_desc("Mops/s (log)")
            .draw()?;
        let mut peers: Vec<PeerId> = Vec::new();
        for c in &mine {
            if !peers.contains(&c.peer) {
                peers.push(c.peer);
            }
        }
        for peer in peers {
            let pts: Vec<(f64, f64)> = threads
                .iter()
                .enumerate()
                .filter_map(|(i, &t)| {
                    mine.iter().find(|c| c.peer == peer && c.threads == t).map(|c| (i as f64, c.mops))
                })
                .collect();
            let col = color(peer);
            let width = if matches!(peer, PeerId::Leasehold | PeerId::LeaseholdLease) { 3 } else { 1 };
            chart
                .draw_series(LineSeries::new(pts.clone(), col.stroke_width(width)))?
                .label(if w == Workload::L && peer == PeerId::Leasehold { "leasehold (its W1)" } else { peer.name() })
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(width)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, col.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(("sans-serif", 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn caption(w: Workload) -> &'static str {
    match w {
        Workload::W1 => "uncontended, exclusive",
        Workload::W2 => "Zipf 0.99, 90% shared",
        Workload::W3 => "one hot key, exclusive",
        Workload::W4 => "churn, a fresh key per op",
        Workload::S => "one semaphore key, 4 permits",
        Workload::L => "W1 + 30 s lease",
    }
}
