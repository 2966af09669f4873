//! The dashboard page of an instance, `GET /dashboard/{instance_id}?token=`:
//! readable in a browser without the broker's basic auth, so a token in the
//! URL stands for it. The token is `{expiry}.{mac}`: an HMAC-SHA256 over
//! the instance id and the expiry (Unix seconds), with a key derived from
//! the broker's own password (read from the secret store at start), so it
//! opens that instance's page until it expires and nothing else. A wrong,
//! altered or expired token is a 403, before anything is looked up.
//!
//! Provision and fetch-instance answers carry the page's URL
//! (`dashboard_url`), with a token valid for [`TOKEN_SECS`]; a platform
//! that keeps the provision's URL gets a fresh one from every fetch.
//!
//! The page is plain server-rendered HTML (no script), refreshes itself
//! every [`REFRESH_SECS`], fits a phone's width, and shows the plan,
//! engine, state, endpoints, bindings, last operations, alarms, a chart
//! each of the nodes' CPU, memory and connections over the last
//! [`CHART_SECS`] (inline SVG, the alarm threshold dashed) and how the
//! data is kept; never a password.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use broker_core::broker::{Broker, CHART_SECS, DashboardView};
use broker_core::domain::{InstanceId, Timestamp, iso8601, now};
use broker_core::osb::OsbError;
use broker_core::ports::{MetricSeries, MetricUnit};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a dashboard URL opens its page: 30 days.
pub const TOKEN_SECS: i64 = 30 * 24 * 3600;

/// How often the page reloads itself.
pub const REFRESH_SECS: u32 = 30;

/// The route of the page.
pub const DASHBOARD: &str = "/dashboard/{instance_id}";

/// What signs and checks dashboard tokens. Its `Debug` shows nothing of it.
pub struct DashboardKey([u8; 32]);

impl std::fmt::Debug for DashboardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DashboardKey(..)")
    }
}

impl DashboardKey {
    /// The key of the broker whose own password is `secret`: an HMAC of a
    /// fixed label under it, so the password itself signs nothing and a
    /// token says nothing about it.
    pub fn from_secret(secret: &SecretString) -> DashboardKey {
        let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes()).expect("any key length");
        mac.update(b"osb-elasticache dashboard token key v1");
        DashboardKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, instance_id: &str, expires_at: Timestamp) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("a 32-byte key");
        mac.update(instance_id.as_bytes());
        mac.update(b"\n");
        mac.update(expires_at.to_string().as_bytes());
        mac
    }

    /// A token opening `instance_id`'s page until `expires_at`.
    pub fn token(&self, instance_id: &str, expires_at: Timestamp) -> String {
        let sig = self.mac(instance_id, expires_at).finalize().into_bytes();
        format!("{expires_at}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
    }

    /// Whether `token` opens `instance_id`'s page at `now` (compared in
    /// constant time).
    pub fn verify(&self, instance_id: &str, token: &str, now: Timestamp) -> bool {
        let Some((expiry, sig)) = token.split_once('.') else { return false };
        let Ok(expires_at) = expiry.parse::<Timestamp>() else { return false };
        let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else { return false };
        expires_at > now && self.mac(instance_id, expires_at).verify_slice(&sig).is_ok()
    }
}

/// The page's URL for a request that came with `headers`: the host the
/// platform called, over https unless it says otherwise (or calls
/// 127.0.0.1, laptop mode's only address).
pub fn dashboard_url(headers: &HeaderMap, key: &DashboardKey, instance_id: &str, now: Timestamp) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
        Some(proto) if proto == "http" || proto == "https" => proto,
        _ if host.starts_with("127.0.0.1") || host.starts_with("localhost") => "http",
        _ => "https",
    };
    let token = key.token(instance_id, now + TOKEN_SECS);
    format!("{scheme}://{host}/dashboard/{instance_id}?token={token}")
}

