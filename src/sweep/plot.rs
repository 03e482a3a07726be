//! sweep.png: the metric against the step size (delta_s; eps for the additive baseline; log
//! scale), one line per combination of the other axes (the metric on a log scale too when it spans decades), so that a step size's sweet spot and the effect of each other axis show at a glance.
use super::record::{Metric, Row, Status};
use super::setting::Setting;
use crate::plot::{Chart, Series};

/// The chart of the scored rows that have `metric`, and the setting (step size left out) each
/// line stands for; `additive` says which step size is on the x axis ([`Setting::step_size`]).
pub fn sweep_chart(rows: &[Row], metric: Metric, additive: bool) -> (Chart, Vec<Setting>) {
    let mut lines: Vec<Setting> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for row in rows {
        let value = match &row.status {
            Status::Scored(scores) => scores.get(metric),
            _ => None,
        };
        let Some(value) = value else {
            continue;
        };
        let key = row.setting.without_step_size();
        let i = lines.iter().position(|l| *l == key).unwrap_or_else(|| {
            lines.push(key);
            series.push(Series::default());
            lines.len() - 1
        });
        series[i]
            .points
            .push((row.setting.step_size(additive) as f64, value));
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let log_y = spans_decades(&series);
    let chart = Chart {
        series,
        log_x: true,
        log_y,
        ..Chart::default()
    };
    (chart, lines)
}

/// Whether the metric is positive throughout and spans more than a factor of 10: a step size
/// that diverges scores orders of magnitude worse, and on a linear axis would flatten the rest.
fn spans_decades(series: &[Series]) -> bool {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lo > 0.0 && hi > 10.0 * lo
}

#[cfg(test)]
mod tests {
    use super::super::best::tests::row;
    use super::*;

    #[test]
    fn the_chart_plots_the_metric_and_leaves_out_rows_without_it() {
        let rows = [row(1e-3, 10.0, Some((300.0, 0.2))), row(2e-3, 20.0, None)];
        let (chart, lines) = sweep_chart(&rows, Metric::InceptionFid, false);
        assert_eq!(lines.len(), 1);
        assert_eq!(chart.series[0].points, [(1e-3f32 as f64, 300.0)]);
        let (chart, _) = sweep_chart(&rows, Metric::Frechet, false);
        assert_eq!(
            chart.series[0].points,
            [(1e-3f32 as f64, 10.0), (2e-3f32 as f64, 20.0)]
        );
    }
}
