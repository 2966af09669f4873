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
//! engine, state, endpoints, bindings, last operations, alarms and how the
//! data is kept; never a password.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use broker_core::broker::{Broker, DashboardView};
use broker_core::domain::{InstanceId, Timestamp, iso8601, now};
use broker_core::osb::OsbError;

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
.muted{color:#5b6475;font-size:.9rem}code{font-size:.9rem}";

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
}
