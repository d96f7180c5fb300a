//! The `veth` suite's plot: loss against offered rate, one line per tool,
//! one panel per frame size, as a self-contained SVG (written by hand: no
//! font or graphics library needed on the machine that runs the suite).

use std::fmt::Write;

const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];
const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = 340.0;
const M_LEFT: f64 = 60.0;
const M_TOP: f64 = 40.0;
const M_BOTTOM: f64 = 50.0;
const M_RIGHT: f64 = 20.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel per `frame_bytes` among `rows` (the veth suite's rows with
/// their `trials`), loss % (y, linear) against offered pps (x, log 10).
pub fn loss_svg(rows: &[serde_json::Value]) -> String {
    let mut sizes: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["frame_bytes"].as_u64())
        .collect();
    sizes.dedup();
    let mut tools: Vec<String> = Vec::new();
    for r in rows {
        if let Some(t) = r["tool_name"].as_str()
            && !tools.iter().any(|x| x == t)
        {
            tools.push(t.to_string());
        }
    }
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r["trials"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["offered_pps"].as_f64())
        .filter(|&v| v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (lx0, lx1) = (lo.log10().floor(), hi.log10().ceil());
    let legend_h = 20.0 * tools.len() as f64 + 10.0;
    let width = PANEL_W * sizes.len().max(1) as f64;
    let height = PANEL_H + legend_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (pi, size) in sizes.iter().enumerate() {
        let ox = PANEL_W * pi as f64;
        let (x0, x1) = (ox + M_LEFT, ox + PANEL_W - M_RIGHT);
        let (y0, y1) = (PANEL_H - M_BOTTOM, M_TOP);
        let px = |v: f64| x0 + (v.log10() - lx0) / (lx1 - lx0) * (x1 - x0);
        let py = |loss: f64| y0 - loss / 100.0 * (y0 - y1);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="14">loss vs offered rate, {size} B frames</text>"#,
            (x0 + x1) / 2.0
        );
        // Axes, grid and ticks.
        let _ = writeln!(
            s,
            r#"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            x1 - x0,
            y0 - y1
        );
        let mut e = lx0;
        while e <= lx1 {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powf(e);
                if v.log10() > lx1 + 1e-9 {
                    break;
                }
                let x = px(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x}" y1="{y1}" x2="{x}" y2="{y0}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                    y0 + 15.0,
                    if v >= 1e6 {
                        format!("{}M", v / 1e6)
                    } else {
                        format!("{}k", v / 1e3)
                    }
                );
            }
            e += 1.0;
        }
        for l in [0.0, 25.0, 50.0, 75.0, 100.0] {
            let y = py(l);
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{l}%</text>"##,
                x0 - 5.0,
                y + 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">offered rate (frames/s, log scale)</text>"#,
            (x0 + x1) / 2.0,
            y0 + 35.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">frames lost</text>"#,
            ox + 15.0,
            (y0 + y1) / 2.0,
            ox + 15.0,
            (y0 + y1) / 2.0
        );
        for r in rows
            .iter()
            .filter(|r| r["frame_bytes"].as_u64() == Some(*size))
        {
            let ti = tools
                .iter()
                .position(|t| r["tool_name"].as_str() == Some(t))
                .unwrap_or(0);
            let c = COLORS[ti % COLORS.len()];
            let mut pts: Vec<(f64, f64)> = r["trials"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .filter_map(|t| {
                            Some((
                                t["offered_pps"].as_f64()?,
                                t["loss_fraction"].as_f64()? * 100.0,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, l)| format!("{:.1},{:.1}", px(x), py(l)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for &(x, l) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    px(x),
                    py(l)
                );
            }
        }
    }
    for (i, t) in tools.iter().enumerate() {
        let y = PANEL_H + 10.0 + 20.0 * i as f64;
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{M_LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            M_LEFT + 30.0,
            M_LEFT + 40.0,
            y + 4.0,
            esc(t)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_one_line_per_tool_and_size() {
        let rows = vec![
            serde_json::json!({"frame_bytes": 64, "tool_name": "a<b", "trials": [
                {"offered_pps": 50000, "loss_fraction": 0.0},
                {"offered_pps": 100000, "loss_fraction": 0.5}]}),
            serde_json::json!({"frame_bytes": 1514, "tool_name": "c", "trials": [
                {"offered_pps": 50000, "loss_fraction": 0.0}]}),
        ];
        let s = super::loss_svg(&rows);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("a&lt;b"));
    }
}
