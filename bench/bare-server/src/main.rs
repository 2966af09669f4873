//! bare-server PORT DIR: serves every file of DIR at GET /PATH, where the
//! file's name is the path with `/` written as `%`, with the file's bytes as
//! an `application/json` body. `scripts/bench.sh routes` fills DIR with the
//! broker's own answers, so both servers send the same bytes and the
//! difference is what the broker does per request.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: bare-server PORT DIR");
        std::process::exit(2);
    };
    let mut app = Router::new();
    for entry in std::fs::read_dir(&dir).expect("DIR is readable") {
        let entry = entry.expect("a directory entry");
        let path = entry.file_name().to_string_lossy().replace('%', "/");
        let body: &'static [u8] = Vec::leak(std::fs::read(entry.path()).expect("a readable file"));
        app = app.route(&path, get(move || async move { ([(CONTENT_TYPE, "application/json")], body) }));
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("a port")))
        .await
        .expect("the port is free");
    axum::serve(listener, app).await.expect("serving");
}
