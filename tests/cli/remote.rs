//! The shared cache tier against real servers: nginx WebDAV and moto's S3, two cache
//! dirs standing for two machines that share one server.

use crate::support::servers::{self, shared_moto, shared_nginx, Nginx, Silent};

/// The harness itself: both servers start, take a PUT and give the bytes back.
#[test]
fn harness_servers_store_and_return_bytes() {
    let Some(nginx) = shared_nginx() else { return };
    let put = nginx
        .http("PUT", "/harness-smoke/cas/abc", &[], b"hello")
        .unwrap();
    assert!(matches!(put.status, 201 | 204), "{put:?}");
    let got = nginx
        .http("GET", "/harness-smoke/cas/abc", &[], b"")
        .unwrap();
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(
        std::fs::read(nginx.data_path("harness-smoke", "cas/abc")).unwrap(),
        b"hello"
    );
    let puts: Vec<_> = nginx
        .requests_under("harness-smoke")
        .into_iter()
        .filter(|(method, _, _)| method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    for (prefix, status) in [
        ("fail500", 500),
        ("forbid", 403),
        ("bearer", 401),
        ("basic", 401),
    ] {
        let r = nginx
            .http("GET", &format!("/{prefix}/x"), &[], b"")
            .unwrap();
        assert_eq!(r.status, status, "/{prefix}/");
    }
    let bearer = nginx
        .http(
            "PUT",
            "/bearer/harness-smoke/x",
            &[("Authorization", "Bearer tok123")],
            b"b",
        )
        .unwrap();
    assert!(matches!(bearer.status, 201 | 204), "{bearer:?}");

    let Some(moto) = shared_moto() else { return };
    moto.create_bucket("harness-smoke");
    moto.put_object("harness-smoke", "p/cas/abc", b"world");
    assert_eq!(
        moto.get_object("harness-smoke", "p/cas/abc").as_deref(),
        Some(&b"world"[..])
    );
    assert_eq!(moto.get_object("harness-smoke", "p/cas/nope"), None);
    assert_eq!(moto.list("harness-smoke"), vec!["p/cas/abc".to_string()]);
}

/// A private nginx can be stopped mid-test; https answers with the CA's certificate.
#[test]
fn harness_private_nginx_stops_and_speaks_https() {
    let Some(nginx) = Nginx::start() else { return };
    let ca = nginx.ca_file();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .args(["-o", "/dev/null", "-w", "%{http_code}", "-T", "-"])
        .arg(format!("{}obj", nginx.https_url("tls")))
        .stdin(std::process::Stdio::null())
        .output();
    if let Ok(out) = out {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "201", "{out:?}");
    }
    nginx.stop();
    assert!(nginx.http("GET", "/", &[], b"").is_err());
    let refusing = servers::refusing_url();
    assert!(std::net::TcpStream::connect(
        refusing.trim_start_matches("http://").trim_end_matches('/')
    )
    .is_err());
    let silent = Silent::start();
    let _held = std::net::TcpStream::connect(("127.0.0.1", silent.port())).unwrap();
    let start = std::time::Instant::now();
    while silent.connections() < 1 && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(silent.connections(), 1);
}
