//! sweep.png: the metric against delta_s (log scale), one line per combination of the other
//! axes, so that a step size's sweet spot and the effect of each other axis show at a glance.
use super::record::{Metric, Row, Status};
use super::setting::Setting;
use crate::plot::{Chart, Series};

/// The chart of the scored rows, and the setting (delta_s left out) each line stands for.
pub fn sweep_chart(rows: &[Row], metric: Metric) -> (Chart, Vec<Setting>) {
    let mut lines: Vec<Setting> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for row in rows {
        let Status::Scored(scores) = &row.status else {
            continue;
        };
        let key = row.setting.without_delta_s();
        let i = lines.iter().position(|l| *l == key).unwrap_or_else(|| {
            lines.push(key);
            series.push(Series::default());
            lines.len() - 1
        });
        series[i]
            .points
            .push((row.setting.delta_s as f64, scores.get(metric)));
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let chart = Chart {
        series,
        log_x: true,
        ..Chart::default()
    };
    (chart, lines)
}