/// What the page's handler needs.
#[derive(Clone)]
pub struct DashboardState {
    pub broker: Arc<Broker>,
    pub key: Arc<DashboardKey>,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /dashboard/{instance_id}?token=`
pub async fn dashboard(
    State(s): State<DashboardState>,
    Path(raw): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let t = now();
    let opened = q.token.as_deref().is_some_and(|token| s.key.verify(&raw, token, t));
    let Some(id) = opened.then(|| InstanceId::parse(&raw).ok()).flatten() else {
        return page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "<p>This link is not valid, or it has expired. Fetch the service instance from your platform \
             (for instance <code>cf service NAME</code>) for a new one.</p>",
        );
    };
    match s.broker.dashboard(&id).await {
        Ok(view) => {
            let mut response = Html(render(&view, t)).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            response
        }
        Err(OsbError::NotFound(_)) => {
            page(StatusCode::NOT_FOUND, "Not found", "<p>This service instance does not exist any more.</p>")
        }
        Err(e) => {
            tracing::warn!(instance = %id, error = %e, "could not show an instance's dashboard");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "<p>The broker cannot show this page now; it reloads by itself.</p>",
            )
        }
    }
}

/// A short page with `status`.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!("{}<h1>{}</h1>{body}</main></body></html>", head(title, false), escape(title));
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn head(title: &str, refresh: bool) -> String {
    let refresh = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">")
    } else {
        String::new()
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style>{STYLE}</style></head><body><main>",
        escape(title)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
main{max-width:46rem;margin:0 auto;padding:1rem}h1{font-size:1.4rem;margin:.2rem 0}\
h2{font-size:1.05rem;margin:1.4rem 0 .4rem}section{background:#fff;border-radius:.5rem;padding:.6rem .9rem;\
box-shadow:0 1px 2px #0002}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .4rem;\
border-bottom:1px solid #e4e6eb;vertical-align:top;word-break:break-word}th{font-weight:600;width:40%}\
.state{display:inline-block;padding:.1rem .5rem;border-radius:1rem;background:#e4e6eb}\
.ok,.succeeded,.ready{background:#d3f5dd}.alarm,.failed{background:#fbd5d5}.pending,.in-progress{background:#fdf0c4}\
.muted{color:#5b6475;font-size:.9rem}code{font-size:.9rem}\
svg{display:block;width:100%;height:auto}svg text{font-size:10px;fill:#5b6475}\
.legend{margin:.2rem 0 .8rem;font-size:.9rem}.legend span{margin-right:.8rem;white-space:nowrap}";

/// HTML-escapes `s` for text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn row(out: &mut String, name: &str, value: &str) {
    out.push_str(&format!("<tr><th>{}</th><td>{value}</td></tr>", escape(name)));
}

fn badge(text: &str) -> String {
    let class = text.to_ascii_lowercase().replace([' ', '_'], "-");
    format!("<span class=\"state {}\">{}</span>", escape(&class), escape(text))
}

/// The page of `view` at time `t`.
pub fn render(view: &DashboardView, t: Timestamp) -> String {
    let mut out = head(&format!("{} {}", view.service, view.instance_id), true);
    out.push_str(&format!(
        "<h1>{} <span class=\"muted\">{}</span></h1><p>{}</p>",
        escape(&view.service),
        escape(&view.plan),
        badge(view.state.as_str())
    ));

    out.push_str("<h2>Cache</h2><section><table>");
    row(&mut out, "Instance", &format!("<code>{}</code>", escape(&view.instance_id)));
    row(&mut out, "Engine", &escape(&format!("{} {}", view.engine.as_str(), view.engine_version)));
    row(&mut out, "Plan", &escape(&view.plan));
    match &view.endpoint {
        Some(e) => {
            let tls = if e.tls { "TLS" } else { "no TLS" };
            let kind = if e.cluster_mode { ", cluster mode: use a cluster client" } else { "" };
            row(&mut out, "Endpoint", &format!("<code>{}:{}</code> ({tls}{kind})", escape(&e.host), e.port));
            if let Some(r) = &e.reader {
                row(&mut out, "Reader endpoint", &format!("<code>{}:{}</code>", escape(&r.host), r.port));
            }
            if !e.nodes.is_empty() {
                let nodes: Vec<String> =
                    e.nodes.iter().map(|n| format!("<code>{}</code>", escape(n))).collect();
                row(&mut out, "Nodes", &nodes.join("<br>"));
            }
        }
        None => row(&mut out, "Endpoint", "not made yet"),
    }
    row(&mut out, "Bindings", &view.bindings.to_string());
    out.push_str("</table></section>");

    out.push_str("<h2>Alarms</h2><section>");
    match &view.alarms {
        None => out.push_str("<p class=\"muted\">No alarms here (laptop mode keeps none).</p>"),
        Some(alarms) if alarms.is_empty() => out.push_str("<p class=\"muted\">The plan sets no alarms.</p>"),
        Some(alarms) => {
            out.push_str("<table><tr><th>Metric</th><th>Node</th><th>Above</th><th>State</th></tr>");
            for a in alarms {
                out.push_str(&format!(
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    escape(&a.metric),
                    escape(&a.node),
                    a.threshold,
                    badge(&a.state)
                ));
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</section>");

    out.push_str(&format!(
        "<h2>Last {} hours <span class=\"muted\">(UTC)</span></h2><section>",
        CHART_SECS / 3600
    ));
    charts(&mut out, view.charts.as_deref(), view.now);
    out.push_str("</section>");

    out.push_str("<h2>Last operations</h2><section>");
    if view.operations.is_empty() {
        out.push_str("<p class=\"muted\">None.</p>");
    } else {
        out.push_str("<table>");
        for op in &view.operations {
            out.push_str(&format!(
                "<tr><td>{}<br><span class=\"muted\">{}</span></td><td>{}<br>{}</td></tr>",
                escape(&op.what),
                escape(&iso8601(op.updated_at)),
                badge(op.state),
                escape(&op.description)
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");

    out.push_str("<h2>Data</h2><section><table>");
    let daily = match view.snapshot_retention_days {
        0 => "none".to_string(),
        n => format!("daily, kept {n} days"),
    };
    row(&mut out, "Snapshots", &escape(&daily));
    row(&mut out, "Final snapshot on deprovision", if view.final_snapshot { "yes" } else { "no" });
    let logs = match view.log_delivery.as_slice() {
        [] => "none".to_string(),
        logs => logs.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", "),
    };
    row(&mut out, "Logs delivered", &escape(&logs));
    out.push_str("</table></section>");
    out.push_str(&format!(
        "<p class=\"muted\">As of {}; this page reloads every {REFRESH_SECS} s.</p></main></body></html>",
        escape(&iso8601(t))
    ));
    out
}

/// Line colours of a chart's nodes, in turn.
const PALETTE: [&str; 6] = ["#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2"];

/// The chart's plot area in its viewBox (360 x 140).
const LEFT: f64 = 48.0;
const RIGHT: f64 = 352.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 116.0;

/// What a metric is about, for a chart's title.
fn topic(metric: &str) -> &'static str {
    match metric {
        "EngineCPUUtilization" | "CPUUtilization" => "CPU",
        "CurrConnections" => "Connections",
        _ => "Memory",
    }
}

/// `v` as the page shows values of `unit`.
fn amount(v: f64, unit: MetricUnit) -> String {
    match unit {
        MetricUnit::Percent if v < 10.0 => format!("{v:.2} %"),
        MetricUnit::Percent => format!("{v:.1} %"),
        MetricUnit::Count => format!("{}", v.round() as i64),
        MetricUnit::Bytes => {
            let mut v = v;
            let mut unit = 0;
            while v >= 1024.0 && unit < 3 {
                v /= 1024.0;
                unit += 1;
            }
            let name = ["B", "KiB", "MiB", "GiB"][unit];
            if unit == 0 { format!("{v:.0} {name}") } else { format!("{v:.1} {name}") }
        }
    }
}

/// The smallest of 1, 2, 2.5 and 5 times a power of ten at least `v`: the
/// top of a chart's scale.
fn scale_top(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * power).find(|top| *top >= v).unwrap_or(10.0 * power)
}

/// A chart per metric of `series` (one line per node) over the window
/// ending at `now`, each with its legend and last values.
fn charts(out: &mut String, series: Option<&[MetricSeries]>, now: Timestamp) {
    let series = match series {
        None => {
            out.push_str("<p class=\"muted\">Nothing is measured for this cache here.</p>");
            return;
        }
        Some(s) if s.iter().all(|s| s.points.is_empty()) => {
            out.push_str(
                "<p class=\"muted\">No measurements yet: the charts fill as the cache's nodes report.</p>",
            );
            return;
        }
        Some(s) => s,
    };
    let mut metrics: Vec<&str> = Vec::new();
    for s in series {
        if !metrics.contains(&s.metric.as_str()) {
            metrics.push(&s.metric);
        }
    }
    for metric in metrics {
        let lines: Vec<&MetricSeries> = series.iter().filter(|s| s.metric == metric).collect();
        chart(out, metric, &lines, now);
    }
}

fn chart(out: &mut String, metric: &str, lines: &[&MetricSeries], now: Timestamp) {
    let unit = lines[0].unit;
    let threshold = lines.iter().find_map(|s| s.threshold);
    let highest = lines.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let mut top = scale_top(highest.max(threshold.unwrap_or(0.0)) * 1.05);
    if unit == MetricUnit::Percent && top > 100.0 && highest <= 100.0 {
        top = 100.0;
    }
    let since = now - CHART_SECS;
    let x =
        |t: Timestamp| LEFT + (t - since).clamp(0, CHART_SECS) as f64 / CHART_SECS as f64 * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v / top).clamp(0.0, 1.0) * (BOTTOM - TOP);
    let title =
        format!("{} of {} node{}", topic(metric), lines.len(), if lines.len() == 1 { "" } else { "s" });
    out.push_str(&format!(
        "<h3 class=\"muted\">{} <code>{}</code></h3><svg viewBox=\"0 0 360 140\" role=\"img\" \
         aria-label=\"{} over the last {} hours\" class=\"chart\">",
        escape(topic(metric)),
        escape(metric),
        escape(&title),
        CHART_SECS / 3600
    ));
    for (v, label) in
        [(0.0, amount(0.0, unit)), (top / 2.0, amount(top / 2.0, unit)), (top, amount(top, unit))]
    {
        out.push_str(&format!(
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#e4e6eb\"/>\
             <text x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>",
            y(v),
            LEFT - 4.0,
            y(v) + 3.0,
            escape(&label)
        ));
    }
    for hours_ago in (0..=CHART_SECS / 3600).rev() {
        let t = now - hours_ago * 3600;
        let of_day = t.rem_euclid(86_400);
        let label = format!("{:02}:{:02}", of_day / 3600, of_day % 3600 / 60);
        let anchor = match hours_ago {
            0 => "end",
            h if h == CHART_SECS / 3600 => "start",
            _ => "middle",
        };
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"132\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            escape(&label)
        ));
    }
    if let Some(limit) = threshold {
        out.push_str(&format!(
            "<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#c0392b\" \
             stroke-dasharray=\"5 4\"/><text x=\"{RIGHT}\" y=\"{1:.1}\" text-anchor=\"end\" style=\"fill:#c0392b\">\
             alarm above {2}</text>",
            y(limit),
            y(limit) - 3.0,
            escape(&amount(limit, unit))
        ));
    }
    for (n, s) in lines.iter().enumerate() {
        let colour = PALETTE[n % PALETTE.len()];
        match s.points.as_slice() {
            [] => {}
            [(t, v)] => out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
                x(*t),
                y(*v)
            )),
            points => {
                let coordinates: Vec<String> =
                    points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
                out.push_str(&format!(
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" points=\"{}\"/>",
                    coordinates.join(" ")
                ));
            }
        }
    }
    out.push_str("</svg><p class=\"legend\">");
    for (n, s) in lines.iter().enumerate() {
        let last = s.points.last().map(|p| amount(p.1, unit)).unwrap_or_else(|| "no data".to_string());
        out.push_str(&format!(
            "<span><b style=\"color:{}\">&#9632;</b> <code>{}</code> {}</span>",
            PALETTE[n % PALETTE.len()],
            escape(&s.node),
            escape(&last)
        ));
    }
    out.push_str("</p>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DashboardKey {
        DashboardKey::from_secret(&SecretString::from("the-broker-password"))
    }

    #[test]
    fn a_token_opens_its_instance_until_it_expires_and_nothing_else() {
        let k = key();
        let token = k.token("i-1", 1_000);
        assert!(k.verify("i-1", &token, 999));
        assert!(!k.verify("i-1", &token, 1_000), "expired");
        assert!(!k.verify("i-2", &token, 999), "another instance");
        let other = DashboardKey::from_secret(&SecretString::from("another-password"));
        assert!(!other.verify("i-1", &token, 999), "another broker");
        let (_, sig) = token.split_once('.').unwrap();
        assert!(!k.verify("i-1", &format!("2000.{sig}"), 999), "a later expiry with the old mac");
        for bad in ["", "1000", "x.y", "1000.!!", "1000."] {
            assert!(!k.verify("i-1", bad, 999), "{bad:?}");
        }
        assert!(!format!("{k:?}").contains("the-broker-password"));
        assert!(!token.contains("the-broker-password"));
    }

    #[test]
    fn the_url_names_the_host_the_platform_called() {
        let k = key();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "abc.execute-api.eu-west-1.amazonaws.com".parse().unwrap());
        let url = dashboard_url(&headers, &k, "i-1", 100);
        assert!(
            url.starts_with("https://abc.execute-api.eu-west-1.amazonaws.com/dashboard/i-1?token="),
            "{url}"
        );
        let token = url.split("token=").nth(1).unwrap();
        assert!(k.verify("i-1", token, 100 + TOKEN_SECS - 1));
        assert!(!k.verify("i-1", token, 100 + TOKEN_SECS));
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(
            dashboard_url(&headers, &k, "i-1", 100).starts_with("http://127.0.0.1:8080/dashboard/i-1?token=")
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<b>\"a\" & 'b'</b>"), "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;");
    }

    fn series(
        metric: &str,
        unit: MetricUnit,
        node: &str,
        threshold: Option<f64>,
        points: &[(i64, f64)],
    ) -> MetricSeries {
        MetricSeries { metric: metric.into(), unit, node: node.into(), threshold, points: points.to_vec() }
    }

    #[test]
    fn a_chart_per_metric_a_line_per_node_and_the_threshold_dashed() {
        let now = 1_000_000;
        let hour = 3600;
        let cpu = |node: &str, v: f64| {
            series(
                "EngineCPUUtilization",
                MetricUnit::Percent,
                node,
                Some(80.0),
                &[(now - 2 * hour, v), (now - hour, v * 2.0), (now, v * 3.0)],
            )
        };
        let all = vec![
            cpu("g-0001-001", 5.0),
            series("CurrConnections", MetricUnit::Count, "g-0001-001", None, &[(now - 60, 7.0)]),
            cpu("<g-0001-002>", 10.0),
        ];
        let mut out = String::new();
        charts(&mut out, Some(&all), now);
        assert_eq!(out.matches("<svg").count(), 2, "one chart per metric: {out}");
        let (cpu_chart, connections_chart) =
            out.split_once("<h3").map(|(_, rest)| rest.split_at(rest.find("<h3").unwrap())).unwrap();
        assert_eq!(cpu_chart.matches("<polyline").count(), 2, "a line per node");
        // 80 % of a 0-100 scale over the plot's 106 units of height.
        let y80 = BOTTOM - 0.8 * (BOTTOM - TOP);
        assert!(
            cpu_chart.contains(&format!("class=\"threshold\" x1=\"48\" x2=\"352\" y1=\"{y80:.1}\"")),
            "{cpu_chart}"
        );
        assert!(cpu_chart.contains("alarm above 80.0 %"));
        // The first node's last point: at the right edge, 15 % up.
        assert!(cpu_chart.contains(&format!("352.0,{:.1}\"", BOTTOM - 0.15 * (BOTTOM - TOP))), "{cpu_chart}");
        assert!(
            cpu_chart.contains("&lt;g-0001-002&gt;</code> 30.0 %"),
            "escaped, with its last value: {cpu_chart}"
        );
        assert!(!cpu_chart.contains("<g-0001"));
        assert!(connections_chart.contains("<circle"), "one point is a dot: {connections_chart}");
        assert!(!connections_chart.contains("threshold"), "no threshold, no line");
        assert!(connections_chart.contains("</code> 7</span>"));

        let mut none = String::new();
        charts(&mut none, None, now);
        assert!(none.contains("Nothing is measured") && !none.contains("<svg"));
        let mut empty = String::new();
        charts(&mut empty, Some(&[series("CurrConnections", MetricUnit::Count, "n", None, &[])]), now);
        assert!(empty.contains("No measurements yet") && !empty.contains("<svg"));
    }

    #[test]
    fn scales_end_on_a_round_number_and_values_read_in_their_unit() {
        assert_eq!(scale_top(0.0), 1.0);
        assert_eq!(scale_top(0.3), 0.5);
        assert_eq!(scale_top(84.0), 100.0);
        assert_eq!(scale_top(1050.0), 2000.0);
        assert_eq!(scale_top(2.2), 2.5);
        assert_eq!(amount(4.256, MetricUnit::Percent), "4.26 %");
        assert_eq!(amount(1536.0 * 1024.0, MetricUnit::Bytes), "1.5 MiB");
        assert_eq!(amount(999.0, MetricUnit::Bytes), "999 B");
        assert_eq!(amount(41.6, MetricUnit::Count), "42");
    }
}
